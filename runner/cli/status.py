"""runner status: what a campaign has measured, what failed and why, what is pending."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runner.cli import add_datasets_option, add_json_option, datasets_hint, exit_status
from runner.hosts import process
from runner.hosts.process import ProcessId
from runner.records.store import CampaignStore, LockHolder, find_campaign
from runner.records.schema import ordinary_role

HELP = """\
Show a campaign's trials: done, failed (with the reason of the last attempt) and pending (planned but
not yet recorded). CAMPAIGN is a name under the datasets directory or a path; default: the latest.

examples:
  runner status
  runner status lockbench-scaling --datasets /data/campaigns
  runner status --json | jq .failed
"""

TRIALS_FAILED = 3  # exit status when some trials failed (their last attempt did not succeed)


@dataclass(frozen=True)
class Status:
    campaign: str
    planned: int
    ok: int
    failed: dict[str, str]  # trial id -> last error
    attempts: int
    running_pid: str | None

    @property
    def pending(self) -> int:
        return max(0, self.planned - self.ok - len(self.failed))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("status", help="done, failed and pending trials of a campaign", description=HELP,
                              epilog=exit_status(f"{TRIALS_FAILED}    some trials failed (their last attempt); pending ones are no failure"),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaign", nargs="?", help="campaign name or path (default: the latest)")
    add_datasets_option(p)
    add_json_option(p, "the status (counts, failed trials with their errors, the running controller)")
    p.set_defaults(func=run)


def campaign_status(campaign: str | None, datasets: Path) -> Status:
    store = CampaignStore(find_campaign(campaign, datasets))
    meta = store.meta()
    trials = store.read_table("trials").to_pandas()  # every file read and checked, as a relaunch checks it
    store.check_recorded(["metrics"])  # and the metrics: launch would measure a trial with a damaged one again
    if "role" in trials.columns:  # canary runs are re-runs of one cell beside the plan, not planned trials
        trials = trials[ordinary_role(trials["role"])]
    ok_ids = set(trials.loc[trials["status"] == "ok", "trial_id"])
    failed: dict[str, str] = {}
    if len(trials):
        last = trials.sort_values("attempt").groupby("trial_id").tail(1)
        for row in last.itertuples():
            if row.trial_id not in ok_ids:
                failed[row.trial_id] = str(row.error)
    holder = store.lock_holder()
    running = holder.line if holder is not None and is_running(holder, socket.gethostname(), process.gone) else None
    # A dataset.json without trials_planned (hand-made, or an old test fixture): what was recorded is all we know.
    planned = meta.get("trials_planned", len(set(trials["trial_id"])))
    return Status(meta["campaign"], planned, len(ok_ids), failed, len(trials), running)


def is_running(holder: LockHolder, this_machine: str, gone: Callable[[ProcessId], bool]) -> bool:
    """Whether the controller named in a campaign's lock still runs: on this machine, unless its process is
    gone (no such PID, another start time or boot), as a relaunch judges its own holds; a controller on
    another machine cannot be checked from here and counts as running. Pure but for `gone`."""
    return holder.controller != this_machine or not gone(holder.process)


def to_json(st: Status) -> dict[str, object]:
    """The status as `runner status --json` prints it (pure)."""
    return {"campaign": st.campaign, "planned": st.planned, "ok": st.ok, "failed": len(st.failed), "pending": st.pending,
            "attempts": st.attempts, "running": st.running_pid, "failed_trials": dict(sorted(st.failed.items()))}


def run(args: argparse.Namespace) -> int:
    st = campaign_status(args.campaign, args.datasets)
    code = TRIALS_FAILED if st.failed else 0
    if args.json:
        print(json.dumps(to_json(st), indent=2))
        return code
    console = Console()
    console.print(f"[bold]{st.campaign}[/]: {st.planned} trials planned; [green]{st.ok} done[/], [red]{len(st.failed)} failed[/], {st.pending} pending ({st.attempts} attempts recorded)")
    if st.running_pid:
        console.print(f"running now: {st.running_pid}")
    if st.failed:
        reasons: dict[str, int] = {}
        for err in st.failed.values():
            reasons[err] = reasons.get(err, 0) + 1
        table = Table("failed trials", "reason of the last attempt", show_edge=False)
        for err, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            table.add_row(str(n), err)
        console.print(table)
    if st.pending or st.failed:
        console.print("`runner launch` with the same matrix runs the failed and pending trials"
                      + (f" (with{datasets_hint(args.datasets)})" if datasets_hint(args.datasets) else ""), highlight=False)
    return code
