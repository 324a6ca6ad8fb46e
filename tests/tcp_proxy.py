"""A small TCP forwarder on loopback that a test can cut and restore.

`TcpProxy(upstream_port)` listens on a free 127.0.0.1 port and forwards every
connection to `127.0.0.1:upstream_port`, byte for byte, one thread per direction.
`cut()` resets every open connection (RST, as a dropped link or a restarted load
balancer does) and, until `restore()`, resets new ones as soon as they are
accepted, so clients see their connections fail and their reconnects refused.
Loopback only: it is for tests, and never forwards anywhere else.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from connectors.processes import Service

_CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the peer sees 'connection reset', not an orderly end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes a pump blocked in recv() on it, sends nothing
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy(Service):
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port` until `close()`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._up = threading.Event()
        self._up.set()
        self._closed = threading.Event()
        self.accepted = 0
        """Connections forwarded since start."""
        self.refused = 0
        """Connections reset on arrival while cut."""
        self.cuts = 0
        """Open connections reset by `cut()`."""
        self.bytes_up = 0
        """Bytes forwarded from clients to the upstream server."""
        self.bytes_down = 0
        """Bytes forwarded from the upstream server to clients."""
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def cut(self) -> int:
        """Reset every open connection and refuse new ones until `restore()`; return how many."""
        self._up.clear()
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for client, server in pairs:
            _reset(client)
            _reset(server)
        self.cuts += len(pairs)
        return len(pairs)

    def restore(self) -> None:
        """Forward new connections again."""
        self._up.set()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()

    def start(self) -> TcpProxy:
        return self  # listening since it was made

    def stop(self) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            client.settimeout(None)
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, server)
            with self._lock:
                if not self._up.is_set():  # cut while connecting
                    _reset(client)
                    _reset(server)
                    continue
                self._pairs.add(pair)
                self.accepted += 1
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(pair, src, dst, up), name="tcp-proxy-pump", daemon=True
                ).start()

    def _pump(
        self,
        pair: tuple[socket.socket, socket.socket],
        src: socket.socket,
        dst: socket.socket,
        up: bool,
    ) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    if up:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
        except OSError:
            pass
        # One side ended or failed: end both (a cut already reset them; closing twice is harmless).
        with self._lock:
            known = pair in self._pairs
            self._pairs.discard(pair)
        if known:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
