"""Background threads that never receive SIGTERM.

Linux delivers a process-wide signal to any thread that does not block it. If a worker got
SIGTERM, the main thread, blocked reading stdin, would not wake to run the handler, and the host
would ignore the app's request to exit. So every thread other than the reader blocks SIGTERM;
threads inherit their creator's mask, so threads started by workers are covered too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def start_daemon(target: Callable[[], object], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks (and no SIGTERM race)
        thread.start()
        return thread
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread
