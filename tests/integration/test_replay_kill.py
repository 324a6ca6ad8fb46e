"""`orderguard replay --processes 2 --recovery-dir`: kill -9 one process, run it again,
and get the records of one process.

The killed run must have completed some epochs (snapshots in the store) and not have
ended; the second run must resume from them (its execution starts past epoch 1, not
from scratch), and the outputs must be the 1-process replay's as sets, ids included:
records of the epoch in flight at the kill may be written twice, identically but for
`emitted_at`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from connectors.recovery_store import RecoveryStoreError, read_progress
from dataflows.live import RecoveryDirError
from dataflows.replay_recovery import IDENTITY_FILE, PARTS_DIR, prepare_replay_store
from schemas.config import load_settings
from tests.helpers import ROOT, run_cli, simulated_day
from tests.integration.test_determinism import outputs

INCIDENTS = (
    "lost_payment_callback",
    "channel_error_storm",
    "carrier_api_outage",
    "duplicate_webhooks",
    "stalled_tracking",
)
SNAPSHOT_INTERVAL = "0.3"
KILL_AT_EPOCH = 2
"""Kill once every worker of the run has completed epoch 1 (a snapshot to resume from)."""


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """A day of 2,500 orders (about 50k envelopes): long enough to be killed mid-run."""
    return simulated_day(tmp_path_factory.mktemp("in") / "day.jsonl", 2500, 11, INCIDENTS)


@pytest.fixture(scope="module")
def reference(recording, tmp_path_factory) -> dict[str, set[bytes]]:
    """The plain 1-process replay of the split recording (no recovery store)."""
    out = tmp_path_factory.mktemp("ref")
    proc = run_cli("replay", str(recording), "--out", str(out), "--processes", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = _as_sets(out)
    assert all(ref.values()), {t: len(v) for t, v in ref.items()}
    return ref


def _as_sets(out: Path) -> dict[str, set[bytes]]:
    """Each topic's records (wall-clock fields left out, ids kept) as a set."""
    return {
        t: {orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in docs}
        for t, docs in outputs(out).items()
    }


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(c) for c in f.read().split())


def _completed_epoch(rdir: Path) -> int:
    """The epoch every worker of the latest execution has completed up to (0: none)."""
    try:
        progress = read_progress(rdir)
    except RecoveryStoreError:  # being created
        return 0
    if not progress.exs:
        return 0
    ex = max(progress.exs)
    workers, start = progress.exs[ex]
    fronts = [progress.fronts.get((ex, w), start) for w in range(workers)]
    return min(fronts) - 1


def _kill_mid_run(
    cmd: list[str], rdir: Path, *, processes: int = 2
) -> subprocess.CompletedProcess[str] | None:
    """Run `cmd`, kill -9 one of its `processes` processes (1: the command itself) once
    epochs have completed; None when the run ended before that (the caller draws again)."""
    launcher = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = False
    try:
        deadline = time.monotonic() + 120
        while launcher.poll() is None and time.monotonic() < deadline:
            if rdir.is_dir() and _completed_epoch(rdir) >= KILL_AT_EPOCH - 1:
                victims = _children(launcher.pid) if processes > 1 else [launcher.pid]
                if len(victims) == processes and launcher.poll() is None:
                    os.kill(victims[-1], signal.SIGKILL)
                    killed = True
                break
            time.sleep(0.05)
    finally:
        out, err = launcher.communicate(timeout=120)
    done = subprocess.CompletedProcess(cmd, launcher.returncode, out, err)
    if not killed or launcher.returncode == 0:
        return None
    return done


def test_kill_9_of_a_one_process_replay_in_file_order_then_rerun_gives_its_records(
    recording, tmp_path
):
    """Without --processes the replay runs in the command's own process: kill that."""
    plain = tmp_path / "plain"
    proc = run_cli("replay", str(recording), "--out", str(plain))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for attempt in range(3):
        out, rdir = tmp_path / f"out-{attempt}", tmp_path / f"rec-{attempt}"
        cmd = [
            sys.executable, "-m", "dataflows.cli", "replay", str(recording), "--out", str(out),
            "--recovery-dir", str(rdir), "--snapshot-interval", SNAPSHOT_INTERVAL,
        ]  # fmt: skip
        killed = _kill_mid_run(cmd, rdir, processes=1)
        if killed is not None:
            break
    else:
        pytest.fail("in 3 attempts the replay ended before its kill")
    assert killed.returncode == -signal.SIGKILL
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from its last snapshot" in again.stdout, again.stdout
    progress = read_progress(rdir)
    assert progress.exs[max(progress.exs)][1] >= KILL_AT_EPOCH, progress.exs
    assert _as_sets(out) == _as_sets(plain)


