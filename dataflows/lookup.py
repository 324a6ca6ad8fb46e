"""`orderguard lookup ID`: one order as the Redis view holds it, for a person or a machine.

ID is any id the order is known by: its canonical id (the OMS's, or `<channel>:<id>`
for a channel in `canonical_id: channel`), a namespaced reference (`taobao:3456…`,
`tracking:SF…`, `oms:PDD…`), a bare tracking number or a bare OMS id. One pipelined
round trip (GET the order, ZRANGE its timeline, GET the aliases the id may be), and a
second one when the id was an alias; the keys are those of `state.view`. Formatting is pure, so
it is tested without Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from schemas.config import OMS, RedisView
from state.reference_index import TRACKING


class ViewUnreachable(RuntimeError):
    """Redis could not be read; the message names the URL without its password."""


@dataclass
class OrderLookup:
    """The order's document and its timeline (oldest first), as stored."""

    order: dict[str, Any]
    timeline: list[dict[str, Any]]

    def as_json(self) -> bytes:
        return orjson.dumps({**self.order, "timeline": self.timeline}, option=orjson.OPT_INDENT_2)


def aliases(name: str) -> list[str]:
    """The references `name` may be, most specific first: itself, else a tracking number,
    else a global id that a channel-named order links as `oms:<id>` (README "Identity").
    A canonical id with a `:` (`pinduoduo:260127-…`) is found as the order itself."""
    return [name] if ":" in name else [name, TRACKING + name, f"{OMS}:{name}"]


def read_order(cfg: RedisView, name: str) -> OrderLookup | None:
    """The view of the order known by `name`, or None when the view holds none."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from connectors.redis_server import _redacted

    assert cfg.url is not None
    prefix = cfg.key_prefix
    client = redis.Redis.from_url(cfg.url, retry=Retry(NoBackoff(), 0), **cfg.client_options())

    def read(order_id: str, refs: list[str]) -> list:
        pipe = client.pipeline(transaction=False)
        pipe.get(f"{prefix}order:{order_id}")
        pipe.zrange(f"{prefix}order:{order_id}:timeline", 0, -1)
        for ref in refs:
            pipe.get(f"{prefix}ref:{ref}")
        return pipe.execute()

    try:
        doc, members, *found = read(name, aliases(name))
        order_id = next((oid for oid in found if oid is not None), None)
        if doc is None and order_id is not None:
            doc, members = read(order_id.decode(), [])
    except (redis.RedisError, OSError) as e:
        raise ViewUnreachable(f"cannot read the order view at {_redacted(cfg.url)}: {e}") from None
    finally:
        client.close()
    if doc is None:
        return None
    return OrderLookup(orjson.loads(doc), [orjson.loads(m) for m in members])


def _when(iso: str | None) -> str:
    """2026-03-02T08:00:01.000Z -> 2026-03-02 08:00:01.000 (the labels say UTC)."""
    return iso.replace("T", " ").removesuffix("Z") if iso else "-"


def render(view: OrderLookup) -> str:
    """A readable table: the order's facts, its open alerts, then its timeline."""
    o = view.order
    ids = o.get("ids") or ()
    status = o["status"]
    if o.get("standard_status") and o["standard_status"] != status:
        status += f" (standard: {o['standard_status']})"
    rows = [
        ("order", o["order_id"]),
        ("status", status),
        ("reported status", o.get("reported_status") or "-"),
        ("mismatch", "YES" if o.get("mismatch") else "no"),
        ("customer", o.get("customer_id") or "-"),
        ("channel", o.get("channel") or "-"),
        ("carrier", o.get("carrier") or "-"),
        ("tracking numbers", ", ".join(o.get("tracking_numbers") or ()) or "-"),
        ("known as", ", ".join(i for i in ids if not i.startswith(TRACKING)) or "-"),
        ("version", str(o.get("version", "-"))),
        ("last event (UTC)", _when(o.get("last_event_at"))),
        ("updated (UTC)", _when(o.get("updated_at"))),
    ]
    alerts = o.get("open_alerts") or []
    if not alerts:
        rows.append(("open alerts", "none"))
    for i, a in enumerate(alerts):
        label = "open alerts" if i == 0 else ""
        rows.append((label, f"{a['type']} ({a['severity']}) since {_when(a.get('since'))} UTC"))
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k:<{width}}{v}" for k, v in rows]
    lines.append("")
    lines.append(f"timeline ({len(view.timeline)} events, by event time, UTC)")
    if view.timeline:
        table = [("event time", "source", "stream", "raw status → claims")]
        for e in view.timeline:
            claims = ", ".join(e.get("claims") or ()) or "(none)"
            table.append(
                (
                    _when(e.get("event_time")),
                    e["source"],
                    e["stream"],
                    f"{e['raw_status']} → {claims}",
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(3)]
        for *cells, change in table:
            padded = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            lines.append(f"{padded}  {change}")
    return "\n".join(lines)
