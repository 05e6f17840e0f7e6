"""The fuzz contract every parser's properties share: each example ends within a wall-clock bound
and within a memory bound, or the property fails.

A hang is cut short by SIGALRM (the parsers run on the main thread) rather than waited out, and
the memory bound is the tracemalloc peak of the parser call alone, so it does not depend on what
hypothesis or earlier examples allocated.
"""

from __future__ import annotations

import signal
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

MAX_SECONDS = 2.0  # per example; a legitimate parse of the largest input takes milliseconds
KIB = 1024
MIB = 1024 * KIB


class Hang(BaseException):
    """An example ran past its wall-clock bound. A BaseException, so that no `except Exception`
    in the code under test can swallow it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"an example ran for more than {MAX_SECONDS} s")


@contextmanager
def bounded(peak_bytes: int, seconds: float = MAX_SECONDS) -> Iterator[None]:
    """Run the block under the contract's time and memory bounds."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds * 2)  # the hard stop; the soft check is below
    tracemalloc.start()
    start = time.monotonic()
    try:
        yield
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert elapsed < seconds, f"an example took {elapsed:.2f} s, over {seconds} s"
    assert peak < peak_bytes, f"an example peaked at {peak} bytes, over {peak_bytes}"
