"""Output a command builds in several files (a report) appears whole or not at all.

`staged_output(out)` gives a staging directory inside `out` (same file system, so moving is a rename that
needs no space); the caller writes there; on success every file is renamed into `out`, replacing an earlier
one of the same name, and files of the earlier output the new one no longer has (figures) are removed; on any
error (a full disk, no permission, Ctrl-C) the staging directory goes, and so do the directories made for it:
`out` is left as it was, an earlier report intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

STAGING_PREFIX = ".staging-"


@contextlib.contextmanager
def staged_output(out: Path, replaced: tuple[str, ...] = ("img",)) -> Iterator[Path]:
    """A fresh directory to build `out`'s files in (see the module). `replaced`: subdirectories whose earlier
    files are all removed when the new output is moved in (the new output has all of its own)."""
    out = Path(out)
    with cleaned_on_error(out):
        out.mkdir(parents=True, exist_ok=True)
        stage = out / f"{STAGING_PREFIX}{os.getpid()}"
        for old in out.glob(f"{STAGING_PREFIX}*"):  # what a killed earlier run left (its process is gone)
            if old == stage or not _alive(old.name.removeprefix(STAGING_PREFIX)):
                shutil.rmtree(old, ignore_errors=True)
        try:
            stage.mkdir()
            yield stage
            for sub in replaced:
                if (stage / sub).is_dir() and (out / sub).is_dir():
                    for old in (out / sub).iterdir():
                        if old.is_file() and not (stage / sub / old.name).exists():
                            old.unlink()
            for src in sorted(p for p in stage.rglob("*") if not p.is_dir()):
                dst = out / src.relative_to(stage)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def cleaned_on_error(out: Path) -> Iterator[None]:
    """Remove `out` and the directories made for it when the block fails, if it did not exist before."""
    out = Path(out)
    made: list[Path] = []
    there = out
    while not there.exists() and there != there.parent:
        made.append(there)
        there = there.parent
    try:
        yield
    except BaseException:
        for path in made:  # deepest first
            shutil.rmtree(path, ignore_errors=True) if path == out else _rmdir(path)
        raise


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()
