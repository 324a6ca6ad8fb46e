"""Settings every test process (and every pipeline a test starts) shares."""

from __future__ import annotations

import os

# Pipelines started by tests run side by side (and beside a developer's own): none may
# take the fixed metrics port. Tests that check the endpoint set a free port themselves.
os.environ.setdefault("ORDERGUARD__METRICS__PORT", "0")
os.environ.setdefault("ORDERGUARD__GATEWAY__METRICS_PORT", "0")
