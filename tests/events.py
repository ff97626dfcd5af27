"""Waiting for a visible event in tests (a file, a status row, a hold), never for a fixed time."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable


def wait_for(check: Callable[[], object], timeout: float = 60.0, poll: float = 0.02) -> bool:
    """True as soon as `check()` is truthy, False if it is not within `timeout` seconds (generous: a loaded
    machine is slow, and the wait ends at the event, not at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(poll)
    return False


def as_a_terminal_starts_it() -> None:
    """Popen's preexec_fn for a command a test interrupts with SIGINT, as a terminal's Ctrl-C would: the default
    SIGINT action, which a foreground command of a terminal has. A suite started in the background (`cmd &` in
    a script, nohup) ignores SIGINT, its children inherit that, and Python then installs no handler for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
