"""A local cluster's process waits for its lower-numbered peers' listening sockets
(`connectors.processes.await_listening`) instead of losing timely's one-second retry."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from connectors.processes import await_listening


def _bound() -> tuple[socket.socket, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, f"127.0.0.1:{s.getsockname()[1]}"


def test_it_returns_once_every_peer_listens_and_not_before():
    first, a = _bound()
    second, b = _bound()
    second.listen()
    about_to_listen = threading.Event()

    def listen_later() -> None:
        time.sleep(0.2)
        about_to_listen.set()
        first.listen()

    t = threading.Thread(target=listen_later)
    t.start()
    try:
        assert await_listening([a, b], timeout=30)
        assert about_to_listen.is_set()
    finally:
        t.join()
        first.close()
        second.close()


def test_a_peer_that_never_listens_is_given_up_after_the_timeout():
    s, a = _bound()  # bound, so no one else takes the port, but not listening
    try:
        assert not await_listening([a], timeout=0.05)
    finally:
        s.close()


def test_peers_on_other_hosts_are_left_to_timelys_own_retry():
    assert await_listening(["192.0.2.1:2101", "peer-b:2101"], timeout=0.5)


def test_without_a_socket_table_it_does_not_wait(tmp_path: Path):
    s, a = _bound()
    try:
        assert await_listening([a], timeout=0.5, proc_net=tmp_path)
    finally:
        s.close()
