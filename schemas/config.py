"""The one configuration object: thresholds, channels, carriers and the source registry.

Loaded from YAML (`ops/orderguard.yaml`, whose `sources:` names `ops/sources.yaml`),
overridden by environment variables `ORDERGUARD__SECTION__KEY=value`, validated by
pydantic. Every error names the file and the dotted key; secrets are `SecretStr`
so they never print.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.paths import PathError, bind, each_steps
from schemas.statuses import CLAIMABLE, conditional

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "ops" / "orderguard.yaml"
ENV_PREFIX = "ORDERGUARD__"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def _to_ms(value: Any) -> int:
    """Durations are written "90s", "2m", "4h", "7d" (a bare number means seconds)."""
    if isinstance(value, bool):
        raise ValueError("a duration, like 90s, 2m, 4h or 7d")
    if isinstance(value, int | float):
        return int(value * 1000)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    raise ValueError(f"{value!r} is not a duration (like 90s, 2m, 4h or 7d)")


DurationMs = Annotated[int, BeforeValidator(_to_ms), Field(ge=0)]
"""A duration, held in milliseconds: every clock in the pipeline counts in ms."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- thresholds
class SuccessRate(_Strict):
    threshold: float = Field(0.992, gt=0, le=1)
    window: DurationMs = 300_000
    min_volume: int = Field(50, ge=1)


class Thresholds(_Strict):
    """Every number in the alert table. Per-channel and per-carrier overrides below."""

    payment_not_reflected: DurationMs = 120_000
    shipment_delayed: DurationMs = 4 * 3_600_000
    pickup_missing: DurationMs = 4 * 3_600_000
    tracking_stalled: DurationMs = 12 * 3_600_000
    delivery_not_reflected: DurationMs = 2 * 3_600_000
    refund_stuck: DurationMs = 24 * 3_600_000
    clock_skew: DurationMs = 300_000
    source_alert_interval: DurationMs = 3_600_000
    payment_success_rate: SuccessRate = SuccessRate()


class ThresholdOverride(_Strict):
    """The per-order thresholds a channel or carrier may set for itself."""

    payment_not_reflected: DurationMs | None = None
    shipment_delayed: DurationMs | None = None
    pickup_missing: DurationMs | None = None
    tracking_stalled: DurationMs | None = None
    delivery_not_reflected: DurationMs | None = None
    refund_stuck: DurationMs | None = None


class ChannelBreakerConfig(_Strict):
    bad_ratio: float = Field(0.05, ge=0, le=1)
    window: DurationMs = 60_000
    bad_windows: int = Field(5, ge=1)
    min_events: int = Field(20, ge=1)
    open_for: DurationMs = 300_000
    healthy_windows: int = Field(3, ge=1)


class CarrierBreakerConfig(_Strict):
    consecutive_failures: int = Field(5, ge=1)
    failure_ratio: float = Field(0.05, ge=0, le=1)
    window_calls: int = Field(50, ge=1)
    min_calls: int = Field(20, ge=1)
    slow_ms: float = Field(3000, gt=0)
    slow_ratio: float = Field(0.5, ge=0, le=1)
    open_for: DurationMs = 60_000
    probe_calls: int = Field(3, ge=1)


class CustomerHoldConfig(_Strict):
    expires_after: DurationMs = 72 * 3_600_000


class Breakers(_Strict):
    channel: ChannelBreakerConfig = ChannelBreakerConfig()
    carrier: CarrierBreakerConfig = CarrierBreakerConfig()
    customer: CustomerHoldConfig = CustomerHoldConfig()


class Retention(_Strict):
    """Memory stays bounded: finished orders and events nobody claims leave state.

    `pending_tracking*` bound every event waiting in the reference index, a scan for a
    tracking number or an event naming a channel's or payment's id (the keys keep the
    name they had when only scans waited).
    """

    terminal_order: DurationMs = 3 * 86_400_000
    idle_order: DurationMs = 60 * 86_400_000
    pending_tracking: DurationMs = 7 * 86_400_000
    pending_tracking_max: int = Field(200_000, ge=1)
    pending_tracking_max_bytes: int = Field(128 * 1_048_576, ge=1)  # per index shard
    seen_events_per_order: int = Field(64, ge=4)


RECORD_OVERHEAD = 512
"""Bytes a Kafka record adds to its key and value (record and batch headers), with room."""


class Limits(_Strict):
    """Every size bound, in bytes: no input, id or text makes a record Kafka refuses.

    An input record over `input_record` is dead-lettered `too_large` (a prefix, its size
    and SHA-256); an id over `id` (order, tracking, customer, event id, carrier, channel)
    is dead-lettered before it reaches state, Redis or a metric; free text (operator
    names, reasons, error sentences) is cut at `free_text`; a dead letter embeds at most
    `dead_letter_raw` bytes of its input; an output record over `output_record` is
    replaced by a dead letter `output_too_large`.
    """

    input_record: int = Field(524_288, ge=1024)
    id: int = Field(256, ge=32)
    free_text: int = Field(1024, ge=64)
    dead_letter_raw: int = Field(16_384, ge=256)
    output_record: int = Field(524_288, ge=8192)

    @model_validator(mode="after")
    def _consistent(self) -> Limits:
        pairs = [
            ("id", "free_text"),
            ("free_text", "dead_letter_raw"),
            ("id", "input_record"),
            ("dead_letter_raw", "output_record"),
        ]
        for small, large in pairs:
            if getattr(self, small) > getattr(self, large):
                raise ValueError(
                    f"limits.{small} ({getattr(self, small)}) is larger than "
                    f"limits.{large} ({getattr(self, large)})"
                )
        # a dead letter holds its raw prefix, an error, a value, a source and an origin
        need = self.dead_letter_raw + 4 * self.free_text + RECORD_OVERHEAD
        if need > self.output_record:
            raise ValueError(
                f"limits.output_record ({self.output_record}) cannot hold a dead letter: "
                f"limits.dead_letter_raw + 4 x limits.free_text + {RECORD_OVERHEAD} = {need}"
            )
        return self

    def record_max(self) -> int:
        """The largest record (key, value, headers) the pipeline may hand Kafka."""
        return self.output_record + self.id + RECORD_OVERHEAD


