"""runner cleanup: remove what a crashed controller left behind for one campaign, and nothing else."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from runner.cli import add_datasets_option, add_known_hosts_option, exit_status
from runner.hosts.base import Host
from runner.hosts.local import LocalHost
from runner.provision import libvirt
from runner.provision.inventory import check_known_hosts, connect, load_inventory
from runner.provision.leftovers import HostLeftovers, clean_host
from runner.records.store import CAMPAIGN_NAME, CampaignStore, split_host_file

HELP = """\
Remove the guests (libvirt domains, Xen domains), their disk overlays, containers and container images
that campaign CAMPAIGN created and a crashed controller left behind, and the guest bridge (rnrbr0) if no guest of any
campaign is left on it, on this machine and on every inventory host the campaign ran on (the hosts of
its dataset, or every inventory host when the campaign recorded none; the inventory is --inventory, else
the campaign's). Only names made for CAMPAIGN are touched
(rnr-<campaign>-<index>-<hash>); another campaign's guests are never removed. Refused while the campaign
is running (its dataset lock).

examples:
  runner cleanup lockbench-overcommit --dry-run
  runner cleanup lockbench-overcommit
"""


@dataclass(frozen=True)
class Cleanup:
    """What was (or, with dry_run, would be) removed, host by host."""

    campaign: str
    hosts: tuple[HostLeftovers, ...]
    dry_run: bool

    @property
    def count(self) -> int:
        return sum(h.count for h in self.hosts)

    def _all(self, attr: str) -> tuple:
        return tuple(n for h in self.hosts for n in getattr(h, attr))

    @property
    def guests(self) -> tuple[tuple[str, str], ...]:
        """(what it is, name) of every guest: "libvirt domain", "Xen domain", "QEMU guest", "container"."""
        return self._all("guests")

    @property
    def images(self) -> tuple[str, ...]:
        return self._all("images")

    @property
    def bridge(self) -> bool:
        return any(h.bridge for h in self.hosts)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cleanup", help="remove a crashed campaign's guests and containers", description=HELP,
                              epilog=exit_status("1    a host could not be cleaned"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaign", type=campaign_name, help="campaign name (the matrix file's `campaign`)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    add_datasets_option(p)
    p.add_argument("--inventory", type=Path, metavar="PATH", default=os.environ.get("RUNNER_INVENTORY"),
                   help="inventory of the campaign's hosts (env RUNNER_INVENTORY; default: the campaign's)")
    add_known_hosts_option(p)
    p.set_defaults(func=run)


def campaign_name(text: str) -> str:
    """An argparse type: a campaign name, never a path (`..` would name a directory outside the datasets)."""
    if not CAMPAIGN_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a campaign name; allowed: letters, digits, . _ - "
                                         "(starting with a letter or digit), as in the matrix file's `campaign`")
    return text


def run(args: argparse.Namespace) -> int:
    done = cleanup(args.campaign, dry_run=args.dry_run, datasets=args.datasets, inventory=args.inventory, known_hosts=args.known_hosts)
    verb = "would remove" if done.dry_run else "removed"
    many = len(done.hosts) > 1
    for h in done.hosts:
        where = f" on {h.host}" if many else ""
        if h.error:
            print(f"runner: cleanup: {h.host}: not cleaned: {h.error}", file=sys.stderr)
        for kind, name in (*h.guests, *(("container image", n) for n in h.images), *(("guest disk overlay", n) for n in h.overlays)):
            print(f"{verb} {kind} {name}{where}")
        if h.bridge:
            print(f"{verb} guest bridge {libvirt.BRIDGE}{where} (no guest left on it)")
    if not done.count:
        print(f"nothing left behind by campaign {done.campaign!r}")
    return 1 if any(h.error for h in done.hosts) else 0


def cleanup(
    campaign: str, *, dry_run: bool = False, datasets: Path | None = None, inventory: Path | None = None, known_hosts: Path | None = None,
) -> Cleanup:
    """Remove (dry_run: list) what `campaign` left on this machine and on every inventory host it ran on
    (the hosts of its dataset, looked up in `inventory`, else the campaign's own). Holds the campaign's
    dataset lock when its dataset exists under `datasets`, so a running campaign is refused (DatasetError)."""
    root = Path(datasets) / campaign if datasets is not None else None
    with _campaign_lock(root):
        hosts = [LocalHost(), *_campaign_hosts(root, inventory, known_hosts)]
        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            done = list(pool.map(lambda h: clean_host(h, campaign, dry_run=dry_run, bridge=_bridge(h)), hosts))
        for h in hosts:
            h.close()
    return Cleanup(campaign, tuple(done), dry_run)


def _bridge(host: Host) -> str:
    return getattr(getattr(host, "spec", None), "guest_bridge", None) or libvirt.BRIDGE


def _campaign_hosts(root: Path | None, inventory: Path | None, known_hosts: Path | None = None) -> list[Host]:
    """The remote hosts a campaign ran on (its dataset's hosts/ facts), connected through the inventory. A
    campaign killed before it recorded any host (or with no dataset at all) may still have started guests on
    any of them: then every remote host of the inventory is visited."""
    names: list[str] = []
    if root is not None and (root / "hosts").is_dir():
        names = sorted({split_host_file(p.name)[0] for p in (root / "hosts").glob("*.json")})
    named = inventory is not None  # an inventory script runs only when the user named it
    if inventory is None and root is not None and root.is_dir():
        prov = CampaignStore(root).read_provenance()
        matrix_file = Path(prov.get("matrix_file") or root / "matrix.yml")
        inventory = Path(prov.get("inventory") or (matrix_file.parent / "inventory"))
    if inventory is None or not Path(inventory).exists():
        return []
    inv = load_inventory(inventory, known_hosts, scripts=named)
    specs = [s for n, s in sorted(inv.hosts.items()) if (not names or n in names) and not s.local]
    check_known_hosts(specs)
    return [connect(s) for s in specs]


@contextlib.contextmanager
def _campaign_lock(root: Path | None) -> Iterator[None]:
    if root is None or not root.is_dir():
        yield
        return
    store = CampaignStore(root)
    store.acquire()
    try:
        yield
    finally:
        store.release()


