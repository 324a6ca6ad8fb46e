"""Reading the kernel's socket table for `connectors.processes.await_listening`."""

from __future__ import annotations

from pathlib import Path

from connectors.processes import _listening_ports

_HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def test_only_listening_sockets_count_from_both_tables(tmp_path: Path):
    (tmp_path / "tcp").write_text(
        _HEAD
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0\n"
        + "   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000 0\n"
    )
    (tmp_path / "tcp6").write_text(
        _HEAD + "   0: 00000000000000000000000001000000:0835 00000000000000000000000000000000"
        ":0000 0A 00000000:00000000 00:00000000 00000000 0\n"
    )
    assert _listening_ports(tmp_path) == {0x1F90, 0x0835}


def test_a_missing_table_is_no_ports(tmp_path: Path):
    assert _listening_ports(tmp_path) == set()
