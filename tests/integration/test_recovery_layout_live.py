"""A recovery store keeps the input partition counts it was started with (issue 14).

Against the embedded broker (Tansu): a run on topics of 6 partitions records them,
a store that predates the record gets it on its next start, and a run on the same
recovery.dir with topics of 3 partitions is refused before it starts, in one line.
"""

from __future__ import annotations

import json

from dataflows.live import LAYOUT_FILE
from tests.integration.test_run_live import live_env, ok, orderguard

SIX = {"control": 1, "orders": 6, "payments": 6, "tracking": 6}


def test_a_store_refuses_input_topics_with_another_partition_count(broker, tmp_path):
    rdir = tmp_path / "recovery"
    env = live_env(broker.bootstrap, rdir)
    env["ORDERGUARD__KAFKA__PARTITIONS"] = "6"
    ok(orderguard(env, "simulate", "--orders", "5", "--to-kafka"))
    assert "recovery initialized" in ok(orderguard(env, "run", "--exit-when-caught-up"))
    path = rdir / LAYOUT_FILE
    recorded = json.loads(path.read_text())
    assert recorded["input_partitions"] == SIX
    assert recorded["partitioner"] == "consistent_random"

    # a store written before the counts were kept: recorded on its next start
    older = {k: v for k, v in recorded.items() if k not in ("input_partitions", "partitioner")}
    path.write_text(json.dumps(older))
    assert "recovery resumed from" in ok(orderguard(env, "run", "--exit-when-caught-up"))
    assert json.loads(path.read_text()) == recorded

    # same recovery.dir, new input topics with 3 partitions each
    other = live_env(broker.bootstrap, rdir)
    other["ORDERGUARD__KAFKA__PARTITIONS"] = "3"
    proc = orderguard(other, "run", "--exit-when-caught-up")
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(rdir) in err and "kafka.partitions" in err, err
    assert "control=1, orders=6, payments=6, tracking=6; this start has " in err, err
    assert "control=1, orders=3, payments=3, tracking=3" in err, err
    assert "start from a new recovery.dir, or restore the old topic layout" in err, err
    assert json.loads(path.read_text()) == recorded  # the record is not overwritten
