"""Cluster options, the partitions-vs-workers rule (bytewax#556) and the local launcher."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import pytest

from dataflows.cluster import (
    check_partitions,
    check_process_id,
    describe_exit,
    first_failure,
    local_addresses,
    parse_addresses,
    run_local_cluster,
    warn_if_unbalanced,
)


def test_addresses_parse_like_bytewax_and_refuse_what_is_not_host_port():
    assert parse_addresses("10.0.0.1:2101;10.0.0.2:2101") == ["10.0.0.1:2101", "10.0.0.2:2101"]
    assert parse_addresses(" a:1 ; b:2 ;") == ["a:1", "b:2"]
    for bad, why in {
        "": "no addresses",
        "a": "not host:port",
        ":1": "not host:port",
        "a:x": "not host:port",
        "a:70000": "not host:port",
        "a:1;a:1": "more than once",
    }.items():
        with pytest.raises(ValueError, match=why):
            parse_addresses(bad)
    check_process_id(1, ["a:1", "b:2"])
    with pytest.raises(ValueError, match=r"process id 2 is not in 0..1"):
        check_process_id(2, ["a:1", "b:2"])


def test_local_addresses_are_distinct_loopback_ports():
    addresses = local_addresses(4)
    assert len(set(addresses)) == 4 and all(a.startswith("127.0.0.1:") for a in addresses)


@pytest.mark.parametrize(
    ("partitions", "workers", "balanced", "fewest", "most", "suggested"),
    [
        (18, 1, True, 18, 18, 6),  # the default: 3 topics x 6
        (18, 2, True, 9, 9, 6),
        (18, 3, True, 6, 6, 6),
        (18, 6, True, 3, 3, 6),
        (18, 4, False, 4, 5, 8),  # 24 = 6 per worker
        (18, 5, False, 3, 4, 10),  # 30 = 6 per worker
        (18, 36, False, 0, 1, 12),  # more workers than partitions: 36 = 1 each
        (9, 2, False, 4, 5, 4),  # 3 topics x 3 over 2 workers -> 3 x 4
        (6, 2, True, 3, 3, 2),
    ],
)
def test_partitions_spread_evenly_only_when_the_workers_divide_them(
    partitions, workers, balanced, fewest, most, suggested
):
    check = check_partitions(partitions, workers)
    assert (check.balanced, check.fewest, check.most) == (balanced, fewest, most)
    assert check.suggested_per_topic == suggested
    assert (3 * suggested) % workers == 0 and suggested >= partitions // 3
    assert (check.message() == "") == balanced


def test_the_suggestion_never_lowers_the_configured_partition_count():
    assert check_partitions(18, 4, per_topic=6).suggested_per_topic == 8
    assert check_partitions(30, 4, per_topic=10).suggested_per_topic == 12
    assert check_partitions(18, 4, per_topic=9).suggested_per_topic == 12


def test_the_warning_names_the_figures_and_the_suggestion(caplog):
    with caplog.at_level(logging.WARNING, logger="orderguard.cluster"):
        assert warn_if_unbalanced(18, 2).balanced
        assert not caplog.records
        check = warn_if_unbalanced(18, 4, per_topic=6)
    assert not check.balanced
    (record,) = caplog.records
    text = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "18 input partitions over 4 workers" in text and "bytewax/bytewax#556" in text
    assert "kafka.partitions=8 (24 input partitions)" in text
    assert "workers read nothing" not in text
    assert "6 workers read nothing" in check_partitions(18, 24).message()


def test_bad_figures_are_refused():
    for args in ((0, 1), (1, 0)):
        with pytest.raises(ValueError):
            check_partitions(*args)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_launcher_gives_each_process_its_id_and_all_addresses(capsys):
    code = "import sys; print('caught up: 1,000 records delivered', sys.argv[1:])"
    result = run_local_cluster(3, lambda k, a: [*_py(code), str(k), a])
    assert result.returncodes == [0, 0, 0] and result.exit_code == 0
    assert result.records_delivered == 3000
    out = capsys.readouterr().out
    joined = result.lines[0][0].split("'")[3]
    assert len(parse_addresses(joined)) == 3
    for k in range(3):
        assert f"[{k}] caught up" in out and f"'{k}', '{joined}'" in out


def test_a_failing_process_stops_the_others_and_fails_the_launch():
    sleeper = "import time; time.sleep(60)"
    started = time.monotonic()
    result = run_local_cluster(
        3, lambda k, a: _py("import sys; sys.exit(3)" if k == 1 else sleeper), grace=10
    )
    assert time.monotonic() - started < 15
    assert result.failed == 1 and result.exit_code == 3 and not result.stopped
    assert result.returncodes[1] == 3
    assert all(rc != 0 for rc in result.returncodes)  # the others were terminated


def test_sigterm_to_the_launcher_is_forwarded_to_every_process():
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        result = run_local_cluster(2, lambda k, a: _py(code), grace=10)
    finally:
        timer.cancel()
    assert result.stopped and result.returncodes == [130, 130] and result.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_the_process_killed_by_a_signal_is_named_not_the_peers_that_panicked() -> None:
    # kill -9 of process 1: process 0 panics ("Send thread panic") and exits 1 at once
    assert first_failure([1, -9]) == 1
    assert first_failure([1, None]) == 0  # only 0 has ended so far
    assert first_failure([0, 2, 1]) == 1
    assert first_failure([None, 0]) is None
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit 1"
    assert describe_exit(-200) == "killed by signal 200"
