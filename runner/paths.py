"""Where the runner keeps a user's own files (schedules, keys): RUNNER_HOME, default ~/.config/runner."""

from __future__ import annotations

import os
from pathlib import Path


def runner_home() -> Path:
    return Path(os.environ.get("RUNNER_HOME") or Path.home() / ".config" / "runner")
