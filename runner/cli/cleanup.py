"""runner cleanup: remove what a crashed controller left behind for one campaign, and nothing else."""

from __future__ import annotations

import argparse
import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.cli import datasets_default
from runner.errors import ProvisionError
from runner.provision import container, libvirt
from runner.provision.guest import belongs_to
from runner.records.store import CampaignStore

HELP = """\
Remove the guests (libvirt domains, Xen domains), containers and container images that campaign
CAMPAIGN created and a crashed controller left behind, and the guest bridge (rnrbr0) if no guest of any
campaign is left on it. Only names made for CAMPAIGN are touched (rnr-<campaign>-<index>-<hash>);
another campaign's guests are never removed. Refused while the campaign is running (its dataset lock).

examples:
  runner cleanup lockbench-overcommit --dry-run
  runner cleanup lockbench-overcommit
"""


@dataclass(frozen=True)
class Cleanup:
    """What was (or, with dry_run, would be) removed."""

    campaign: str
    domains: tuple[str, ...]
    xen_domains: tuple[str, ...]
    containers: tuple[str, ...]
    images: tuple[str, ...]
    bridge: bool
    dry_run: bool

    @property
    def count(self) -> int:
        return len(self.domains) + len(self.xen_domains) + len(self.containers) + len(self.images) + int(self.bridge)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cleanup", help="remove a crashed campaign's guests and containers", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("campaign", help="campaign name (the matrix file's `campaign`)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--datasets", default=datasets_default(), type=Path, help="datasets directory (env RUNNER_DATASETS)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    done = cleanup(args.campaign, dry_run=args.dry_run, datasets=args.datasets)
    verb = "would remove" if done.dry_run else "removed"
    for kind, names in (("libvirt domain", done.domains), ("Xen domain", done.xen_domains),
                        ("container", done.containers), ("container image", done.images)):
        for name in names:
            print(f"{verb} {kind} {name}")
    if done.bridge:
        print(f"{verb} guest bridge {libvirt.BRIDGE} (no guest left on it)")
    if not done.count:
        print(f"nothing left behind by campaign {done.campaign!r}")
    return 0


def cleanup(campaign: str, *, dry_run: bool = False, datasets: Path | None = None) -> Cleanup:
    """Remove (dry_run: list) what `campaign` left on this machine. Holds the campaign's dataset lock
    when its dataset exists under `datasets`, so a running campaign is refused (DatasetError)."""
    root = Path(datasets) / campaign if datasets is not None else None
    with _campaign_lock(root):
        domains = libvirt.list_campaign(campaign) if _libvirt_here() else []
        xen_domains = _xen_campaign(campaign)
        containers = container.list_campaign(campaign) if _containers_here() else []
        images = container.list_campaign_images(campaign) if _containers_here() else []
        if not dry_run:
            for name in domains:
                libvirt.destroy(name)
            for name in xen_domains:
                from runner.execution.guests import xl_destroy

                xl_destroy(name)
            for name in containers:
                container.remove(name)
            for name in images:
                container.remove_image(name)
        # Each guest has one port on the bridge: in a dry run, count the ones that would go.
        gone = len(domains) + len(xen_domains) if dry_run else 0
        bridge = Path(f"/sys/class/net/{libvirt.BRIDGE}").exists() and len(libvirt.bridge_ports()) <= gone
        if bridge and not dry_run:
            libvirt.remove_bridge()
    return Cleanup(campaign, tuple(domains), tuple(xen_domains), tuple(containers), tuple(images), bridge, dry_run)


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


def _libvirt_here() -> bool:
    if not shutil.which("virsh"):
        return False
    libvirt.ensure_libvirtd()
    return True


def _containers_here() -> bool:
    try:
        container.container_cli()
    except ProvisionError:
        return False
    return True


def _xen_campaign(campaign: str) -> list[str]:
    if not shutil.which("xl"):
        return []
    from runner.execution.guests import xl_domains

    return sorted(n for n in xl_domains() if belongs_to(n, campaign))
