"""Replaying whole lives in the providers' real shapes through `orderguard replay`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.fixtures import providers as p
from tests.helpers import run_cli

Line = tuple[str, dict[str, Any], str]  # source, payload, received_at


@dataclass(frozen=True)
class Replayed:
    lives: dict[str, list[str]]  # each order's statuses, in the order they were emitted
    corrected: list[dict[str, Any]]
    dead: list[dict[str, Any]]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def replay_lives(
    src: Path, out: Path, lines: list[Line] | list[bytes], config: Path | None = None
) -> Replayed:
    """Envelopes (or ready envelope bytes) in received order into `src`, replayed to `out`."""
    raws = [x if isinstance(x, bytes) else p.envelope(x[0], x[1], received_at=x[2]) for x in lines]
    raws.sort(key=lambda raw: orjson.loads(raw)["received_at"])
    src.write_bytes(b"\n".join(raws) + b"\n")
    extra = ["--config", str(config)] if config is not None else []
    result = run_cli("replay", str(src), "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    corrected = read_jsonl(out / "corrected.jsonl")
    lives: dict[str, list[str]] = defaultdict(list)
    for rec in corrected:
        lives[rec["order_id"]].append(rec["status"])
    return Replayed(dict(lives), corrected, read_jsonl(out / "dead_letters.jsonl"))
