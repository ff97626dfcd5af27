"""Read a text file a user gave us (matrix, CSV, inventory, schedule). The one place that turns a missing file,
a directory, an unreadable, binary or non-UTF-8 file into a one-line UsageError naming the file."""

from __future__ import annotations

from pathlib import Path

from runner.errors import UsageError


def read_text(path: Path, what: str) -> str:
    """The file's text (UTF-8, a byte order mark dropped); `what` names the kind of file in messages ("matrix file")."""
    a_what = f"{'an' if what[0] in 'aeiou' else 'a'} {what}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not {a_what}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    if b"\0" in data:
        raise UsageError(f"{path}: a binary file, not {a_what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the {what} as UTF-8") from None
