"""`gateway serve --workers N`: N gateway processes answering on one port.

The supervisor (the process the user started) checks that the port can be had, then forks N
workers that each run the whole gateway on a listening socket of their own bound to that
port with `SO_REUSEPORT`: the kernel spreads new connections over them evenly by their
addresses (one shared socket would let whichever worker wakes first take a whole burst). A
worker is a replica in every respect but the port: its own event loop, audit spool and hash
chain (`<spool_dir>/worker-<i>` for i >= 1, the spool folder itself for worker 0), its own
caches; limits and budgets are shared through Redis, so N > 1 needs `GATEWAY_REDIS_URL`
(`serve.py` checks). Forked after the imports and the config load, the workers share those
pages and skip that part of the start-up.

- SIGTERM or SIGINT to the supervisor: each worker gets SIGTERM once (it drains its
  requests and its audit spool), the supervisor waits for them, then ends by the same
  signal, as a single `gateway serve` does.
- A worker that dies after it was ready is started again with the same index (so the same
  spool: what it had not shipped is replayed). One that dies before it was ready stops
  the others: a start-up failure (bad prompts, spool in use) would only repeat.
- Workers sit in their own process group (a terminal's Ctrl-C reaches the supervisor only,
  so each worker hears one signal) and die with the supervisor (`PR_SET_PDEATHSIG`), so a
  SIGKILLed supervisor leaves no worker serving.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable

log = logging.getLogger("gateway.workers")

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.2
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# run_worker(index, ready) -> exit code; it calls ready() once it answers requests
WorkerMain = Callable[[int, Callable[[], None]], int]


def reuseport_socket(host: str, port: int, *, first: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port) with `SO_REUSEPORT`, not listening yet (uvicorn
    listens on it). The supervisor binds one `first`, after a plain bind to the port: that
    one fails when anything listens there, another `serve --workers` included (whose
    sockets `SO_REUSEPORT` alone would join), and port 0 becomes the port of every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if first:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


class Supervisor:
    def __init__(self, count: int, run_worker: WorkerMain,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.count = count
        self.run_worker = run_worker
        self.on_ready = on_ready
        self.children: dict[int, int] = {}  # pid -> worker index
        self.ready: set[int] = set()  # worker indexes that answer requests
        self.stopping: int | None = None  # the signal that stops us
        self.failed = False
        self.announced = False  # "ready" is said once, when all N first answer
        self._ready_r, self._ready_w = os.pipe()

    # --- the worker side -----------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        parent = os.getpid()
        # blocked across the fork: the child must not run the supervisor's handler
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid:
            self.children[pid] = index
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            return
        code = 1
        try:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            os.setpgid(0, 0)
            _die_with_parent(parent)
            os.close(self._ready_r)

            def ready() -> None:
                os.write(self._ready_w, bytes([index]))

            code = self.run_worker(index, ready)
        except BaseException:
            log.exception("gateway worker failed", extra={"worker": index})
        finally:
            logging.shutdown()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    # --- the supervisor side -------------------------------------------------------------
    def _stop(self, signum: int, _frame: object) -> None:
        if self.stopping is None:
            self.stopping = signum
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def _read_ready(self) -> None:
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([self._ready_r], [], [], _POLL_S)
            if not readable:
                return
            self.ready.update(os.read(self._ready_r, 256))
            if not self.announced and len(self.ready) == self.count:
                self.announced = True
                log.info("gateway workers ready", extra={"workers": self.count})
                if self.on_ready is not None:
                    self.on_ready()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            if index is None:
                continue
            if self.stopping is not None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if index not in self.ready:
                log.error("gateway worker failed to start: stopping the others",
                          extra={"worker": index, "exit_code": code})
                self.failed = True
                self._stop(signal.SIGTERM, None)
                continue
            log.error("gateway worker exited: starting it again",
                      extra={"worker": index, "exit_code": code})
            self.ready.discard(index)
            time.sleep(0.1)
            self._spawn(index)

    def run(self) -> int:
        """Start the workers, keep them running until told to stop; the exit code."""
        previous = {sig: signal.signal(sig, self._stop) for sig in _STOP_SIGNALS}
        try:
            for index in range(self.count):
                if self.stopping is None:
                    self._spawn(index)
            log.info("gateway workers started", extra={"workers": self.count,
                                                       "pids": sorted(self.children)})
            while self.children:
                self._read_ready()
                self._reap()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._ready_r)
            os.close(self._ready_w)
        if self.failed:
            return 1
        if self.stopping is not None:
            # end as a single `gateway serve` does after a signal: by that signal
            signal.raise_signal(self.stopping)
        return 0
