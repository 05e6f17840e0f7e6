"""The fuzz contract every parser's properties share: each example ends within a wall-clock bound
and within a memory bound, or the property fails.

The time bound is on CPU time, so that a loaded machine (the suite shares it) cannot fail an
example that did little work; a hang that burns no CPU (a blocking read) is cut short by SIGALRM
after a generous wall-clock limit (the parsers run on the main thread). The memory bound is the
tracemalloc peak of the parser call alone, so it does not depend on what hypothesis or earlier
examples allocated.
"""

from __future__ import annotations

import signal
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

MAX_SECONDS = 2.0  # CPU per example; a legitimate parse of the largest input takes milliseconds
MAX_WALL_SECONDS = 30.0  # the hard stop, for a hang that blocks instead of spinning
KIB = 1024
MIB = 1024 * KIB


class Hang(BaseException):
    """An example ran past its wall-clock bound. A BaseException, so that no `except Exception`
    in the code under test can swallow it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"an example ran for more than {MAX_WALL_SECONDS} s")


@contextmanager
def bounded(peak_bytes: int, seconds: float = MAX_SECONDS) -> Iterator[None]:
    """Run the block under the contract's time (CPU seconds) and memory bounds."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, MAX_WALL_SECONDS)
    tracemalloc.start()
    start = time.process_time()
    try:
        yield
        elapsed = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert elapsed < seconds, f"an example took {elapsed:.2f} s of CPU, over {seconds} s"
    assert peak < peak_bytes, f"an example peaked at {peak} bytes, over {peak_bytes}"
