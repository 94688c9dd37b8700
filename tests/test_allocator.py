"""`gateway serve` tunes glibc's malloc: at most two arenas unless the operator chose, and a
thread that hands freed memory back every minute (bench/soak.py shows the RSS curve)."""

from __future__ import annotations

import threading

import pytest

from gateway import allocator


class FakeLibc:
    def __init__(self) -> None:
        self.mallopt_calls: list[tuple[int, int]] = []
        self.trims = 0
        self.trimmed = threading.Event()

    def mallopt(self, param: int, value: int) -> int:
        self.mallopt_calls.append((param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        assert pad == 0
        self.trims += 1
        if self.trims >= 3:
            self.trimmed.set()
        return 1


@pytest.mark.parametrize("environ,expected", [
    ({}, [(allocator.M_ARENA_MAX, allocator.ARENAS)]),
    ({"MALLOC_ARENA_MAX": "8"}, []),  # glibc reads the operator's own choice itself
], ids=["default-two-arenas", "operator-choice-kept"])
def test_arenas_are_limited_unless_the_operator_chose(environ: dict[str, str],
                                                      expected: list[tuple[int, int]]) -> None:
    libc = FakeLibc()
    assert allocator.tune(environ, libc, every_s=3600) is not None
    assert libc.mallopt_calls == expected


def test_the_trim_thread_trims_again_and_again_off_the_caller() -> None:
    libc = FakeLibc()
    thread = allocator.tune({}, libc, every_s=0.01)
    assert thread is not None and thread.daemon and thread.is_alive()
    assert libc.trimmed.wait(5)


def test_this_platforms_c_library_is_found_when_it_is_glibc() -> None:
    import platform

    libc = allocator.glibc()
    if platform.libc_ver()[0] != "glibc":
        assert libc is None
        return
    assert libc is not None
    assert libc.malloc_trim(0) in (0, 1)
