"""A read-only operator page: live counts, alerts, breakers, and an order lookup by id.

No state of its own: each request reads the pipeline's /metrics (counts, alerts,
breakers, holds) or the Redis order view (`dataflows.lookup.read_order`). The demo
serves it on a free loopback port; `orderguard run` serves it on `page.port` when set.
Nothing on it changes anything: the operator commands stay on the command line.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections import defaultdict
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from dataflows.lookup import ViewUnreachable, read_order
from schemas.config import RedisView


def state(metrics_url: str, timeout: float = 1.0) -> dict[str, Any]:
    """What the page shows, from one scrape of the pipeline's metrics."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {"answered": False}
    totals: dict[str, float] = defaultdict(float)
    alerts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    dead: dict[str, float] = defaultdict(float)
    breakers: list[dict[str, str]] = []
    parts = [0, 0]
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name in ("orderguard_input_records_total", "orderguard_corrections_total"):
                totals[name.removeprefix("orderguard_").removesuffix("_total")] += value
            elif name == "orderguard_customer_holds":
                totals["holds"] = value
            elif name == "orderguard_alerts_total":
                alerts[labels["type"]][labels["state"]] += value
            elif name == "orderguard_open_order_alerts":
                alerts[labels["type"]]["open"] += value
            elif name == "orderguard_dead_letters_total":
                dead[labels["reason"]] += value
            elif name == "orderguard_breaker_state" and value == 1:
                breakers.append({k: labels[k] for k in ("breaker", "key", "state")})
            elif name == "orderguard_input_caught_up":
                parts[0] += int(value)
                parts[1] += 1
    return {
        "answered": True,
        "events_in": int(totals["input_records"]),
        "corrections": int(totals["corrections"]),
        "holds": int(totals["holds"]),
        "caught_up": f"{parts[0]}/{parts[1]}",
        "alerts": {t: {k: int(v) for k, v in a.items()} for t, a in sorted(alerts.items())},
        "dead_letters": {k: int(v) for k, v in sorted(dead.items())},
        "breakers": sorted(breakers, key=lambda b: (b["breaker"], b["key"])),
    }


