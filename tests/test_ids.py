"""Ids: random parts come from a buffer of `os.urandom` bytes, never the same twice, and a
forked process (a `--workers` child) never repeats its parent's bytes."""

from __future__ import annotations

import os
import re
import time

from gateway.ids import random_hex, time_ordered_id


def test_random_hex_is_unique_and_the_asked_length_across_many_refills() -> None:
    seen = {random_hex(6) for _ in range(5_000)}  # ~7 refills of the 4 KiB buffer
    assert len(seen) == 5_000
    assert all(re.fullmatch(r"[0-9a-f]{12}", h) for h in seen)
    assert len(random_hex(5_000)) == 10_000  # more than a buffer at once


def test_time_ordered_ids_sort_by_their_millisecond() -> None:
    first = time_ordered_id()
    time.sleep(0.002)
    second = time_ordered_id()
    assert len(first) == len(second) == 24
    assert first[:12] < second[:12]


def test_a_forked_child_takes_bytes_of_its_own() -> None:
    random_hex(6)  # the parent's buffer is filled and partly used
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it takes next, to the parent
        os.write(write_end, "".join(random_hex(8) for _ in range(16)).encode())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 4096).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    parent = "".join(random_hex(8) for _ in range(16))
    assert len(child) == len(parent) == 256
    assert child != parent  # without the reset, both would read the same buffered bytes
