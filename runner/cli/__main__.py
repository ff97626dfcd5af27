"""`python -m runner.cli` is the `runner` command."""

import sys

try:
    from runner.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports the command: one line, no traceback
    print("runner: interrupted", file=sys.stderr)
    sys.exit(130)

status = main()
# CPython remembers a KeyboardInterrupt that ended any string `exec` (dataclasses and namedtuple build their
# methods that way, so a Ctrl-C during an import can land in one), even when it was caught later, and under
# `python -m` it then ends the process by SIGINT instead of the exit status main chose. A string exec that ends
# normally clears that memory, so that an interrupted run exits 130 as documented, every time.
exec("pass")  # noqa: S102 - a constant string
sys.exit(status)
