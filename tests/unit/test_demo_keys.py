"""`orderguard demo --gateway`'s provider keys: made at start, only public halves on disk,
in a private directory the gateway's environment names."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from dataflows.demo_gateway import provider_keys
from schemas.config import load_settings


def test_demo_keys_put_only_public_halves_in_a_private_directory() -> None:
    settings = load_settings()
    keys, key_dir, env = provider_keys(settings)
    try:
        assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
        webhooks = {n for n in settings.gateway.sources if n in settings.sources}
        assert set(keys) == webhooks
        files = list(key_dir.iterdir())
        assert {"wechatpay", "alipay", "paypal"} <= {f.name.split("-")[0] for f in files}
        shared = [k.secret for k in keys.values() if k.secret is not None]
        for f in files:
            text = f.read_bytes()
            assert b"PRIVATE KEY" not in text and b"BEGIN" in text
            assert not any(s in text for s in shared)
        named = [v for k, v in env.items() if "__AUTH__" in k and not k.endswith("WEBHOOK_ID")]
        assert all(str(key_dir) in v for v in named) and named
        secrets = {k: v for k, v in env.items() if k.endswith("__SECRET")}
        assert {k.split("__")[3].lower() for k in secrets} == {
            n for n, k in keys.items() if k.secret is not None
        }
    finally:
        shutil.rmtree(key_dir)
    assert not Path(key_dir).exists()
