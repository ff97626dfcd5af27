"""`python -m runner.cli` is the `runner` command."""

import sys

try:
    from runner.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports the command: one line, no traceback
    print("runner: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
