"""Test keys for every provider scheme, made when the tests run (never committed).

`provider_setup` generates a `ProviderKeys` per gateway source of the shipped
configuration (HMAC secrets, RSA pairs standing in for WeChat Pay's platform key and
Alipay's key, a test CA and a PayPal signing certificate it issued), writes the public
halves as PEM files in `directory` and returns the environment that hands them to the
gateway (`ORDERGUARD__GATEWAY__SOURCES__...`).
"""

from __future__ import annotations

from pathlib import Path

from schemas.provider_requests import ProviderKeys, gateway_keys
from tests.helpers import settings_of


def provider_setup(
    directory: Path, sources: list[str] | None = None, pinned: bool = True
) -> tuple[dict[str, ProviderKeys], dict[str, str]]:
    shipped = settings_of({}).gateway.sources
    names = sources if sources is not None else list(shipped)
    keys, files, env = gateway_keys({n: shipped[n] for n in names}, str(directory), pinned)
    for path, data in files.items():
        Path(path).write_bytes(data)
    return keys, env