def test_kill_9_of_one_replay_process_then_rerun_gives_the_records_of_one(
    recording, reference, tmp_path
):
    for attempt in range(3):  # a run can end before its kill lands: draw again
        out, rdir = tmp_path / f"out-{attempt}", tmp_path / f"rec-{attempt}"
        cmd = [
            sys.executable, "-m", "dataflows.cli", "replay", str(recording), "--out", str(out),
            "--processes", "2", "--recovery-dir", str(rdir),
            "--snapshot-interval", SNAPSHOT_INTERVAL,
        ]  # fmt: skip
        killed = _kill_mid_run(cmd, rdir)
        if killed is not None:
            break
    else:
        pytest.fail("in 3 attempts the 2-process replay ended before its kill")
    assert "killed by SIGKILL" in killed.stderr, killed.stderr[-2000:]
    assert "run the same command again to resume" in killed.stderr
    assert not (out / "corrected.jsonl").exists()  # the killed run merged nothing
    assert any((rdir / PARTS_DIR).glob("corrected.*.part"))  # it wrote some records

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from its last snapshot" in again.stdout, again.stdout
    progress = read_progress(rdir)
    last = max(progress.exs)
    assert last >= 1 and progress.exs[last][1] >= KILL_AT_EPOCH, progress.exs  # not from scratch

    got = _as_sets(out)
    for topic, want in reference.items():
        missing, extra = want - got[topic], got[topic] - want
        assert not missing and not extra, (
            f"{topic}: {len(missing)} missing, {len(extra)} extra after kill -9 and rerun; "
            f"e.g. {next(iter(missing or extra))[:300]!r}"
        )
    assert json.loads((rdir / IDENTITY_FILE).read_text())["complete"] is True
    assert not (rdir / PARTS_DIR).exists()
    rerun = run_cli(*cmd[3:])
    assert rerun.returncode != 0 and "completed" in rerun.stderr, rerun.stderr
    assert _as_sets(out) == got  # the refused rerun left the outputs alone


def test_a_store_of_another_input_or_mode_is_refused_naming_the_dir(recording, tmp_path):
    settings = load_settings()
    rdir = tmp_path / "rec"
    split = ["control:0", "orders:0"]
    store = prepare_replay_store(settings, rdir, [recording], split)
    assert not store.resumed
    other = tmp_path / "other.jsonl"
    other.write_bytes(recording.read_bytes()[:-200])

    def refused(inputs: list[Path], parts: list[str]) -> str:
        with pytest.raises(RecoveryDirError) as e:
            prepare_replay_store(settings, rdir, inputs, parts)
        assert str(rdir) in str(e.value)
        return str(e.value)

    assert "this run reads" in refused([other], split)
    changed = tmp_path / "same-name"
    changed.mkdir()
    copy = changed / recording.name
    copy.write_bytes(recording.read_bytes())
    assert "this run reads" in refused([copy], split)  # another name: other origins
    assert "one partition in file order" in refused([recording], ["replay"])
    assert prepare_replay_store(settings, rdir, [recording], split).dir == rdir  # same: fine


def test_a_changed_file_under_the_same_name_is_refused(tmp_path):
    settings = load_settings()
    rdir, path = tmp_path / "rec", tmp_path / "in.jsonl"
    path.write_bytes(b'{"stream": "orders"}\n')
    prepare_replay_store(settings, rdir, [path], ["replay"])
    path.write_bytes(b'{"stream": "orders"}\n{"stream": "orders"}\n')
    with pytest.raises(RecoveryDirError, match="has changed since"):
        prepare_replay_store(settings, rdir, [path], ["replay"])
