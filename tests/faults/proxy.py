"""A loopback TCP proxy that breaks on cue: the way a test makes a server die and come back on the same
port without owning the server. `down()` closes the listener and every connection (clients see
"connection refused" and "connection reset", as when the server process is killed); `up()` listens
again on the same port; `cut_after(n)` ends the next response after `n` bytes (a crash mid-stream)."""

from __future__ import annotations

import socket
import threading


class FaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self._cut_after: int | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            connections, self.connections = self.connections, []
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in connections:
            _reset(conn)

    def cut_after(self, n_bytes: int) -> None:
        self._cut_after = n_bytes

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.upstream_port))
            except OSError:
                _reset(client)
                continue
            with self.lock:
                if self.listener is not listener:
                    _reset(client)
                    upstream.close()
                    return
                self.connections += [client, upstream]
                limit, self._cut_after = self._cut_after, None
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    target.sendall(data[: limit - sent])
                    _reset(target)
                    _reset(source)
                    return
                target.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _reset(sock: socket.socket) -> None:
    """End a connection as a killed process's kernel does: at once, without a proper goodbye. The
    shutdown also wakes the thread blocked reading the other way, so the socket is really released."""
    for step in (
        lambda: sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"),
        lambda: sock.shutdown(socket.SHUT_RDWR),
        sock.close,
    ):
        try:
            step()
        except OSError:
            pass
