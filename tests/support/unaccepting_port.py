"""A loopback port where a TCP connect hangs: it listens with a full accept queue and never
accepts, so the kernel drops further SYNs and a client waits until its own connect time limit.
Reliable on loopback, unlike a non-routable address (which may fail at once without a route).
"""

from __future__ import annotations

import contextlib
import socket

_MAX_FILLERS = 64


class UnacceptingPort:
    def __init__(self) -> None:
        self._server: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UnacceptingPort:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        self._server, self.port = server, server.getsockname()[1]
        while len(self._fillers) < _MAX_FILLERS:
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)
            if self._connect_hangs():
                return self
        self.stop()
        raise RuntimeError("could not fill the accept queue of a loopback port")

    def _connect_hangs(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.2)
            try:
                probe.connect(("127.0.0.1", self.port))
            except TimeoutError:
                return True
            return False

    def stop(self) -> None:
        for sock in [*self._fillers, self._server]:
            if sock is not None:
                sock.close()
        self._fillers.clear()
        self._server = None

    def __enter__(self) -> UnacceptingPort:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
