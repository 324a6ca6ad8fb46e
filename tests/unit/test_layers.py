"""The layers import downwards only: schemas <- state <- connectors, dataflows.

`connectors/` and `dataflows/` share what both need (output records, topic names:
`state.encode`) from below; the dataflow's steps report metrics through an injected
observer, so none of them imports the metrics registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "schemas": ("state", "connectors", "dataflows"),
    "state": ("connectors", "dataflows"),
    "connectors": ("dataflows",),
}
STEPS = ("flow.py", "router.py", "messages.py", "observer.py", "stamp.py")


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_runs_up_the_layers(layer: str) -> None:
    up = [
        f"{path.relative_to(ROOT)} imports {mod}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for mod in sorted(imported(path))
        if mod.split(".")[0] in FORBIDDEN[layer]
    ]
    assert up == []


def test_the_steps_report_through_the_observer_not_the_metrics_registry() -> None:
    direct = [
        name
        for name in STEPS
        if any(m.startswith("connectors.metrics") for m in imported(ROOT / "dataflows" / name))
    ]
    assert direct == []
