"""What one core spends verifying each provider's signature (no I/O, no gateway).

    python -m benchmarks.signature_bench [--n N]

RSA-2048 verification (public exponent 65537) is far costlier than HMAC, so before the
RSA schemes are wired into the gateway this says how many verifications per second one
core does, per scheme, with freshly generated keys and small realistic bodies.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict

from schemas.provider_signatures import (
    AlipayKey,
    PayPalKey,
    UrlBodyKey,
    WechatPayKeys,
    encrypt_wechatpay_resource,
    sign_alipay_rsa2,
    sign_hmac_url_body,
    sign_paypal,
    sign_wechatpay_v3,
    verify_alipay_rsa2,
    verify_hmac_url_body,
    verify_paypal,
    verify_wechatpay_v3,
)

NOW = 1_772_438_400.0


def _pinned_certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    at = datetime.fromtimestamp(NOW, UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(at - timedelta(days=1))
        .not_valid_after(at + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def cases() -> dict[str, Callable[[], object]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    api_v3 = b"0123456789abcdef0123456789ABCDEF"
    plain = {"out_trade_no": "TB2026012700123", "trade_state": "SUCCESS", "amount": {"total": 1}}
    resource = encrypt_wechatpay_resource(plain, api_v3, nonce="fdasflkja484")
    wechat_body = orjson.dumps(
        {"id": "EV-1", "event_type": "TRANSACTION.SUCCESS", "resource": resource}
    )
    wechat_keys = WechatPayKeys(platform_keys={"S1": key.public_key()}, api_v3_key=api_v3)
    wechat_headers = CIMultiDict(sign_wechatpay_v3(wechat_body, key, "S1", "nonce-1", NOW))
    form = {
        "notify_id": "ac05099524730693a8b330c5ecf72da9786",
        "out_trade_no": "TB2026012700123",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "19.99",
        "charset": "utf-8",
    }
    alipay_body = sign_alipay_rsa2(form, key)
    paypal_body = b'{"id":"WH-1","event_type":"PAYMENT.CAPTURE.COMPLETED","resource":{}}'
    paypal_key = PayPalKey(webhook_id="WH1", certificate=_pinned_certificate(key))
    paypal_headers = CIMultiDict(sign_paypal(paypal_body, key, "WH1", "t-1", NOW))
    shopee = UrlBodyKey(secret=b"shopee-partner-key", url="https://shop.example.com/hooks/shopee")
    shopee_headers = CIMultiDict(sign_hmac_url_body(paypal_body, shopee))
    return {
        "wechatpay_v3 (RSA + AES-GCM)": lambda: verify_wechatpay_v3(
            wechat_body, wechat_headers, wechat_keys, NOW
        ),
        "alipay_rsa2 (form + RSA)": lambda: verify_alipay_rsa2(
            alipay_body, CIMultiDict(), AlipayKey(key.public_key()), NOW
        ),
        "paypal (RSA, pinned cert)": lambda: verify_paypal(
            paypal_body, paypal_headers, paypal_key, NOW
        ),
        "hmac_url_body (HMAC)": lambda: verify_hmac_url_body(
            paypal_body, shopee_headers, shopee, NOW
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="verifications per scheme")
    n = parser.parse_args().n
    for name, verify in cases().items():
        start = time.perf_counter()
        for _ in range(n):
            verify()
        each = (time.perf_counter() - start) / n
        print(f"{name:30} {each * 1e6:7.1f} µs each  {1 / each:>10,.0f}/s on one core")


if __name__ == "__main__":
    main()
