"""The `runner` command. One module per subcommand, each with `add_parser(subparsers)` and `run(args) -> int`.

Library code raises typed errors (runner.errors); only `main` turns them into a one-line message and an
exit status (2 for bad input, 1 for other failures, 130 when interrupted). `--verbose` shows tracebacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno as errnos
import importlib
import os
import re
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner import __version__
from runner.errors import RunnerError

if TYPE_CHECKING:
    from runner.matrix.load import Matrix

# Subcommands in the order of a campaign's life.
SUBCOMMANDS = ["plan", "provision", "launch", "status", "report", "compare", "fit", "cleanup", "hosts", "schedule", "serve", "dataset"]

EPILOG = """\
a campaign in three steps:
  runner plan matrix.yml        what would run (no host is touched)
  runner launch matrix.yml      run it (again to resume: finished trials are skipped)
  runner report                 figures and tables of the latest campaign

environment: RUNNER_DATASETS (datasets dir), RUNNER_SCHEDULER (Dask scheduler address),
RUNNER_INVENTORY (Ansible inventory), RUNNER_KNOWN_HOSTS (known_hosts file for SSH host keys),
RUNNER_S3_ENDPOINT (S3-compatible server for `runner dataset publish/fetch s3://...`).
`runner COMMAND --help` explains each command.
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `only` one subcommand's parser: its module alone is imported (some
    import Dask, pandas or scipy at module level; a command should not pay for the others)."""
    parser = argparse.ArgumentParser(
        prog="runner",
        description="Run OS scalability campaigns on bare hosts, containers and VMs, and analyse them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runner {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output, only results and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS if only is None else [only]:
        try:
            module = importlib.import_module(f"runner.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"runner.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    for sub in subparsers.choices.values():
        _common(sub, EXIT_STATUS)
    return parser


def _common(p: argparse.ArgumentParser, exit_status: str) -> None:
    """What every command and action shares (one grammar): -q/-v after the subcommand too, the exit status
    section of its --help (its own, else its command's, else the common one), and usage errors that show the
    usage of the parser they concern (main reads `_parser`)."""
    for flags, help in ((("-v", "--verbose"), "show tracebacks and debug output"),
                        (("-q", "--quiet"), "no progress output, only results and errors")):
        mine = [p._option_string_actions[f] for f in flags if f in p._option_string_actions]
        if not mine:
            p.add_argument(*flags, action="store_true", default=argparse.SUPPRESS, help=help)
        for action in mine:  # a command's own --quiet must not undo `runner -q COMMAND`
            action.default = argparse.SUPPRESS
    epilog = p.epilog or ""
    if "exit status:" not in f"{p.description or ''}{epilog}":
        p.epilog = f"{epilog.rstrip()}\n\n{exit_status}" if epilog else exit_status
        p.formatter_class = argparse.RawDescriptionHelpFormatter
    own = f"{p.description or ''}\n{p.epilog or ''}"
    section = own[own.index("exit status:"):].split("\n\n")[0]
    p.set_defaults(_parser=p)
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _common(child, section)


EXIT_STATUS = """\
exit status:
  0    done
  1    something failed around good input (a host, a disk, a server)
  2    bad input: a usage error, or a file, campaign or option value that is missing or malformed
  130  interrupted (Ctrl-C)"""


def exit_status(*extra: str) -> str:
    """An epilog's exit status section: the common codes and a command's own, e.g. "3    trials failed"."""
    head, *lines = EXIT_STATUS.splitlines()
    codes = {int(line.split()[0]): line for line in lines}
    codes.update({int(e.split()[0]): f"  {e}" for e in extra})  # a command's own wording of a code wins
    return "\n".join([head, *(codes[c] for c in sorted(codes))])


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, but a word no parser knows is refused with the usage of the (sub)command it was given to,
    not the top-level usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _subcommand(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in SUBCOMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    try:  # importing a subcommand's module takes a while: Ctrl-C then is one line too
        parser = build_parser(_subcommand(sys.argv[1:] if argv is None else argv))
        args = parse_args(parser, argv)
    except KeyboardInterrupt:
        print("runner: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RunnerError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"runner: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("runner: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the machine's own fault (a full disk, no permission): one line naming the path, exit 1
        if args.verbose:
            traceback.print_exc()
        print(f"runner: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("runner: out of memory", file=sys.stderr)
        return 1


def os_error_line(exc: OSError) -> str:
    """`PATH: the system's words` for an OSError (both paths of a rename), also when a library wraps the errno."""
    code = exc.errno
    if code is None and (m := re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)):
        code = int(m.group(1))
    why = os.strerror(code) if code else " ".join(str(exc).split())
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    hint = "; make room and run it again" if code in (errnos.ENOSPC, errnos.EDQUOT) else ""
    return f"{' -> '.join(paths)}: {why}{hint}" if paths else f"{why}{hint}"


def datasets_default() -> str:
    return os.environ.get("RUNNER_DATASETS", "datasets")


def add_datasets_option(p: argparse.ArgumentParser, what: str = "directory holding the campaigns",
                        default: object = None) -> None:
    """--datasets DIR: the same name, meaning and environment variable on every command."""
    p.add_argument("--datasets", type=Path, metavar="DIR", default=Path(datasets_default()) if default is None else default,
                   help=f"{what} (env RUNNER_DATASETS; default: {datasets_default()})")


def add_inventory_option(p: argparse.ArgumentParser, default_help: str = "inventory/") -> None:
    """--inventory PATH: the Ansible inventory, the same on every command that reaches hosts."""
    p.add_argument("--inventory", metavar="PATH", default=os.environ.get("RUNNER_INVENTORY"),
                   help=f"Ansible inventory file or directory (env RUNNER_INVENTORY; default: {default_help}); only an "
                        "inventory named here or in RUNNER_INVENTORY may be an executable (dynamic inventory) script, "
                        "which is then run")


def add_group_option(p: argparse.ArgumentParser) -> None:
    """--group GROUP: the inventory group a command runs on instead of the matrix's `hosts:` group."""
    p.add_argument("--group", metavar="GROUP",
                   help="inventory group to run on instead of the matrix's `hosts:` (its placement and other settings "
                        "kept), e.g. the test bed's vmhosts with --inventory")


def on_group(matrix: Matrix, group: str | None) -> Matrix:
    """The matrix with its hosts group replaced by --group (unchanged without it)."""
    return matrix if not group else dataclasses.replace(matrix, hosts=group)


def add_json_option(p: argparse.ArgumentParser, what: str) -> None:
    """--json: the command's result as one JSON document on stdout (and nothing else there)."""
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout, for scripts")


def datasets_hint(datasets: Path | str | None) -> str:
    """The --datasets part of a hint that repeats the user's options: empty when the default would find it."""
    if datasets is None or Path(datasets) == Path(datasets_default()):
        return ""
    return f" --datasets {shlex.quote(str(datasets))}"


KNOWN_HOSTS_ENV = "RUNNER_KNOWN_HOSTS"


def known_hosts_default() -> str | None:
    """RUNNER_KNOWN_HOSTS, if set and not empty."""
    return os.environ.get(KNOWN_HOSTS_ENV) or None


def add_known_hosts_option(p: argparse.ArgumentParser) -> None:
    """--known-hosts FILE, for every command that reaches hosts (or resolves them, as plan does).
    Precedence: this option > RUNNER_KNOWN_HOSTS > the inventory's ansible_ssh_common_args
    (-o UserKnownHostsFile=...) > ~/.ssh/known_hosts."""
    p.add_argument("--known-hosts", type=Path, metavar="FILE", default=known_hosts_default(),
                   help=f"known_hosts file for every SSH host's key; wins over the inventory's UserKnownHostsFile "
                        f"(env {KNOWN_HOSTS_ENV}; default: the inventory's, else ~/.ssh/known_hosts)")


def int_at_least(low: int, high: int | None = None):
    """An argparse type: an integer >= low (and <= high); anything else is refused with the allowed range."""
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: {allowed}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: {allowed}")
        return value

    parse.__name__ = "integer"
    return parse


def number_between(low: float, high: float):
    """An argparse type: a finite number strictly between low and high (a false discovery rate, a fraction);
    anything else is refused with the allowed range."""
    allowed = f"a number greater than {low:g} and less than {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: {allowed}") from None
        if not low < value < high:  # NaN fails too
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {allowed}")
        return value

    parse.__name__ = "number"
    return parse
