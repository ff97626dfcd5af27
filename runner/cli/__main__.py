"""`python -m runner.cli` is the `runner` command."""

import sys

from runner.cli import main

sys.exit(main())
