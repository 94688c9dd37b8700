"""A loopback round-robin TCP proxy for tests: each client connection goes to the next backend.

An asyncio server in its own thread. A backend that refuses the connection (a replica that is
down) is skipped for the next one, as a load balancer's health check would; a connection whose
backend dies mid-request is closed, so the client sees the failure. `connections[i]` counts the
client connections piped to backend i. Clients must open a new connection per request (no
keep-alive) for requests to spread over the backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter


class RoundRobinProxy:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self.connections: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()
        self.port = 0
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RoundRobinProxy:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            async with self._server:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serve_forever()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True,
                                        name="rr-proxy")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the round-robin proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for _ in range(len(self.backends)):
            index = self._next % len(self.backends)
            self._next += 1
            host, port = self.backends[index]
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            except (OSError, TimeoutError):
                self.refused[index] += 1
                continue
            self.connections[index] += 1
            break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()

        try:
            _done, pending = await asyncio.wait(
                [asyncio.ensure_future(pipe(reader, up_writer)),
                 asyncio.ensure_future(pipe(up_reader, writer))],
                return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        finally:
            for w in (up_writer, writer):
                with contextlib.suppress(OSError, RuntimeError):
                    w.close()
