"""Small helpers every layer uses: one-line messages, waiting for a condition (and for an SSH
server), running a local command with a timeout, seconds from the environment, whether a process is alive.
(User files and YAML with one-line errors: runner.textfile.)

This module is the ground floor: it imports nothing from the rest of runner but runner.errors.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from runner.errors import UsageError

T = TypeVar("T")
ONE_LINE_LIMIT = 300  # characters of a message kept on one line (longer ones end with "...")


def one_line(what: Any, limit: int = ONE_LINE_LIMIT) -> str:
    """`what` (an exception or any text) on one line: whitespace runs become one space, at most `limit`
    characters (the last three then "..."); an exception without a message gives its type name. Pure."""
    line = " ".join(str(what).split())
    if not line and isinstance(what, BaseException):
        line = type(what).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.1) -> T | None:
    """Call `check` until it returns a true value and return that; None once `timeout` seconds have passed.
    `check` runs at least once, and once more at the deadline, so a slow machine never misses the event."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(interval, left))


def answers_ssh(open_socket: Callable[[], Any], read_timeout: float = 5.0) -> bool:
    """Whether an SSH server answers with its banner on the socket (or channel) `open_socket()` opens; any
    OSError (refused, reset, timed out) is a no."""
    try:
        sock = open_socket()
        try:
            sock.settimeout(read_timeout)
            return sock.recv(64).startswith(b"SSH-")
        finally:
            sock.close()
    except OSError:
        return False


def run_checked(argv: Sequence[str], *, timeout: float, what: str, error: type[Exception] = RuntimeError,
                **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a local command (output captured as text) that must succeed within `timeout` seconds; else raise
    `error` with one line: '<what> failed: <its last line of output>' or '<what> did not finish within N s'."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired:
        raise error(f"{what} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise error(f"{what} failed: {one_line(exc)}") from None
    if proc.returncode:
        last = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()[-1]
        raise error(f"{what} failed: {one_line(last)}")
    return proc


def env_seconds(name: str, default: float) -> float:
    """Seconds from environment variable `name` (unset or empty: `default`); a value that is not a finite
    number of seconds > 0 is a UsageError of one line, read where it is used (in a Dask worker too)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{name}={raw!r} must be a number of seconds > 0")
    return value


def proc_state(stat: str) -> str:
    """The state letter of a /proc/PID/stat line (R, S, D, Z, X, ...): the field after the command name,
    which may itself hold spaces and parentheses. Pure."""
    return stat[stat.rindex(")") + 1:].split()[0]


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine. A zombie is not alive (it has ended; only its parent has
    not reaped it: a machine whose init does not reap orphans keeps them)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return proc_state(fh.read()) not in ("Z", "X", "x")
    except FileNotFoundError:
        if os.path.exists("/proc/self"):
            return False
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's
    return True
