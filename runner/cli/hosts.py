"""runner hosts: who holds which host of the lab, and releasing a hold by force."""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runner.cli import add_inventory_option, add_json_option, add_known_hosts_option
from runner.errors import HostError, UsageError
from runner.lab import reservations
from runner.provision.inventory import check_known_hosts, connect, load_inventory

PROJECT_INVENTORY = Path(__file__).resolve().parents[2] / "inventory"

HELP = """\
Show every host of an inventory group (default: all), who holds it, for which campaign and since when.
A campaign holds the hosts it measures on, so two campaigns from two controllers never share a host; a
hold lives on the host itself and expires when its controller stops sending heartbeats (see docs/lab.md).

`runner hosts release HOST --force` removes a hold whatever its owner (for an administrator: the
campaign holding it, if still running, loses the host and reports it).

examples:
  runner hosts
  runner hosts lab --inventory /etc/runner/inventory
  runner hosts release numa80 --force
  runner hosts lab --json | jq -r '.[] | select(.state == "free") | .host'
"""


@dataclass(frozen=True)
class HostState:
    host: str
    hold: reservations.HoldInfo | None
    error: str | None = None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("hosts", help="who holds which host; release a hold by force", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="*", metavar="GROUP | release HOST", help="an inventory group or host (default: all), or `release HOST`")
    add_inventory_option(p, "the project's inventory/")
    p.add_argument("--force", action="store_true", help="with `release`: remove the hold whoever owns it")
    add_known_hosts_option(p)
    add_json_option(p, "every host's state (or the release)")
    p.set_defaults(func=run)


def host_states(inventory: str | Path | None, pattern: str = "all", known_hosts: Path | None = None) -> list[HostState]:
    """The hold of every host matching `pattern`, asked in parallel; unreachable hosts carry the error."""
    inv_path = Path(inventory) if inventory else PROJECT_INVENTORY
    specs = load_inventory(inv_path, known_hosts, scripts=bool(inventory)).resolve(pattern)
    check_known_hosts(specs)
    paths = {s.name: s.hold_path for s in specs}  # runner_hold_path, read by load_inventory

    def ask(spec: object) -> HostState:
        try:
            with connect(spec) as host:
                return HostState(spec.name, reservations.status(host, path=paths.get(spec.name)))
        except HostError as exc:
            return HostState(spec.name, None, str(exc))

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(specs)))) as pool:
        return sorted(pool.map(ask, specs), key=lambda s: s.host)


def release_host(inventory: str | Path | None, name: str, known_hosts: Path | None = None) -> reservations.HoldInfo | None:
    """Remove the hold on host `name`; returns what was removed (None if it was free)."""
    inv_path = Path(inventory) if inventory else PROJECT_INVENTORY
    specs = load_inventory(inv_path, known_hosts, scripts=bool(inventory)).resolve(name)
    check_known_hosts(specs)
    if len(specs) != 1:
        raise UsageError(f"{name!r} is a group of {len(specs)} hosts; release one host at a time")
    with connect(specs[0]) as host:
        return reservations.force_release(host, path=specs[0].hold_path)


def state_json(s: HostState) -> dict[str, object]:
    """One host's row of `runner hosts --json` (pure)."""
    if s.error:
        return {"host": s.host, "state": "unreachable", "error": s.error}
    if s.hold is None:
        return {"host": s.host, "state": "free"}
    return {"host": s.host, "state": "expired" if s.hold.expired else "held", "owner": s.hold.owner, "campaign": s.hold.campaign,
            "since": s.hold.since, "heartbeat_age_s": s.hold.age_s, "ttl_s": s.hold.ttl}


def run(args: argparse.Namespace) -> int:
    console = Console(soft_wrap=True)
    if args.words and args.words[0] == "release":
        if len(args.words) != 2:
            raise UsageError("usage: runner hosts release HOST --force")
        if not args.force:
            raise UsageError(f"releasing another campaign's hold on {args.words[1]} needs --force")
        gone = release_host(args.inventory, args.words[1], args.known_hosts)
        if args.json:
            print(json.dumps({"host": args.words[1], "released": gone.describe() if gone else None}))
            return 0
        console.print(f"host {args.words[1]}: " + (f"removed the hold {gone.describe()}" if gone else "was not held"), highlight=False)
        return 0
    if len(args.words) > 1:
        raise UsageError(f"one group at a time, got {' '.join(args.words)}")
    states = host_states(args.inventory, args.words[0] if args.words else "all", args.known_hosts)
    if args.json:
        print(json.dumps([state_json(s) for s in states], indent=2))
        return 0
    table = Table("host", "state", "owner", "campaign", "since", "heartbeat", show_edge=False)
    for s in states:
        if s.error:
            table.add_row(s.host, "[red]unreachable", s.error, "", "", "")
        elif s.hold is None:
            table.add_row(s.host, "[green]free", "", "", "", "")
        else:
            state = "[yellow]expired" if s.hold.expired else "[red]held"
            table.add_row(s.host, state, s.hold.owner, s.hold.campaign, s.hold.since, f"{s.hold.age_s:.0f} s ago (ttl {s.hold.ttl:.0f} s)")
    console.print(table)
    return 0