class Pipeline(_Strict):
    shards: int = Field(12, ge=1, le=4096)
    batch_size: int = Field(2000, ge=1)
    max_clock_ahead: DurationMs = Field(300_000, gt=0)
    """How far an input's `received_at` may run ahead of the ingestion clock (the wall
    clock, live and in replay); beyond, it is dead-lettered
    `implausible_time` instead of moving every clock to a wrong future."""
    max_partition_skew: DurationMs = Field(10_000, gt=0)
    """How far (in `received_at` time) a partition may be read ahead of the slowest one its
    process reads before it waits for it (`state.watermark.Alignment`): what runs ahead
    only waits downstream for the watermark, in memory and in every snapshot."""
    gc_tuning: bool = True
    """Freeze start-up and restored state out of the cyclic GC's reach and collect the
    young generation less often (`dataflows.gc_tuning`); off: CPython's defaults."""


# ---------------------------------------------------------------- kafka, recovery
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
"""Kafka's own rule for topic names: letters, digits, '.', '_', '-'; at most 249."""


class InputTopics(_Strict):
    """The Kafka topic each input stream is read from."""

    orders: TopicName = "orders"
    payments: TopicName = "payments"
    tracking: TopicName = "tracking"


class OutputTopics(_Strict):
    """The Kafka topic each output is written to."""

    corrected: TopicName = "orderguard.corrected"
    alerts: TopicName = "orderguard.alerts"
    breakers: TopicName = "orderguard.breakers"
    dead_letters: TopicName = "orderguard.dead_letters"


_CLIENT_OWNED = {
    "bootstrap.servers": "kafka.bootstrap_servers",
    "sasl.password": "kafka.sasl_password",
}


DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes` (the producer refuses larger records)."""
ENVELOPE_RESERVE = 16_384
"""Bytes the gateway's envelope and record add to a body, allowed for when `gateway.max_body`
is checked against `message.max.bytes`: the envelope's fields, a delivery id, the record
key and librdkafka's framing. A record larger still (a giant id or key) is answered 413."""

CONTROL_PARTITIONS = 1
"""Partitions `run` creates the control topic with (operator commands)."""


class Kafka(_Strict):
    """Where the live path reads and writes.

    `client` passes through to librdkafka (security.protocol, sasl.mechanism, ...);
    the password is kept apart as a `SecretStr` and only merged in by
    `client_config()`, so printing the settings never shows it.
    """

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    input_topics: InputTopics = InputTopics()
    output_topics: OutputTopics = OutputTopics()
    control_topic: TopicName = "orderguard.control"  # operator commands (schemas.commands)
    partitions: int = Field(6, ge=1, le=10_000)
    client: dict[str, str] = {}
    sasl_password: SecretStr | None = None
    flush_timeout: DurationMs = 30_000

    @field_validator("client")
    @classmethod
    def _no_owned_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key in _CLIENT_OWNED:
                # Only the key is named: the value may be a secret.
                raise ValueError(f"{key!r} is not set here: use {_CLIENT_OWNED[key]}")
        return v

    @model_validator(mode="after")
    def _distinct_topics(self) -> Kafka:
        names = list(self.source_topics().values())
        names += list(self.output_topics.model_dump().values())
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"topic {dup[0]!r} is used for more than one stream or output")
        return self

    def client_config(self) -> dict[str, object]:
        """librdkafka settings for a client: passthrough plus the password (never logged)."""
        conf: dict[str, object] = dict(self.client)
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        return conf

    def message_max_bytes(self) -> int:
        """The largest record our producers may send: librdkafka's `message.max.bytes`.

        Set through `kafka.client` (default 1,000,000, librdkafka's); a bound that lets a
        record grow past it would make the broker refuse it, so the size limits and the
        gateway's `max_body` are checked against this figure at start.
        """
        value = self.client.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"kafka.client message.max.bytes is not a number: {value!r}") from None

    def source_topics(self) -> dict[str, str]:
        """Every topic the pipeline reads, by stream: the three inputs and `control`."""
        return {**self.input_topics.model_dump(), "control": self.control_topic}

    def topic_partitions(self) -> dict[str, int]:
        """Every topic read or written, with the partition count used to create it.

        The control topic gets one: it carries a few commands a day, one partition keeps
        them in one order, and every partition costs the pipeline a consumer.
        """
        names = list(self.input_topics.model_dump().values())
        names += list(self.output_topics.model_dump().values())
        return {**dict.fromkeys(names, self.partitions), self.control_topic: CONTROL_PARTITIONS}


class Recovery(_Strict):
    """Bytewax recovery: where snapshots live and how often they are taken.

    `partitions` is fixed when the directory is initialized (Bytewax 0.21.1 ran and
    resumed with more workers than partitions, and with a changed worker count).
    `snapshot_interval` is the epoch length: a restart replays at most that much
    input. `backup_interval` delays deleting superseded snapshots for as long as an
    off-machine backup of the directory takes.
    """

    dir: Path = Path("./recovery")
    partitions: int = Field(8, ge=1, le=1024)
    snapshot_interval: DurationMs = Field(10_000, ge=1)
    backup_interval: DurationMs = 0


class Metrics(_Strict):
    """The Prometheus endpoint of `orderguard run`.

    Process k of a cluster serves on `port + k`, so several processes on one host
    never collide; 0 switches the endpoint off.
    """

    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)


class Page(_Strict):
    """The read-only operator page of `orderguard run` (`dataflows/page.py`).

    Off by default (port 0): it reads this process's metrics endpoint, so it needs
    `metrics.port`; process k of a cluster serves on `port + k`, showing its own share.
    """

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)


REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisView(_Strict):
    """The Redis order view (`state.view` says what it holds); no `url`, no view.

    The password is kept apart as a `SecretStr` (ORDERGUARD__REDIS__PASSWORD) and only
    merged in by `client_options()`, so printing the settings never shows it.
    """

    url: str | None = None
    password: SecretStr | None = None
    key_prefix: str = Field("og:", max_length=64, pattern=r"^\S*$")
    timeline_max: int = Field(50, ge=1, le=10_000)
    buffer_max_keys: int = Field(100_000, ge=1)
    socket_timeout: DurationMs = Field(1000, ge=1)
    retry_interval: DurationMs = Field(1000, ge=1)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in REDIS_SCHEMES or not rest:
            # Only the scheme is named: the URL may carry a password.
            shown = f"{scheme!r}" if sep else "none"
            raise ValueError(
                f"a Redis URL starts with redis://, rediss:// or unix:// (scheme: {shown})"
            )
        try:
            urlsplit(v).port  # noqa: B018 (parsing it is the check)
        except ValueError:
            raise ValueError("the port of the Redis URL is not a number from 0 to 65535") from None
        return v

    def client_options(self) -> dict[str, object]:
        """redis-py options beside the URL: timeouts and the password (never logged)."""
        timeout = self.socket_timeout / 1000
        opts: dict[str, object] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.password is not None:
            opts["password"] = self.password.get_secret_value()
        return opts


# ---------------------------------------------------------------- the webhook gateway
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")]


Scheme = Literal[
    "hmac",
    "timestamped",
    "hmac_url_body",
    "wechatpay_v3",
    "alipay_rsa2",
    "paypal",
    "digest_md5",
    "static_key",
]
SECRET_SCHEMES = frozenset(
    {"hmac", "timestamped", "hmac_url_body", "wechatpay_v3", "digest_md5", "static_key"}
)
"""Schemes keyed by the source's `secret` (HMAC key, APIv3 key, checkword, static key);
the others verify with public keys or certificates named in `auth`."""
SIGNED_HEADERS = {"paypal": frozenset({"paypal-transmission-id"})}
"""Headers a scheme's signature covers: the only ones a delivery id may come from."""
_DIGEST_PLACE = re.compile(r"^(body|key|header:[A-Za-z0-9_.-]{1,128}|field:[A-Za-z0-9_.-]{1,128})$")


def _pem_file(path: Path, what: str) -> Path:
    """A PEM file that holds an RSA public key or certificate(s), checked at load so a
    wrong path or file is a configuration error naming the key, not a 401 at run time."""
    from cryptography import x509

    from schemas.provider_signatures import load_public_key

    try:
        pem = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    try:
        if what == "trust roots":
            x509.load_pem_x509_certificates(pem)
        else:
            load_public_key(pem)
    except ValueError:
        raise ValueError(f"{path}: not a PEM {what} (RSA)") from None
    return path


class WebhookAuth(_Strict):
    """How a provider signs its webhooks (`scheme`), and the key material besides `secret`.

    `hmac`: `header` holds the HMAC-SHA256 of the raw body (`encoding` hex or base64, after
    an optional `prefix` such as "sha256="): AfterShip, Shopify. `timestamped`: Stripe's
    `t=<unix s>,v1=<sig>` over "<t>.<body>", within `tolerance`. `hmac_url_body`: Shopee,
    hex HMAC of "<url>|<body>" in `header` (Authorization), `url` the callback URL as the
    provider calls it (a proxy may rewrite what the gateway sees). `wechatpay_v3`:
    SHA256-with-RSA by the platform key `public_keys[Wechatpay-Serial]` (several while
    WeChat Pay rotates), within `tolerance`, then `resource` decrypted with the APIv3 key
    (`secret`). `alipay_rsa2`: the form's `sign` under `public_key`. `paypal`: the
    signature over `id|time|webhook_id|crc32(body)` under `certificate` (pinned) or the
    certificate at PAYPAL-CERT-URL (PayPal's hosts only), chain checked against
    `trust_roots` (default: certifi's bundle), fetched within `cert_timeout`, cached.
    `digest_md5`: base64(md5(`parts` joined)) found at `digest` (SF, J&T). `static_key`:
    `header` equals `secret`. Public keys and certificates are PEM files; secrets come
    only from the environment.
    """

    scheme: Scheme
    header: HeaderName | None = None
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field("", max_length=32)
    tolerance: DurationMs = Field(300_000, ge=1000)
    url: str | None = Field(None, min_length=1, max_length=2048)
    public_keys: dict[str, Path] = {}
    public_key: Path | None = None
    webhook_id: str | None = Field(None, min_length=1, max_length=128)
    certificate: Path | None = None
    trust_roots: Path | None = None
    cert_timeout: DurationMs = Field(5_000, ge=100, le=60_000)
    digest: str | None = None
    parts: tuple[str, ...] = ("body", "key")
    urlencode: bool = False

    @field_validator("url", "public_key", "webhook_id", "certificate", "trust_roots", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """A blank variable (a compose `${VAR:-}` default) names nothing."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("public_keys", mode="after")
    @classmethod
    def _serials(cls, value: dict[str, Path]) -> dict[str, Path]:
        # Serials are hex; environment variable names come lower-cased.
        return {serial.upper(): _pem_file(path, "public key") for serial, path in value.items()}

    @field_validator("public_key", "certificate", mode="after")
    @classmethod
    def _key_file(cls, value: Path | None) -> Path | None:
        return None if value is None else _pem_file(value, "public key or certificate")

    @field_validator("trust_roots", mode="after")
    @classmethod
    def _roots_file(cls, value: Path | None) -> Path | None:
        return None if value is None else _pem_file(value, "trust roots")

    @field_validator("digest", "parts", mode="after")
    @classmethod
    def _places(cls, value: Any) -> Any:
        for place in (value,) if isinstance(value, str) else value or ():
            if not _DIGEST_PLACE.match(place):
                raise ValueError(f"{place!r}: a place is body, key, header:<name> or field:<name>")
        return value

    @model_validator(mode="after")
    def _scheme_needs(self) -> WebhookAuth:
        needs = {
            "hmac": ("header",),
            "timestamped": ("header",),
            "static_key": ("header",),
            "hmac_url_body": ("url",),
            "digest_md5": ("digest",),
        }.get(self.scheme, ())
        for name in needs:
            if getattr(self, name) is None:
                raise ValueError(f"scheme {self.scheme} needs {name}")
        if self.url is not None and urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError("url: the callback URL as the provider calls it, http(s)://...")
        return self


class DeliveryIdSpec(_Strict):
    """Where a provider puts the id its retries repeat: a dotted path in the signed
    payload (after decryption or form decoding), or a header the scheme signs.

    A header no signature covers is refused (checked with the source's scheme): a forger
    could re-send a captured body under new ids and make duplicates. With neither (or
    nothing there in a request), a hash of the body stands in.
    """

    body: str | None = Field(None, min_length=1)
    header: HeaderName | None = None


class WebhookAnswer(_Strict):
    """One kind of answer in the provider's own form.

    `status`: None keeps the gateway's status (401, 415, 503...). `body`: a string sent
    as is, a mapping sent as JSON, or None for the gateway's own JSON; `{error}` and
    `{detail}` in it are replaced by the refusal's reason and sentence.
    """

    status: int | None = Field(None, ge=200, le=599)
    content_type: str = Field("application/json", min_length=1, max_length=128)
    body: str | dict[str, str] | None = None

    @model_validator(mode="after")
    def _no_content(self) -> WebhookAnswer:
        if self.status == 204 and self.body not in (None, ""):
            raise ValueError("status 204 has no body")
        return self


class WebhookAnswers(_Strict):
    """What the provider is answered: `accepted` (stored), `duplicate` (a redelivery of
    a stored delivery), `refused` (permanent 4xx: signature, media type, size) and
    `retry_later` (not stored: 503, 409, 429, 408). Unset: the gateway's JSON."""

    accepted: WebhookAnswer | None = None
    duplicate: WebhookAnswer | None = None
    refused: WebhookAnswer | None = None
    retry_later: WebhookAnswer | None = None

    @model_validator(mode="after")
    def _acks_are_2xx(self) -> WebhookAnswers:
        for kind in ("accepted", "duplicate"):
            answer = getattr(self, kind)
            if answer is not None and answer.status is not None and answer.status >= 300:
                raise ValueError(f"{kind}.status: an acknowledgement is 2xx")
        for kind in ("refused", "retry_later"):
            answer = getattr(self, kind)
            if answer is not None and answer.status is not None and answer.status < 400:
                raise ValueError(f"{kind}.status: a refusal is 4xx or 5xx")
        return self


class RateLimit(_Strict):
    """A token bucket: `rate` requests per second on average, `burst` at once.

    Per source and for the whole gateway: `--processes N` gives each process 1/N.
    """

    rate: float = Field(2000.0, gt=0)
    burst: int = Field(4000, ge=1)


class WebhookSource(_Strict):
    """One source the gateway takes webhooks for (`POST /webhooks/<source>`).

    `secret` comes only from the environment
    (ORDERGUARD__GATEWAY__SOURCES__<SOURCE>__SECRET) and is never printed; a source
    whose scheme lacks its secret or key files is refused (503 at its endpoint), never
    taken unsigned. `body`: json, or form (application/x-www-form-urlencoded, in the
    charset the form's `charset` field names, else the Content-Type's, else UTF-8).
    `retry_horizon`: how long the provider retries a delivery, so how long its id is
    remembered to acknowledge a redelivery without producing it again.
    """

    auth: WebhookAuth
    secret: SecretStr | None = None
    body: Literal["json", "form"] = "json"
    answers: WebhookAnswers = WebhookAnswers()
    delivery_id: DeliveryIdSpec = DeliveryIdSpec()
    retry_horizon: DurationMs = Field(3 * 86_400_000, ge=1000)
    rate_limit: RateLimit | None = None  # default: gateway.rate_limit

    @field_validator("secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty or blank variable (a compose `${VAR:-}` default) is no secret: HMAC
        with it would let anyone sign, so the source is refused like an unset one."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _consistent(self) -> WebhookSource:
        header = self.delivery_id.header
        if header is not None and header.lower() not in SIGNED_HEADERS.get(self.auth.scheme, ()):
            raise ValueError(
                f"delivery_id.header: no signature covers a header such as {header} under "
                f"scheme {self.auth.scheme}, so an id taken from it could be forged; give the "
                "id's path in the signed body (body: ...), or nothing for a body hash"
            )
        secret = self.secret.get_secret_value().encode() if self.secret else None
        if self.auth.scheme == "wechatpay_v3" and secret is not None and len(secret) != 32:
            raise ValueError("secret: the APIv3 key (wechatpay_v3) is 32 bytes")
        if self.auth.scheme == "alipay_rsa2" and self.body != "form":
            raise ValueError("body: alipay_rsa2 signs a form, so body: form")
        fields = [p for p in (self.auth.digest or "", *self.auth.parts) if p.startswith("field:")]
        if self.auth.scheme == "digest_md5" and fields and self.body != "form":
            raise ValueError("body: a digest over form fields needs body: form")
        return self

    def missing(self) -> str | None:
        """What the scheme needs and this source lacks (its requests are refused), or None."""
        auth = self.auth
        if auth.scheme in SECRET_SCHEMES and self.secret is None:
            return "secret"
        if auth.scheme == "wechatpay_v3" and not auth.public_keys:
            return "auth.public_keys"
        if auth.scheme == "alipay_rsa2" and auth.public_key is None:
            return "auth.public_key"
        if auth.scheme == "paypal" and auth.webhook_id is None:
            return "auth.webhook_id"
        return None


class Gateway(_Strict):
    """`orderguard gateway`: signed webhooks over HTTP into the input topics.

    A request is answered 2xx only after Kafka acknowledged its envelope; a broker
    slower than `produce_timeout` gets 503 so that the provider retries. Redelivered
    ids are remembered in Redis (`redis.url`); a Redis slower than
    `idempotency_timeout`, or none, lets requests through (at least once, counted).
    """

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    metrics_port: int = Field(9474, ge=0, le=65535)  # process k serves on port + k; 0: none
    max_body: int = Field(507_904, ge=1, le=64 * 1_048_576)  # bytes
    produce_timeout: DurationMs = Field(5_000, ge=100)
    idempotency_timeout: DurationMs = Field(250, ge=1)
    idle_timeout: DurationMs = Field(30_000, ge=100)
    """A connection must send a complete request head within this of opening or of its
    last answer (idle keep-alive and slow headers alike), else it is closed."""
    body_timeout: DurationMs = Field(30_000, ge=100)
    """A body not received in full within this of its request head: 408, connection closed."""
    max_connections: int = Field(1024, ge=1, le=1_000_000)
    """Per process; over it, the longest-open connection without a request in progress is
    closed to make room (the newest is refused only if every one is busy)."""
    rate_limit: RateLimit = RateLimit()
    sources: dict[str, WebhookSource] = {}


# ---------------------------------------------------------------- operator commands
MIN_CONTROL_KEY = 16
"""Characters a control key must have at least: a short key is guessed, and signs anything."""


def _strong_key(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value().strip()) < MIN_CONTROL_KEY:
        raise ValueError(f"a control key needs at least {MIN_CONTROL_KEY} characters")
    return value


ControlKey = Annotated[SecretStr, AfterValidator(_strong_key)]


class Control(_Strict):
    """Who may command the pipeline through the control topic (`schemas.commands`).

    `keys`: HMAC-SHA256 keys by name, only from the environment
    (ORDERGUARD__CONTROL__KEYS__<NAME>, names in lower case): a command is applied only
    if signed by one of them, and its decision names the key. Several at once let a key
    be rotated: add the new one, move the operators to it, then remove the old one.
    `signing_key`: which of `keys` `orderguard breaker force` / `hold release` sign with
    (needed only when more than one is set). `tolerance`: how far a command's
    `received_at` may be behind the pipeline's ingestion clock (older: stale). `remember`:
    command ids kept per applying step, those within `tolerance`, to refuse a replay.
    """

    keys: dict[str, ControlKey] = {}
    signing_key: str | None = None
    tolerance: DurationMs = Field(300_000, ge=1000)
    remember: int = Field(10_000, ge=100)

    @model_validator(mode="after")
    def _known_signing_key(self) -> Control:
        if self.signing_key is not None and self.signing_key not in self.keys:
            names = ", ".join(sorted(self.keys)) or "none"
            raise ValueError(
                f"control.signing_key: no key {self.signing_key!r} in control.keys "
                f"(the environment has: {names})"
            )
        return self


# ---------------------------------------------------------------- channels, carriers
class ChannelSpec(_Strict):
    """A sales channel. `canonical_id` (README "Identity"): whose id names the channel's
    orders in output records. `oms` (the default): the OMS's global id, the channel's own
    id a reference its OMS events link. `channel`: `<channel>:<its own id>`, for a
    merchant whose channel orders may never reach an OMS on the feed; an OMS event with
    `platform_order_id` then names the order by that and links its global id as
    `oms:<global id>`, which any other event naming the global id waits for."""

    code: str = Field(pattern=r"^[A-Z]{2,4}$")
    aliases: list[str] = []
    canonical_id: Literal["oms", "channel"] = "oms"
    thresholds: ThresholdOverride = ThresholdOverride()


def _compiles(v: str) -> str:
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from e
    return v


Regex = Annotated[str, AfterValidator(_compiles)]


class CarrierSpec(_Strict):
    pattern: Regex
    backup: str | None = None
    aliases: list[str] = []
    thresholds: ThresholdOverride = ThresholdOverride()


# ---------------------------------------------------------------- the source registry
Stream = Literal["orders", "payments", "tracking"]
Kind = Literal["channel", "oms", "wms", "gateway", "carrier", "telemetry"]
TimeFormat = Literal["rfc3339", "naive", "iso8601", "epoch_s", "epoch_ms"]


def _check_claim(value: str | None) -> str | None:
    if value is None:
        return None
    parts = conditional(value) or (value,)
    for part in parts:
        if part not in CLAIMABLE:
            raise ValueError(f"{part!r} is not a canonical status")
    return value


Claim = Annotated[str | None, BeforeValidator(_check_claim)]


class Refinement(_Strict):
    """A second field that sharpens a code: DHL `transit` + text "OUT_FOR_DELIVERY"."""

    path: str
    match: Regex  # searched case-insensitively; a non-string value as JSON (true, 3)
    status: Claim
    when: list[str] = []  # only for these raw codes (empty: any)


class StatusField(_Strict):
    """One status-bearing field and its map to canonical claims.

    `map` keys are raw values as strings; a null value means "known, says nothing"
    (PDD refund_status 1). `present` turns a field into a flag: Shopify's
    `cancelled_at` claims CANCELLED when non-null. A field listed as `optional`
    may be absent or null; any other absent status field is bad input.
    """

    path: str
    map: dict[str, Claim] = {}
    present: Claim = None
    optional: bool = False
    refine: list[Refinement] = []


class FieldPaths(_Strict):
    """Paths (first one present wins) to what the pipeline needs (`schemas.paths`)."""

    order_id: list[str] = []
    tracking_no: list[str] = []
    carrier: list[str] = []
    customer_id: list[str] = []
    channel: list[str] = []
    event_time: list[str] = []
    event_id: list[str] = []


class TelemetryPaths(_Strict):
    carrier: str = "carrier"
    operation: str = "operation"
    latency_ms: str = "latency_ms"
    ok: str = "ok"
    error: str = "error"


OMS = "oms"
"""The namespace of the OMS's own ids, the global id format (`TB2026012700123`)."""
Namespace = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class Identity(_Strict):
    """Which ids `fields.order_id` holds, and what to do with one that is not an order's.

    A value in the global-id format (or `REF-<global id>-<nn>`) is always the OMS's id.
    Any other value is an id in `namespace`: with `oms` (the default) it is bad input
    (`invalid_order_id`); with another namespace (a channel's `taobao`, a merchant
    reference's `stripe_pi`...) the event names its order by `ref` = `<namespace>:<id>`,
    which the reference index resolves. `strip`: a regular expression removed (once)
    before the id is read, such as a payment attempt suffix `-[0-9]{1,3}$`; `pattern`:
    what a valid id of the namespace looks like (full match; default: any). `fallback`:
    `tracking` ignores an id that is not valid when the event has a tracking number
    (carriers' merchant-defined order refs, the default for carriers); `none` dead-letters it.
    """

    namespace: Namespace = OMS
    strip: Regex | None = None
    pattern: Regex | None = None
    fallback: Literal["tracking", "none"] | None = None


class Link(_Strict):
    """A reference this event ties to its order: `<namespace>:<first present id path>`.

    `namespace_from: channel` takes the event's resolved channel (the OMS's `channel` +
    `platform_order_id`); `namespace` names it outright (`stripe_pi`).
    """

    id: list[str] = Field(min_length=1)
    namespace: Namespace | None = None
    namespace_from: Literal["channel"] | None = None

    @model_validator(mode="after")
    def _one_namespace(self) -> Link:
        if (self.namespace is None) == (self.namespace_from is None):
            raise ValueError("a link names exactly one of `namespace` or `namespace_from`")
        return self


Decode = Literal["json", "xml"]


class ZoneFrom(_Strict):
    """The zone of offset-less times per event, from a field: AfterShip's checkpoint
    country, DHL's event `countryCode`. A value not in `map` (or absent) keeps the
    source's `zone`."""

    path: str
    map: dict[str, str] = Field(min_length=1)  # field value -> IANA zone

    @field_validator("map")
    @classmethod
    def _zones_exist(cls, v: dict[str, str]) -> dict[str, str]:
        for zone in v.values():
            _zone(zone)
        return v


class _Overridable(_Strict):
    """The keys a message kind may override (see `KindSpec`)."""

    each: str | None = None
    time_format: TimeFormat | None = None
    zone: str | None = None
    zone_from: ZoneFrom | None = None
    fields: FieldPaths = FieldPaths()
    statuses: list[StatusField] = []
    signals: dict[str, str] = {}  # raw status -> signal, e.g. RESHIP_REQUESTED: reship
    outcomes: dict[str, Literal["success", "failure"]] = {}  # gateways: success-rate input
    envelope_time: list[str] = []  # raw statuses timed by received_at (WeChat REFUND)
    identity: Identity = Identity()
    links: list[Link] = []


class KindSpec(_Overridable):
    """One kind of message of a source that sends several (Stripe `charge.*`, Shopee code 4).

    Selected by `when` (values of the source's `kind_by` path, `*` matching any run of
    characters) or by `present` (a path whose value is not null: for a provider whose
    kind is not in the body). The keys set here replace the source's, except `fields`
    and `identity`, merged key by key.
    """

    when: list[str] = []
    present: str | None = None


class SourceSpec(_Overridable):
    """One entry of the source registry; its syntax is documented at the top of
    ops/sources.yaml (paths, `each`, `decode`, `kinds`, `identity`, `links`, `zone_from`)."""

    stream: Stream
    kind: Kind
    channel: str | None = None  # channel sources: which channel they are
    carrier: str | None = None  # single-carrier tracking sources
    time_format: TimeFormat | None = None  # required (here or in every kind)
    zone: str = "UTC"
    telemetry: TelemetryPaths | None = None
    decode: dict[str, Decode] = {}  # path -> json | xml: text decoded before paths are read
    kind_by: str | None = None  # the discriminator path of `kinds`
    kinds: dict[str, KindSpec] = {}

    @field_validator("zone")
    @classmethod
    def _zone_exists(cls, v: str) -> str:
        return _zone(v)

    @model_validator(mode="after")
    def _complete(self) -> SourceSpec:
        if self.kind == "telemetry":
            if self.time_format is None:
                raise ValueError("a source needs `time_format`")
            if self.telemetry is None:
                raise ValueError("a telemetry source needs `telemetry:` field paths")
            if self.each or self.kinds or self.decode:
                raise ValueError("a telemetry source has no `each`, `kinds` or `decode`")
            return self
        for path in self.decode:
            if "[*]" in path:
                raise ValueError(f"decode.{path}: decoded fields are named without [*]")
            _check_path(f"decode.{path}", path, None)
        if self.kinds:
            if self.kind_by is not None:
                _check_path("kind_by", self.kind_by, None)
            for name, k in self.kinds.items():
                where = f"kinds.{name}"
                if not k.when and k.present is None:
                    raise ValueError(f"{where}: a kind needs `when` (values) or `present` (a path)")
                if k.when and self.kind_by is None:
                    raise ValueError(f"{where}.when: needs the source's `kind_by` path")
                if k.present is not None:
                    _check_path(f"{where}.present", k.present, None)
                try:
                    self.resolve(name)
                except ValidationError as e:
                    first = e.errors()[0]
                    key = ".".join(str(p) for p in first["loc"])
                    msg = first["msg"].removeprefix("Value error, ")
                    raise ValueError(f"{where}{'.' + key if key else ''}: {msg}") from None
            return self
        if self.kind_by is not None:
            raise ValueError("kind_by: names the discriminator of `kinds`, and there are none")
        if self.time_format is None:
            raise ValueError("a source needs `time_format`")
        if not self.statuses:
            raise ValueError("a source needs at least one entry in `statuses`")
        if not self.fields.order_id and not self.fields.tracking_no:
            raise ValueError("a source needs `fields.order_id` or `fields.tracking_no`")
        if not self.fields.event_time:
            raise ValueError("a source needs `fields.event_time`")
        # raw values named outside the maps must be in one, or they would never apply
        known = {raw for f in self.statuses for raw in f.map}
        named = [("signals", list(self.signals)), ("outcomes", list(self.outcomes))]
        named.append(("envelope_time", self.envelope_time))
        named += [(f"refine of {f.path}: when", r.when) for f in self.statuses for r in f.refine]
        for where, raws in named:
            for raw in raws:
                if raw not in known:
                    raise ValueError(f"{where}: {raw!r} is not a value of any status map")
        if self.each is not None:
            try:
                each_steps(self.each)
            except PathError as e:
                raise ValueError(f"each: {e}") from None
        for where, path in self._paths():
            _check_path(where, path, self.each)
        return self

    def _paths(self) -> list[tuple[str, str]]:
        """Every field path, with its key for messages."""
        out = [
            (f"fields.{key}", p) for key, paths in self.fields.model_dump().items() for p in paths
        ]
        for i, f in enumerate(self.statuses):
            out.append((f"statuses.{i}.path", f.path))
            out += [(f"statuses.{i}.refine.{j}.path", r.path) for j, r in enumerate(f.refine)]
        for i, link in enumerate(self.links):
            out += [(f"links.{i}.id", p) for p in link.id]
        if self.zone_from is not None:
            out.append(("zone_from.path", self.zone_from.path))
        return out

    def resolve(self, kind: str) -> SourceSpec:
        """The complete spec of one message kind: the source's keys, the kind's over them."""
        k = self.kinds[kind]
        base = self.model_dump(exclude={"kinds", "kind_by", "decode"}, exclude_unset=True)
        base.setdefault("stream", self.stream)
        base.setdefault("kind", self.kind)
        patch = k.model_dump(exclude={"when", "present"}, exclude_unset=True)
        for merged in ("fields", "identity"):
            if merged in patch:
                patch[merged] = {**base.get(merged, {}), **patch[merged]}
        return SourceSpec.model_validate({**base, **patch})


def _zone(v: str) -> str:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(v)
    except Exception as e:
        raise ValueError(f"unknown time zone {v!r}") from e
    return v


def _check_path(where: str, path: str, each: str | None) -> None:
    try:
        bind(path, each)
    except PathError as e:
        raise ValueError(f"{where}: {e}") from None


RefundClaim = Annotated[str, BeforeValidator(_check_claim)]


class Settings(BaseSettings):
    """Everything an SRE tunes. `orderguard config check FILE` validates it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    thresholds: Thresholds = Thresholds()
    breakers: Breakers = Breakers()
    retention: Retention = Retention()
    limits: Limits = Limits()
    pipeline: Pipeline = Pipeline()
    kafka: Kafka = Kafka()
    recovery: Recovery = Recovery()
    metrics: Metrics = Metrics()
    page: Page = Page()
    redis: RedisView = RedisView()
    gateway: Gateway = Gateway()
    control: Control = Control()
    channels: dict[str, ChannelSpec] = {}
    carriers: dict[str, CarrierSpec] = {}
    refund_order: dict[str, RefundClaim] = {}
    refund_order_default: RefundClaim = "REFUND_REQUESTED"
    sources: dict[str, SourceSpec] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # the environment overrides the file

    @model_validator(mode="after")
    def _cross_refs(self) -> Settings:
        for name, c in self.carriers.items():
            if c.backup is not None and c.backup not in self.carriers:
                raise ValueError(f"carriers.{name}.backup: unknown carrier {c.backup!r}")
        for name, s in self.sources.items():
            if s.channel is not None and s.channel not in self.channels:
                raise ValueError(f"sources.{name}.channel: unknown channel {s.channel!r}")
            if s.carrier is not None and s.carrier not in self.carriers:
                raise ValueError(f"sources.{name}.carrier: unknown carrier {s.carrier!r}")
        for name in self.gateway.sources:
            if name not in self.sources:
                raise ValueError(f"gateway.sources.{name}: not a source of the registry")
        kafka_max = self.kafka.message_max_bytes()
        if self.limits.record_max() > kafka_max:
            raise ValueError(
                f"limits.output_record ({self.limits.output_record}) + limits.id + "
                f"{RECORD_OVERHEAD} exceeds kafka.client message.max.bytes ({kafka_max}): "
                "the producer would refuse the largest record"
            )
        if self.retention.pending_tracking_max_bytes < self.limits.dead_letter_raw + 1024:
            raise ValueError(
                "retention.pending_tracking_max_bytes is smaller than limits.dead_letter_raw "
                "+ 1024: one scan (the prefix its dead letter embeds) could not wait for its order"
            )
        if self.gateway.sources and (
            self.gateway.max_body + ENVELOPE_RESERVE > self.kafka.message_max_bytes()
        ):
            raise ValueError(
                f"gateway.max_body ({self.gateway.max_body}) plus {ENVELOPE_RESERVE} bytes of "
                f"envelope exceeds kafka.client message.max.bytes "
                f"({self.kafka.message_max_bytes()}): a body that size could never be stored; "
                f"lower gateway.max_body or raise message.max.bytes (and the broker's limit)"
            )
        if self.gateway.sources and (
            self.gateway.max_body + ENVELOPE_RESERVE > self.limits.input_record
        ):
            raise ValueError(
                f"gateway.max_body ({self.gateway.max_body}) plus {ENVELOPE_RESERVE} bytes of "
                f"envelope exceeds limits.input_record ({self.limits.input_record}): the "
                "gateway would store (202) a webhook the pipeline dead-letters as too_large; "
                "lower gateway.max_body or raise limits.input_record"
            )
        return self

    def order_threshold(self, name: str, channel: str | None, carrier: str | None) -> int:
        """A per-order threshold in ms: the carrier's override, else the channel's, else global."""
        for spec in (self.carriers.get(carrier or ""), self.channels.get(channel or "")):
            if spec is not None:
                v = getattr(spec.thresholds, name)
                if v is not None:
                    return int(v)
        return int(getattr(self.thresholds, name))


class ConfigError(Exception):
    """A configuration problem, already phrased for a person: file, key, what is wrong."""


def _format(err: ValidationError, path: Path) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        env = ENV_PREFIX + "__".join(str(p).upper() for p in e["loc"])
        where = f"{path}: {key}"
        if env in os.environ:
            where += f" (set by the environment variable {env})"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _no_secrets_in_file(data: dict[str, Any], path: Path) -> None:
    """Webhook secrets and control keys come only from the environment: a file is
    copied, committed, shown."""
    control = data.get("control")
    keys = control.get("keys") if isinstance(control, dict) else None
    if keys:
        name = str(next(iter(keys))).upper() if isinstance(keys, dict) else "<NAME>"
        raise ConfigError(
            f"{path}: control.keys: a key is not read from the file; "
            f"set {ENV_PREFIX}CONTROL__KEYS__{name}"
        )
    gateway = data.get("gateway")
    sources = gateway.get("sources") if isinstance(gateway, dict) else None
    for name, spec in (sources or {}).items() if isinstance(sources, dict) else ():
        if isinstance(spec, dict) and "secret" in spec:
            env = f"{ENV_PREFIX}GATEWAY__SOURCES__{str(name).upper()}__SECRET"
            raise ConfigError(
                f"{path}: gateway.sources.{name}.secret: a secret is not read from the file; "
                f"set {env}"
            )


def load_settings(path: str | Path | None = None) -> Settings:
    """Read, merge (the sources file, the environment) and validate the configuration."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = _read_yaml(path)
    sources = data.get("sources")
    source_path = path
    if isinstance(sources, str):
        source_path = (path.parent / sources).resolve()
        data["sources"] = _read_yaml(source_path)
    _no_secrets_in_file(data, path)
    try:
        return Settings(**data)
    except ValidationError as e:
        shown = source_path if any(err["loc"][:1] == ("sources",) for err in e.errors()) else path
        raise ConfigError(_format(e, shown)) from None
    except ValueError as e:  # raised by model validators outside field context
        raise ConfigError(f"{path}: {e}") from None
