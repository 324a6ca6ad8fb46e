"""Providers' own signatures: what each `verify_*` accepts is exactly what its provider's
`sign_*` produces, and nothing else.

Every key is generated here (RSA pairs stand in for WeChat Pay's platform key, Alipay's
key and PayPal's certificate); none is committed. A verifier that accepts one forged or
altered request has no signature at all, so each scheme is tried with a wrong key, a
tampered body and (where the scheme has one) a stale or future timestamp.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import zlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote_plus, urlencode

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from schemas.config import WebhookAuth
from schemas.provider_requests import make_certificate
from schemas.provider_signatures import (
    VERIFIERS,
    AlipayKey,
    DigestKey,
    PayPalKey,
    SignatureRefused,
    StaticKey,
    UrlBodyKey,
    WechatPayKeys,
    alipay_sign_content,
    check_paypal_certificate,
    decode_form,
    encrypt_wechatpay_resource,
    load_public_key,
    paypal_cert_url_allowed,
    sign_alipay_rsa2,
    sign_digest_md5,
    sign_hmac_url_body,
    sign_paypal,
    sign_wechatpay_v3,
    verify_alipay_rsa2,
    verify_digest_md5,
    verify_hmac_url_body,
    verify_paypal,
    verify_static_key,
    verify_wechatpay_v3,
)
from schemas.signatures import (
    BAD_SIGNATURE,
    MALFORMED_SIGNATURE,
    REASONS,
    STALE_TIMESTAMP,
    UNSIGNED,
    sign,
    verify,
)

NOW = 1_772_438_400.0  # 2026-03-02T08:00:00Z
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY_A, KEY_B, KEY_OTHER = _rsa(), _rsa(), _rsa()


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _refused(reason: str, verify, *args) -> None:
    with pytest.raises(SignatureRefused) as refused:
        verify(*args)
    assert refused.value.reason == reason
    assert reason in REASONS


def _flip(data: bytes, index: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- hmac_url_body (Shopee) ----------------------------------------------------------

SHOPEE = UrlBodyKey(secret=b"shopee-partner-key", url="https://shop.example.com/hooks/shopee")
SHOPEE_BODY = b'{"code":3,"shop_id":1,"timestamp":1772438400,"data":{"ordersn":"2603020AB"}}'


def test_shopee_signature_is_hex_hmac_of_url_bar_body() -> None:
    expected = hmac.new(
        SHOPEE.secret, SHOPEE.url.encode() + b"|" + SHOPEE_BODY, hashlib.sha256
    ).hexdigest()
    headers = sign_hmac_url_body(SHOPEE_BODY, SHOPEE)
    assert headers == {"Authorization": expected}
    assert verify_hmac_url_body(SHOPEE_BODY, CIMultiDict(headers), SHOPEE, NOW) is None
    upper = CIMultiDict({"authorization": expected.upper()})
    assert verify_hmac_url_body(SHOPEE_BODY, upper, SHOPEE, NOW) is None


def test_shopee_refuses_other_url_key_body_and_no_header() -> None:
    headers = CIMultiDict(sign_hmac_url_body(SHOPEE_BODY, SHOPEE))
    proxied = UrlBodyKey(secret=SHOPEE.secret, url="http://10.0.0.5:8080/hooks/shopee")
    _refused(BAD_SIGNATURE, verify_hmac_url_body, SHOPEE_BODY, headers, proxied, NOW)
    wrong = UrlBodyKey(secret=b"another-key", url=SHOPEE.url)
    _refused(BAD_SIGNATURE, verify_hmac_url_body, SHOPEE_BODY, headers, wrong, NOW)
    _refused(BAD_SIGNATURE, verify_hmac_url_body, SHOPEE_BODY + b" ", headers, SHOPEE, NOW)
    _refused(UNSIGNED, verify_hmac_url_body, SHOPEE_BODY, CIMultiDict(), SHOPEE, NOW)


@FEW
@given(body=st.binary(min_size=1, max_size=300), index=st.integers(min_value=0))
def test_shopee_round_trip_and_any_flipped_byte(body: bytes, index: int) -> None:
    headers = CIMultiDict(sign_hmac_url_body(body, SHOPEE))
    assert verify_hmac_url_body(body, headers, SHOPEE, NOW) is None
    _refused(BAD_SIGNATURE, verify_hmac_url_body, _flip(body, index), headers, SHOPEE, NOW)


# --- wechatpay_v3 ---------------------------------------------------------------------

API_V3_KEY = b"0123456789abcdef0123456789ABCDEF"
WECHAT = WechatPayKeys(
    platform_keys={"SERIAL_A": KEY_A.public_key(), "SERIAL_B": KEY_B.public_key()},
    api_v3_key=API_V3_KEY,
)
TRANSACTION = {
    "out_trade_no": "TB2026012700123",
    "transaction_id": "4200000848202603020290526543",
    "trade_state": "SUCCESS",
    "success_time": "2026-03-02T16:00:00+08:00",
    "amount": {"total": 1999, "currency": "CNY"},
}


def _wechat_body(plain: dict | None = None, key: bytes = API_V3_KEY) -> bytes:
    resource = encrypt_wechatpay_resource(plain or TRANSACTION, key, nonce="fdasflkja484")
    return orjson.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2026-03-02T16:00:01+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": resource,
        }
    )


def _wechat(body: bytes, key=KEY_A, serial="SERIAL_A", at=NOW) -> CIMultiDict:
    return CIMultiDict(sign_wechatpay_v3(body, key, serial, secrets.token_hex(16), at))


def test_wechatpay_accepts_and_decrypts_resource_in_place() -> None:
    body = _wechat_body()
    notification = verify_wechatpay_v3(body, _wechat(body), WECHAT, NOW)
    assert notification["resource"] == TRANSACTION
    assert notification["id"] == "EV-2018022511223320873"
    assert "ciphertext" not in orjson.dumps(notification).decode()


def test_wechatpay_signed_string_is_timestamp_nonce_body_lines() -> None:
    body = _wechat_body()
    headers = _wechat(body)
    message = f"{headers['Wechatpay-Timestamp']}\n{headers['Wechatpay-Nonce']}\n".encode()
    KEY_A.public_key().verify(
        base64.b64decode(headers["Wechatpay-Signature"]),
        message + body + b"\n",
        __import__(
            "cryptography.hazmat.primitives.asymmetric.padding"
        ).hazmat.primitives.asymmetric.padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_wechatpay_rotation_either_configured_key_by_its_serial() -> None:
    body = _wechat_body()
    assert verify_wechatpay_v3(body, _wechat(body, KEY_B, "SERIAL_B"), WECHAT, NOW)
    # the right key under the other's serial is someone else's claim
    _refused(
        BAD_SIGNATURE, verify_wechatpay_v3, body, _wechat(body, KEY_B, "SERIAL_A"), WECHAT, NOW
    )


def test_wechatpay_refuses_unknown_serial_wrong_key_and_tampered_body() -> None:
    body = _wechat_body()
    _refused(
        BAD_SIGNATURE, verify_wechatpay_v3, body, _wechat(body, serial="SERIAL_X"), WECHAT, NOW
    )
    _refused(BAD_SIGNATURE, verify_wechatpay_v3, body, _wechat(body, KEY_OTHER), WECHAT, NOW)
    tampered = body.replace(b"TRANSACTION.SUCCESS", b"REFUND.SUCCESS")
    _refused(BAD_SIGNATURE, verify_wechatpay_v3, tampered, _wechat(body), WECHAT, NOW)


@pytest.mark.parametrize("offset", [-300, 300, -3600, 86_400])
def test_wechatpay_refuses_timestamps_beyond_five_minutes_both_ways(offset: int) -> None:
    body = _wechat_body()
    headers = _wechat(body, at=NOW + offset)
    _refused(STALE_TIMESTAMP, verify_wechatpay_v3, body, headers, WECHAT, NOW)


@pytest.mark.parametrize("offset", [-299, 0, 299])
def test_wechatpay_accepts_timestamps_within_five_minutes(offset: int) -> None:
    body = _wechat_body()
    assert verify_wechatpay_v3(body, _wechat(body, at=NOW + offset), WECHAT, NOW)


def test_wechatpay_refuses_resource_under_another_apiv3_key() -> None:
    body = _wechat_body(key=b"X" * 32)  # signed by the platform, sealed for someone else
    _refused(BAD_SIGNATURE, verify_wechatpay_v3, body, _wechat(body), WECHAT, NOW)


def test_wechatpay_refuses_missing_headers_and_malformed_ones() -> None:
    body = _wechat_body()
    for name in (
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Serial",
        "Wechatpay-Signature",
    ):
        headers = _wechat(body)
        del headers[name]
        _refused(UNSIGNED, verify_wechatpay_v3, body, headers, WECHAT, NOW)
    headers = _wechat(body)
    headers["Wechatpay-Signature"] = "not base64!"
    _refused(MALFORMED_SIGNATURE, verify_wechatpay_v3, body, headers, WECHAT, NOW)
    headers = _wechat(body)
    headers["Wechatpay-Timestamp"] = "1e9"
    _refused(MALFORMED_SIGNATURE, verify_wechatpay_v3, body, headers, WECHAT, NOW)


def test_wechatpay_signed_body_without_resource_is_malformed() -> None:
    body = b'{"id":"EV-1","event_type":"TRANSACTION.SUCCESS"}'
    _refused(MALFORMED_SIGNATURE, verify_wechatpay_v3, body, _wechat(body), WECHAT, NOW)


def test_wechatpay_refuses_unusable_resources_even_when_signed() -> None:
    resource = encrypt_wechatpay_resource(TRANSACTION, API_V3_KEY, nonce="fdasflkja484")
    for broken in (
        {**resource, "nonce": ""},  # AES-GCM takes no empty nonce
        {**resource, "ciphertext": "%%%"},
        {**resource, "algorithm": "AEAD_SM4_GCM"},
        encrypt_wechatpay_resource(["not", "an", "object"], API_V3_KEY, nonce="n0n0n0n0n0n0"),
    ):
        body = orjson.dumps({"id": "EV-1", "resource": broken})
        _refused(MALFORMED_SIGNATURE, verify_wechatpay_v3, body, _wechat(body), WECHAT, NOW)


def test_wechatpay_platform_key_loads_from_public_key_or_certificate_pem() -> None:
    assert load_public_key(_pem(KEY_A)).public_numbers() == KEY_A.public_key().public_numbers()
    cert = _certificate(KEY_A, "wechatpay platform", KEY_A, "wechatpay platform", ca=False)
    loaded = load_public_key(cert.public_bytes(serialization.Encoding.PEM))
    assert loaded.public_numbers() == KEY_A.public_key().public_numbers()


def test_wechatpay_apiv3_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        WechatPayKeys(platform_keys={}, api_v3_key=b"short")


@FEW
@given(out_trade_no=st.text(min_size=1, max_size=40), index=st.integers(min_value=0))
def test_wechatpay_round_trip_and_any_flipped_body_byte(out_trade_no: str, index: int) -> None:
    plain = {**TRANSACTION, "out_trade_no": out_trade_no}
    body = _wechat_body(plain)
    headers = _wechat(body)
    assert verify_wechatpay_v3(body, headers, WECHAT, NOW)["resource"] == plain
    with pytest.raises(SignatureRefused):
        verify_wechatpay_v3(_flip(body, index), headers, WECHAT, NOW)


# --- alipay_rsa2 ----------------------------------------------------------------------

ALIPAY = AlipayKey(public_key=KEY_A.public_key())
ALIPAY_FIELDS = {
    "notify_time": "2026-03-02 16:00:00",
    "notify_type": "trade_status_sync",
    "notify_id": "ac05099524730693a8b330c5ecf72da9786",
    "app_id": "2014072300007148",
    "charset": "utf-8",
    "version": "1.0",
    "trade_no": "2026030222001456380542497258",
    "out_trade_no": "TB2026012700123",
    "trade_status": "TRADE_SUCCESS",
    "total_amount": "19.99",
    "subject": "仙玉小袋 & co",
    "gmt_create": "2026-03-02 15:59:30",
    "gmt_payment": "2026-03-02 15:59:58",
    "refund_fee": "",
}


def _reorder(body: bytes) -> bytes:
    return urlencode(list(reversed(parse_qsl(body.decode(), keep_blank_values=True)))).encode()


def test_alipay_accepts_and_returns_decoded_fields() -> None:
    body = sign_alipay_rsa2(ALIPAY_FIELDS, KEY_A)
    fields = verify_alipay_rsa2(body, CIMultiDict(), ALIPAY, NOW)
    assert {k: v for k, v in fields.items() if k not in ("sign", "sign_type")} == ALIPAY_FIELDS
    assert fields["sign_type"] == "RSA2"


def test_alipay_signs_sorted_fields_without_sign_and_sign_type_empty_values_kept() -> None:
    content = alipay_sign_content({"b": "2", "a": "1", "sign": "x", "sign_type": "RSA2", "c": ""})
    assert content == "a=1&b=2&c="


def test_alipay_accepts_the_same_form_in_another_order() -> None:
    body = sign_alipay_rsa2(ALIPAY_FIELDS, KEY_A)
    assert _reorder(body) != body
    assert verify_alipay_rsa2(_reorder(body), CIMultiDict(), ALIPAY, NOW)


def test_alipay_refuses_changed_added_or_removed_fields() -> None:
    body = sign_alipay_rsa2(ALIPAY_FIELDS, KEY_A)
    changed = body.replace(b"total_amount=19.99", b"total_amount=0.01")
    assert changed != body
    _refused(BAD_SIGNATURE, verify_alipay_rsa2, changed, CIMultiDict(), ALIPAY, NOW)
    added = body + b"&refund_fee_extra=1"
    _refused(BAD_SIGNATURE, verify_alipay_rsa2, added, CIMultiDict(), ALIPAY, NOW)
    removed = body.replace(b"refund_fee=&", b"").replace(b"&refund_fee=", b"")
    assert removed != body
    _refused(BAD_SIGNATURE, verify_alipay_rsa2, removed, CIMultiDict(), ALIPAY, NOW)


def test_alipay_refuses_wrong_key_no_sign_other_sign_type_and_duplicate_fields() -> None:
    body = sign_alipay_rsa2(ALIPAY_FIELDS, KEY_OTHER)
    _refused(BAD_SIGNATURE, verify_alipay_rsa2, body, CIMultiDict(), ALIPAY, NOW)
    unsigned = urlencode(ALIPAY_FIELDS).encode()
    _refused(UNSIGNED, verify_alipay_rsa2, unsigned, CIMultiDict(), ALIPAY, NOW)
    good = sign_alipay_rsa2(ALIPAY_FIELDS, KEY_A)
    rsa1 = good.replace(b"sign_type=RSA2", b"sign_type=RSA")
    _refused(MALFORMED_SIGNATURE, verify_alipay_rsa2, rsa1, CIMultiDict(), ALIPAY, NOW)
    twice = good + b"&out_trade_no=OTHER"
    _refused(MALFORMED_SIGNATURE, verify_alipay_rsa2, twice, CIMultiDict(), ALIPAY, NOW)


def test_alipay_form_in_gbk_is_decoded_and_verified_in_gbk() -> None:
    fields = {**ALIPAY_FIELDS, "charset": "gbk"}
    body = sign_alipay_rsa2(fields, KEY_A)
    assert "仙玉小袋".encode("gbk") not in body  # percent-encoded GBK bytes
    assert verify_alipay_rsa2(body, CIMultiDict(), ALIPAY, NOW)["subject"] == "仙玉小袋 & co"
    assert decode_form(body)["subject"] == "仙玉小袋 & co"


def test_alipay_form_with_unknown_charset_or_bad_bytes_is_malformed() -> None:
    _refused(MALFORMED_SIGNATURE, decode_form, b"charset=nope-42&a=1")
    _refused(MALFORMED_SIGNATURE, decode_form, b"a=%FF%FE")
    _refused(MALFORMED_SIGNATURE, decode_form, "a=é".encode())


@FEW
@given(
    extra=st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
            lambda k: k not in ("sign", "sign_type", "charset")
        ),
        st.text(max_size=30).filter(lambda v: "\x00" not in v),
        max_size=5,
    ),
    index=st.integers(min_value=0),
)
def test_alipay_round_trip_any_fields_and_flipped_value(extra: dict, index: int) -> None:
    fields = {**ALIPAY_FIELDS, **extra}
    body = sign_alipay_rsa2(fields, KEY_A)
    assert verify_alipay_rsa2(_reorder(body), CIMultiDict(), ALIPAY, NOW)
    pairs = parse_qsl(body.decode(), keep_blank_values=True)
    signed = [n for n, _ in pairs if n not in ("sign", "sign_type", "charset")]
    name = signed[index % len(signed)]
    changed = urlencode([(n, v + "0" if n == name else v) for n, v in pairs]).encode()
    _refused(BAD_SIGNATURE, verify_alipay_rsa2, changed, CIMultiDict(), ALIPAY, NOW)


# --- paypal ---------------------------------------------------------------------------

CERT_URL = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-df8cd2d5"
PAYPAL_BODY = (
    b'{"id":"WH-1","event_type":"PAYMENT.CAPTURE.COMPLETED","resource":{"custom_id":"TB1"}}'
)
NOW_DT = datetime.fromtimestamp(NOW, UTC)


def _certificate(
    key: rsa.RSAPrivateKey, name: str, issuer_key: rsa.RSAPrivateKey, issuer: str, ca: bool
) -> x509.Certificate:
    """Valid 30 days around NOW: the expiry test looks 60 days on."""
    return make_certificate(key, name, issuer_key, issuer, NOW_DT, ca=ca, days=30)


ROOT_KEY = _rsa()
ROOT = _certificate(ROOT_KEY, "Test Root CA", ROOT_KEY, "Test Root CA", ca=True)
LEAF = _certificate(
    KEY_A, "messageverificationcerts.paypal.com", ROOT_KEY, "Test Root CA", ca=False
)
PAYPAL = PayPalKey(webhook_id="8PT597110X687430LE", certificate=LEAF)


def _paypal(body: bytes = PAYPAL_BODY, key=KEY_A, at=NOW, url=CERT_URL) -> CIMultiDict:
    return CIMultiDict(sign_paypal(body, key, PAYPAL.webhook_id, "b2384410-f8d2", at, url))


def _pem_of(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_paypal_accepts_its_signature() -> None:
    assert verify_paypal(PAYPAL_BODY, _paypal(), PAYPAL, NOW) is None


def test_paypal_signed_string_uses_decimal_crc32_of_the_raw_body() -> None:
    headers = _paypal()
    message = f"b2384410-f8d2|{headers['PAYPAL-TRANSMISSION-TIME']}|{PAYPAL.webhook_id}|"
    message += str(zlib.crc32(PAYPAL_BODY))
    KEY_A.public_key().verify(
        base64.b64decode(headers["PAYPAL-TRANSMISSION-SIG"]),
        message.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_paypal_refuses_wrong_key_tampered_body_and_other_webhook_id() -> None:
    _refused(BAD_SIGNATURE, verify_paypal, PAYPAL_BODY, _paypal(key=KEY_OTHER), PAYPAL, NOW)
    _refused(BAD_SIGNATURE, verify_paypal, PAYPAL_BODY + b" ", _paypal(), PAYPAL, NOW)
    other = PayPalKey(webhook_id="OTHERWEBHOOK", certificate=LEAF)
    _refused(BAD_SIGNATURE, verify_paypal, PAYPAL_BODY, _paypal(), other, NOW)
    headers = _paypal()
    headers["PAYPAL-TRANSMISSION-ID"] = (
        "b2384410-f8d3"  # the id is signed: no replays under new ids
    )
    _refused(BAD_SIGNATURE, verify_paypal, PAYPAL_BODY, headers, PAYPAL, NOW)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/v1/notifications/certs/CERT-1",
        "http://api.paypal.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com.evil.example.com/v1/notifications/certs/CERT-1",
        "https://evil.example.com@api.paypal.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com:8443/v1/notifications/certs/CERT-1",
        "https://api.paypal.com/v1/oauth2/token",
        "https://api.paypal.com/v1/notifications/certs/CERT-1?x=https://evil.example.com",
        "https://paypal.com/v1/notifications/certs/CERT-1",
        "not a url",
        "https://[::1/v1/notifications/certs/CERT-1",
    ],
)
def test_paypal_refuses_cert_urls_off_paypals_hosts(url: str) -> None:
    assert not paypal_cert_url_allowed(url)
    # even with a signature that verifies under the configured certificate
    _refused(BAD_SIGNATURE, verify_paypal, PAYPAL_BODY, _paypal(url=url), PAYPAL, NOW)


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77",
        "https://api-m.paypal.com/v1/notifications/certs/CERT-1",
        "https://API.PAYPAL.COM:443/v1/notifications/certs/CERT-1",
    ],
)
def test_paypal_accepts_cert_urls_on_paypals_hosts(url: str) -> None:
    assert paypal_cert_url_allowed(url)


def test_paypal_refuses_other_algorithm_and_missing_headers() -> None:
    headers = _paypal()
    headers["PAYPAL-AUTH-ALGO"] = "SHA1withRSA"
    _refused(MALFORMED_SIGNATURE, verify_paypal, PAYPAL_BODY, headers, PAYPAL, NOW)
    headers = _paypal()
    del headers["PAYPAL-TRANSMISSION-SIG"]
    _refused(UNSIGNED, verify_paypal, PAYPAL_BODY, headers, PAYPAL, NOW)


def test_paypal_transmission_time_bounded_only_when_configured() -> None:
    old = _paypal(at=NOW - 3 * 86_400)
    assert verify_paypal(PAYPAL_BODY, old, PAYPAL, NOW) is None
    bounded = PayPalKey(webhook_id=PAYPAL.webhook_id, certificate=LEAF, tolerance_s=300)
    assert verify_paypal(PAYPAL_BODY, _paypal(at=NOW - 299), bounded, NOW) is None
    _refused(STALE_TIMESTAMP, verify_paypal, PAYPAL_BODY, old, bounded, NOW)
    _refused(STALE_TIMESTAMP, verify_paypal, PAYPAL_BODY, _paypal(at=NOW + 301), bounded, NOW)


def test_paypal_certificate_chain_to_trusted_root_accepted() -> None:
    leaf = check_paypal_certificate(_pem_of(LEAF), _pem_of(ROOT), NOW_DT)
    assert leaf == LEAF


def test_paypal_self_signed_certificate_in_paypals_name_refused() -> None:
    forged = _certificate(
        KEY_OTHER,
        "messageverificationcerts.paypal.com",
        KEY_OTHER,
        "messageverificationcerts.paypal.com",
        ca=False,
    )
    _refused(BAD_SIGNATURE, check_paypal_certificate, _pem_of(forged), _pem_of(ROOT), NOW_DT)


def test_paypal_certificate_for_another_name_or_expired_refused() -> None:
    other = _certificate(KEY_A, "evil.example.com", ROOT_KEY, "Test Root CA", ca=False)
    _refused(BAD_SIGNATURE, check_paypal_certificate, _pem_of(other), _pem_of(ROOT), NOW_DT)
    later = NOW_DT + timedelta(days=60)
    _refused(BAD_SIGNATURE, check_paypal_certificate, _pem_of(LEAF), _pem_of(ROOT), later)
    _refused(MALFORMED_SIGNATURE, check_paypal_certificate, b"junk", _pem_of(ROOT), NOW_DT)


def test_paypal_sandbox_certificate_name() -> None:
    name = "messageverificationcerts.sandbox.paypal.com"
    sandbox = _certificate(KEY_A, name, ROOT_KEY, "Test Root CA", ca=False)
    assert check_paypal_certificate(_pem_of(sandbox), _pem_of(ROOT), NOW_DT, name) == sandbox
    _refused(BAD_SIGNATURE, check_paypal_certificate, _pem_of(sandbox), _pem_of(ROOT), NOW_DT)


@FEW
@given(body=st.binary(min_size=1, max_size=300), index=st.integers(min_value=0))
def test_paypal_round_trip_and_any_flipped_byte(body: bytes, index: int) -> None:
    headers = _paypal(body)
    assert verify_paypal(body, headers, PAYPAL, NOW) is None
    _refused(BAD_SIGNATURE, verify_paypal, _flip(body, index), headers, PAYPAL, NOW)


# --- digest_md5 (SF, J&T, ZTO style) --------------------------------------------------

CHECKWORD = b"fjcg5PGKaNpPSHFAZ4QsCOkV71R3zVci"
SF = DigestKey(
    secret=CHECKWORD,
    digest="field:msgDigest",
    parts=("field:msgData", "field:timestamp", "key"),
    urlencode=True,
)
JT = DigestKey(secret=b"jt-private-key", digest="header:digest", parts=("field:bizContent", "key"))
RAW = DigestKey(secret=b"zto-key", digest="header:x-datadigest")


def _sf_body(msg_data: str, stamp: str = "1772438400000") -> bytes:
    unsigned = urlencode({"msgData": msg_data, "timestamp": stamp}).encode()
    digest = sign_digest_md5(unsigned, {}, SF)
    return urlencode({"msgData": msg_data, "timestamp": stamp, "msgDigest": digest}).encode()


def test_sf_digest_is_base64_md5_of_java_urlencoded_data_stamp_checkword() -> None:
    msg = '{"language":"zh-CN","orderId":"QIAO-20200618-004"}'
    body = _sf_body(msg, "12312334453453")
    text = msg + "12312334453453" + CHECKWORD.decode()
    expected = base64.b64encode(hashlib.md5(quote_plus(text).encode()).digest()).decode()
    assert decode_form(body)["msgDigest"] == expected == "IIKJtuLVzoFTu4kHI8M8vA=="  # SF's example
    assert verify_digest_md5(body, CIMultiDict(), SF, NOW) is None


def test_sf_digest_encodes_like_javas_urlencoder() -> None:
    body = _sf_body('{"remark":"a*b~c 顺丰"}')
    assert verify_digest_md5(body, CIMultiDict(), SF, NOW) is None
    stamp = "1772438400000"
    text = '{"remark":"a*b~c 顺丰"}' + stamp + CHECKWORD.decode()
    # URLEncoder: ASCII letters, digits and ".-*_" kept, " " -> "+", the rest UTF-8 %XX
    encoded = "".join(
        c
        if (c.isascii() and c.isalnum()) or c in ".-*_"
        else "+"
        if c == " "
        else "".join(f"%{b:02X}" for b in c.encode())
        for c in text
    )
    expected = base64.b64encode(hashlib.md5(encoded.encode()).digest()).decode()
    assert decode_form(body)["msgDigest"] == expected


def test_jt_digest_over_biz_content_and_key_in_header() -> None:
    biz = '{"billCode":"JT0001","details":[{"scanType":"快件签收"}]}'
    body = urlencode({"bizContent": biz}).encode()
    headers = CIMultiDict({"digest": sign_digest_md5(body, {}, JT), "apiAccount": "1"})
    expected = base64.b64encode(hashlib.md5(biz.encode() + JT.secret).digest()).decode()
    assert headers["digest"] == expected
    assert verify_digest_md5(body, headers, JT, NOW) is None


def test_digest_refuses_wrong_key_tampered_data_and_missing_digest() -> None:
    body = _sf_body('{"orderId":"1"}')
    wrong = DigestKey(secret=b"other", digest=SF.digest, parts=SF.parts, urlencode=True)
    _refused(BAD_SIGNATURE, verify_digest_md5, body, CIMultiDict(), wrong, NOW)
    tampered = body.replace(b"timestamp=1772438400000", b"timestamp=1772438400001")
    _refused(BAD_SIGNATURE, verify_digest_md5, tampered, CIMultiDict(), SF, NOW)
    unsigned = urlencode({"msgData": "{}", "timestamp": "1"}).encode()
    _refused(UNSIGNED, verify_digest_md5, unsigned, CIMultiDict(), SF, NOW)


def test_digest_in_a_charset_that_cannot_hold_the_header_is_malformed() -> None:
    ascii_only = DigestKey(secret=b"k", digest="header:digest", form_charset="ascii")
    headers = CIMultiDict({"digest": "é"})
    _refused(MALFORMED_SIGNATURE, verify_digest_md5, b"{}", headers, ascii_only, NOW)


def test_digest_rule_names_only_known_places() -> None:
    with pytest.raises(ValueError):
        DigestKey(secret=b"k", digest="query:sig")
    with pytest.raises(ValueError):
        DigestKey(secret=b"k", digest="header:x", parts=("body", "secret"))


@FEW
@given(body=st.binary(min_size=1, max_size=300), index=st.integers(min_value=0))
def test_raw_body_digest_round_trip_and_any_flipped_byte(body: bytes, index: int) -> None:
    headers = CIMultiDict({"x-datadigest": sign_digest_md5(body, {}, RAW)})
    assert verify_digest_md5(body, headers, RAW, NOW) is None
    _refused(BAD_SIGNATURE, verify_digest_md5, _flip(body, index), headers, RAW, NOW)


# --- static_key (DHL) -----------------------------------------------------------------

DHL = StaticKey(secret=b"dhl-subscription-key-123", header="DHL-API-Key")


def test_static_key_compares_the_header_with_the_secret() -> None:
    ok = CIMultiDict({"dhl-api-key": "dhl-subscription-key-123"})
    assert verify_static_key(b"{}", ok, DHL, NOW) is None
    bad = CIMultiDict({"DHL-API-Key": "dhl-subscription-key-124"})
    _refused(BAD_SIGNATURE, verify_static_key, b"{}", bad, DHL, NOW)
    _refused(BAD_SIGNATURE, verify_static_key, b"{}", CIMultiDict({"DHL-API-Key": "é"}), DHL, NOW)
    _refused(UNSIGNED, verify_static_key, b"{}", CIMultiDict(), DHL, NOW)


# --- all schemes ----------------------------------------------------------------------


def test_every_scheme_is_named_for_configuration() -> None:
    assert set(VERIFIERS) == {
        "hmac_url_body",
        "wechatpay_v3",
        "alipay_rsa2",
        "paypal",
        "digest_md5",
        "static_key",
    }


def test_refusals_never_quote_a_key_or_signature() -> None:
    body = _wechat_body()
    headers = _wechat(body, KEY_OTHER)
    with pytest.raises(SignatureRefused) as refused:
        verify_wechatpay_v3(body, headers, WECHAT, NOW)
    assert str(refused.value) == BAD_SIGNATURE
    assert headers["Wechatpay-Signature"] not in repr(refused.value)


# --- the existing timestamped scheme against Stripe's own SDK (offline) ---------------

STRIPE_SECRET = "whsec_test-secret-0123456789"
STRIPE = WebhookAuth(scheme="timestamped", header="Stripe-Signature", tolerance="300s")


@FEW
@given(payload=st.text(min_size=1, max_size=200))
def test_stripe_sdk_accepts_our_signer_and_we_accept_its(payload: str) -> None:
    stripe = pytest.importorskip("stripe")
    body = payload.encode()
    ours = sign(STRIPE, STRIPE_SECRET.encode(), body, NOW)["Stripe-Signature"]
    assert stripe.WebhookSignature.verify_header(body, ours, STRIPE_SECRET)
    theirs = stripe.WebhookSignature.generate_signature_header(
        payload, STRIPE_SECRET, timestamp=int(NOW)
    )
    assert theirs == ours
    headers = CIMultiDict({"Stripe-Signature": theirs})
    assert verify(STRIPE, STRIPE_SECRET.encode(), headers, body, NOW) is None
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body + b"x", ours, STRIPE_SECRET)
