"""Small helpers every layer uses: one-line messages, waiting for a condition, running a local command with a
timeout, seconds from the environment, whether a process is alive.

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