def make_app(metrics_url: str, view: RedisView) -> web.Application:
    async def index(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def api_state(_: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(state, metrics_url))

    async def api_order(request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"].strip()
        if view.url is None:
            return web.json_response({"error": "no order view (redis.url)"}, status=503)
        try:
            found = await asyncio.to_thread(read_order, view, order_id)
        except ViewUnreachable as e:
            return web.json_response({"error": str(e)}, status=503)
        if found is None:
            return web.json_response({"error": f"order {order_id} is not in the view"}, status=404)
        return web.json_response({**found.order, "timeline": found.timeline})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/api/order/{order_id}", api_order)
    return app


class PageError(RuntimeError):
    """The page cannot be served (its port is taken, or there are no metrics to read)."""


class PageServer:
    """The page on host:port, in a daemon thread with its own event loop."""

    def __init__(self, metrics_url: str, view: RedisView, host: str, port: int) -> None:
        self._app = make_app(metrics_url, view)
        self.url = f"http://{host}:{port}/"
        self._host, self._port = host, port
        self._started = threading.Event()
        self._error: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

    def start(self) -> PageServer:
        threading.Thread(target=self._run, name="operator-page", daemon=True).start()
        self._started.wait(10)
        if self._error:
            raise PageError(f"cannot serve the operator page on {self.url}: {self._error[0]}")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self._app, access_log=None)
        try:
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self._host, self._port)
            self._loop.run_until_complete(site.start())
        except OSError as e:
            self._error.append(e)
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orderguard</title>
<style>
body{font:15px system-ui,sans-serif;margin:24px;color:#1d2330;background:#f5f6f8}
h1{font-size:20px;margin:0 0 16px}h2{font-size:15px;margin:0 0 8px;color:#556}
.grid{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin-bottom:16px}
.card,.panel{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 3px #0002}
.card b{display:block;font-size:26px}.card span{color:#667}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px;margin-bottom:16px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 6px}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.OPEN{color:#b00020;font-weight:600}.HALF_OPEN{color:#b36b00}.CLOSED{color:#18794e}
#down{color:#b00020}
</style></head><body>
<h1>orderguard <small id="down"></small></h1>
<div class="grid">
 <div class="card"><b id="events_in">-</b><span>events in</span></div>
 <div class="card"><b id="corrections">-</b><span>corrections</span></div>
 <div class="card"><b id="holds">-</b><span>customers on hold</span></div>
 <div class="card"><b id="caught_up">-</b><span>partitions caught up</span></div>
</div>
<div class="cols">
 <div class="panel"><h2>alerts by type</h2><table>
  <thead><tr><th>type</th><th>firing</th><th>resolved</th><th>open now</th></tr></thead>
  <tbody id="alerts"></tbody></table></div>
 <div class="panel"><h2>breakers</h2><table><tbody id="breakers"></tbody></table>
  <h2 style="margin-top:12px">dead letters</h2><table><tbody id="dead"></tbody></table></div>
</div>
<div class="panel"><h2>order lookup</h2>
 <form id="lookup"><input id="order" size="28" placeholder="order id">
 <button>look up</button></form><div id="result"></div></div>
<script>
const fmt = n => (n ?? 0).toLocaleString("en-US");
const esc = s => String(s ?? "-").replace(/[&<>"]/g, c => "&#" + c.charCodeAt(0) + ";");
const rows = (list, cells) =>
  list.map(x => "<tr>" + cells(x) + "</tr>").join("") || "<tr><td>none yet</td></tr>";
async function refresh() {
  try {
    const s = await (await fetch("/api/state")).json();
    document.getElementById("down").textContent = s.answered ? "" : "pipeline not answering";
    if (!s.answered) return;
    for (const k of ["events_in", "corrections", "holds"])
      document.getElementById(k).textContent = fmt(s[k]);
    document.getElementById("caught_up").textContent = s.caught_up;
    document.getElementById("alerts").innerHTML = rows(Object.entries(s.alerts), ([t, a]) =>
      `<td>${esc(t)}</td><td class="n">${fmt(a.firing)}</td>` +
      `<td class="n">${fmt(a.resolved)}</td><td class="n">${fmt(a.open)}</td>`);
    document.getElementById("breakers").innerHTML = rows(s.breakers, b =>
      `<td>${esc(b.breaker)}</td><td>${esc(b.key)}</td><td class="${esc(b.state)}">` +
      `${esc(b.state)}</td>`);
    document.getElementById("dead").innerHTML = rows(Object.entries(s.dead_letters),
      ([r, n]) => `<td>${esc(r)}</td><td class="n">${fmt(n)}</td>`);
  } catch (e) { document.getElementById("down").textContent = "page server not answering"; }
}
async function lookup(id) {
  const r = await fetch("/api/order/" + encodeURIComponent(id));
  const o = await r.json();
  const out = document.getElementById("result");
  if (!r.ok) { out.innerHTML = `<p id="notfound">${esc(o.error)}</p>`; return; }
  const facts = [["order", o.order_id], ["status", o.status],
    ["reported status", o.reported_status], ["mismatch", o.mismatch ? "YES" : "no"],
    ["customer", o.customer_id], ["channel", o.channel], ["carrier", o.carrier],
    ["open alerts", (o.open_alerts || []).map(a => a.type).join(", ") || "none"]];
  out.innerHTML = `<table id="order-facts">${rows(facts,
      ([k, v]) => `<th>${esc(k)}</th><td>${esc(v)}</td>`)}</table>` +
    `<h2 style="margin-top:12px">timeline</h2><table>${rows(o.timeline, e =>
      `<td>${esc(e.event_time)}</td><td>${esc(e.stream)}</td>` +
      `<td>${esc(e.source)}</td><td>${esc(e.kind)}</td><td>${esc(e.raw_status)}</td>`)}</table>`;
}
document.getElementById("lookup").addEventListener("submit", e => {
  e.preventDefault(); lookup(document.getElementById("order").value.trim());
});
const wanted = new URLSearchParams(location.search).get("order");
if (wanted) { document.getElementById("order").value = wanted; lookup(wanted); }
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
