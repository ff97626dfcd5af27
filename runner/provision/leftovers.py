"""What one campaign left on one hypervisor host: its libvirt domains, Xen domains, containers, container
images, guest disk overlays and an empty guest bridge. Finds and removes exactly that campaign's (names made by
`guest.describe_guest` and `container.image_name`), through the host's Host, on this machine or over SSH."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from runner.errors import HostError, ProvisionError
from runner.hosts.base import Host
from runner.provision import container, libvirt, rootfs, xen
from runner.provision.guestspec import belongs_to, campaign_slug


@dataclass(frozen=True)
class HostLeftovers:
    """What was (or, with dry_run, would be) removed from one host."""

    host: str
    domains: tuple[str, ...] = ()
    xen_domains: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    overlays: tuple[str, ...] = ()
    bridge: bool = False
    error: str | None = None  # the host could not be reached or cleaned

    @property
    def count(self) -> int:
        return len(self.domains) + len(self.xen_domains) + len(self.containers) + len(self.images) + len(self.overlays) + int(self.bridge)


def _has(host: Host, tool: str) -> bool:
    return host.run(["sh", "-c", f"command -v {tool}"], timeout=30).ok


def clean_host(host: Host, campaign: str, *, dry_run: bool = False, bridge: str = libvirt.BRIDGE) -> HostLeftovers:
    """Remove (dry_run: list) what `campaign` left on `host`. A host that cannot be reached is reported in
    `error`, not raised, so the other hosts are still cleaned."""
    try:
        domains: list[str] = []
        if _has(host, "virsh"):
            libvirt.ensure_libvirtd(host)
            domains = libvirt.list_campaign(host, campaign)
        xen_domains = [n for n in xen.xl_domains(host) if belongs_to(n, campaign)] if _has(host, "xl") else []
        try:
            container.container_cli(host)
            containers, images = container.list_campaign(host, campaign), container.list_campaign_images(host, campaign)
        except ProvisionError:
            containers, images = [], []
        pattern = f"{rootfs.OVERLAY_DIR}/rnr-{campaign_slug(campaign)}-*.qcow2"
        listed = host.run(["sh", "-c", f"ls -1 {pattern} 2>/dev/null; true"], timeout=30).stdout.split()
        overlays = [p for p in listed if rootfs.overlay_of(p.rsplit("/", 1)[-1], campaign_slug(campaign))]
        if not dry_run:
            if overlays:
                host.run(["sh", "-c", "rm -f " + " ".join(shlex.quote(p) for p in overlays)], timeout=60)
            for name in domains:
                libvirt.destroy(host, name)
            for name in xen_domains:
                xen.destroy(host, name)
            for name in containers:
                container.remove(host, name)
            for name in images:
                container.remove_image(host, name)
        # Each guest has one port on the bridge: in a dry run, count the ones that would go.
        gone = len(domains) + len(xen_domains) if dry_run else 0
        exists = host.run(["test", "-e", f"/sys/class/net/{bridge}"], timeout=30).ok
        empty = exists and len(libvirt.bridge_ports(host, bridge)) <= gone
        if empty and not dry_run:
            libvirt.remove_bridge(host, bridge)
    except (HostError, ProvisionError) as exc:
        return HostLeftovers(host.name, error=str(exc))
    return HostLeftovers(host.name, tuple(domains), tuple(xen_domains), tuple(containers), tuple(images), tuple(overlays), empty)
