"""runner provision: fingerprint hosts, optionally tune them, and build the workloads on them (Ansible)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from runner.cli import add_datasets_option, add_known_hosts_option, exit_status
from runner.errors import UsageError
from runner.hosts.ssh import check_known_hosts_file
from runner.provision.ansible import ProvisionReport, TaskEvent, provision
from runner.provision.inventory import load_inventory
from runner.provision.tuning import load_tune_file

HELP = """\
Prepare hosts for a campaign with the playbooks in playbooks/: record each host's fingerprint (CPU,
NUMA, SMT, governor, turbo, kernel, THP, mitigations, hypervisor) to DATASETS/hosts/<host>.json, apply the
tuning knobs of --tune (saving the old values on the host; playbooks/restore.yml puts them back), then
build lockbench (and with --gmake unpack a kernel tree for the gmake workload). Running it again
changes nothing that is already in place. Host keys are always checked. With --check nothing is
changed on the hosts and nothing is written here.

A --tune file holds knobs (all optional; null leaves the host as it is):
  governor: performance        # cpufreq governor on every policy
  turbo: false                 # intel_pstate/no_turbo or cpufreq/boost
  smt: "off"                   # /sys/devices/system/cpu/smt/control
  thp: never                   # transparent hugepages
  irqbalance: stopped
  kvm_params: {kvm_intel: {ple_gap: 0}}   # needs allow_reload: true (reloads the module)
  cmdline_add: [nosmt]                    # needs allow_reboot: true (reports that a reboot is needed)
Knobs this hardware lacks (no cpufreq in a VM, no SMT control) are reported, not failed.

examples:
  runner provision                                  # every host of inventory/
  runner provision --limit local                    # only this machine
  runner provision --limit lab --tune tune.yml --check   # what tuning would change, nothing changed
  runner provision --limit lab --tune tune.yml --gmake --datasets /data/campaigns
  runner provision --limit lab --known-hosts ~/.ssh/known_hosts_lab

environment: RUNNER_INVENTORY (inventory), RUNNER_DATASETS (default --datasets), RUNNER_KNOWN_HOSTS (--known-hosts).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "provision",
        help="fingerprint, tune and prepare hosts with Ansible",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=exit_status("1    a host failed or was unreachable, or something else failed"),
    )
    p.add_argument("--inventory", type=Path, default=Path(os.environ.get("RUNNER_INVENTORY", "inventory/")),
                   help="Ansible inventory file or directory (env RUNNER_INVENTORY; default inventory/)")
    p.add_argument("--limit", default="all", help="host pattern, e.g. a group name (default all)")
    p.add_argument("--check", action="store_true", help="show what would change; change nothing on the hosts")
    p.add_argument("--tune", type=Path, metavar="FILE.yml", help="tuning knobs to apply (see above)")
    p.add_argument("--gmake", action="store_true", help="also prepare the kernel tree for the gmake workload")
    add_datasets_option(p, "where DATASETS/hosts/<host>.json go")
    p.add_argument("--out", type=Path, dest="out_deprecated", help=argparse.SUPPRESS)  # the old name of --datasets
    add_known_hosts_option(p)
    p.set_defaults(func=run)


def provision_hosts(
    inventory: Path,
    limit: str,
    out: Path,
    *,
    tune_file: Path | None = None,
    check: bool = False,
    gmake: bool = False,
    on_event: Callable[[TaskEvent], None] | None = None,
    known_hosts: Path | None = None,
) -> ProvisionReport:
    """What `runner provision` does, without argv or output. `known_hosts`: Ansible checks host keys
    against this file, whatever the inventory's ansible_ssh_common_args say."""
    if not Path(inventory).exists():
        raise UsageError(f"inventory {inventory} does not exist (set --inventory or RUNNER_INVENTORY)")
    if known_hosts is not None:
        known_hosts = Path(known_hosts).expanduser()
        check_known_hosts_file(known_hosts)
    load_inventory(inventory, known_hosts, scripts=True)  # an unreadable inventory is one line here, before Ansible runs
    tune = load_tune_file(tune_file) if tune_file else None
    return provision(limit, inventory, out, tune=tune, check=check,
                     prepare_vars={"runner_prepare_gmake": gmake}, private_data_root=out / ".ansible-runs",
                     on_event=on_event, known_hosts=known_hosts)


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False)

    def progress(ev: TaskEvent) -> None:
        if args.quiet:
            return
        if ev.host is None:
            console.print(f"[dim]{ev.playbook}: {ev.task}[/]")
        elif ev.status in ("changed", "failed", "unreachable"):
            color = "yellow" if ev.status == "changed" else "red"
            console.print(f"  [{color}]{ev.status}[/] {ev.host}" + (f": {ev.message}" if ev.message else ""))

    if args.out_deprecated is not None:
        print("runner: provision --out is deprecated: it is --datasets, as on every other command", file=sys.stderr)
        args.datasets = args.out_deprecated
    report = provision_hosts(args.inventory, args.limit, args.datasets, tune_file=args.tune, check=args.check,
                             gmake=args.gmake, on_event=progress, known_hosts=args.known_hosts)
    for host in report.hosts:
        s = report.summaries[host]
        console.print(
            f"[bold]{host}[/]: {s['cpu_model']}, {s['sockets']} sockets / {s['cores']} cores / {s['threads']} threads, "
            f"{s['numa_nodes']} NUMA nodes, SMT {s['smt']}, governor {s['governor']}, turbo {s['turbo']}, "
            f"THP {s['thp']}, kernel {s['kernel']}, hypervisor {s['hypervisor']}"
        )
        t = report.tuning.get(host) or {}
        for note in t.get("unsupported", []):
            console.print(f"  [yellow]not on this host[/] {note['knob']}: {note['reason']}")
        if t.get("reboot_required"):
            console.print("  [red]reboot required[/] for the kernel arguments to take effect")
        for change in report.tuning_changes[host]:
            console.print(f"  tuned {change.path}: {change.old} -> {change.new}")
    changed = sum(r.changed for r in report.results)
    mode = " (check mode: nothing was changed)" if report.check else ""
    where = "" if report.check else f"; facts in {args.datasets / 'hosts'}"
    console.print(f"{len(report.hosts)} hosts provisioned, {changed} changes{mode}{where}")
    return 0
