"""Deterministic traffic simulator: orderguard's three streams as the integrations see them.

`generate(orders=..., seed=..., start=...)` yields replay envelopes sorted by
received_at; `write_jsonl` writes them; `INCIDENTS` names the switches that break a
normal day in documented ways, and `incident_windows` says when the windowed ones hit.
"""

from sim.generator import generate, write_jsonl
from sim.incidents import INCIDENTS, incident_windows

__all__ = ["INCIDENTS", "generate", "incident_windows", "write_jsonl"]
