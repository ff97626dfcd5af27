"""What one campaign left on one hypervisor host: its guests (every environment's: libvirt domains, Xen domains,
QEMU processes, containers), container images, guest disk overlays and an empty guest bridge. Finds and removes
exactly that campaign's (names made by `guest.describe_guest` and `container.image_name`), through the host's
Host, on this machine or over SSH. Each environment (runner.provision.environments) says which of its guests
are left (`leftovers`) and how one is destroyed."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from runner.errors import HostError, ProvisionError
from runner.hosts.base import Host
from runner.provision import container, environments, libvirt, rootfs
from runner.provision.guestspec import campaign_slug


@dataclass(frozen=True)
class HostLeftovers:
    """What was (or, with dry_run, would be) removed from one host."""

    host: str
    guests: tuple[tuple[str, str], ...] = ()  # (what it is, e.g. "libvirt domain", its name)
    images: tuple[str, ...] = ()
    overlays: tuple[str, ...] = ()
    bridge: bool = False
    error: str | None = None  # the host could not be reached or cleaned

    @property
    def count(self) -> int:
        return len(self.guests) + len(self.images) + len(self.overlays) + int(self.bridge)


def _has_tools(host: Host, env: environments.Environment) -> bool:
    if env.host_tools is None:
        return False
    return host.run(["sh", "-c", " || ".join(f"command -v {t}" for t in env.host_tools[0])], timeout=30).ok


def _guests(host: Host, campaign: str) -> list[tuple[environments.Environment, str]]:
    """The campaign's guests on the host, with the environment that destroys each (one entry per name: the
    Xen environments share one list of domains)."""
    found: dict[str, environments.Environment] = {}
    for name in environments.guest_names():
        env = environments.get(name)
        if not _has_tools(host, env):
            continue
        env.prepare_host(host)
        for guest in env.leftovers(host, campaign):
            found.setdefault(guest, env)
    return [(env, guest) for guest, env in found.items()]


def clean_host(host: Host, campaign: str, *, dry_run: bool = False, bridge: str = libvirt.BRIDGE) -> HostLeftovers:
    """Remove (dry_run: list) what `campaign` left on `host`. A host that cannot be reached is reported in
    `error`, not raised, so the other hosts are still cleaned."""
    try:
        guests = _guests(host, campaign)
        try:
            container.container_cli(host)
            images = container.list_campaign_images(host, campaign)
        except ProvisionError:
            images = []
        pattern = f"{rootfs.OVERLAY_DIR}/rnr-{campaign_slug(campaign)}-*.qcow2"
        listed = host.run(["sh", "-c", f"ls -1 {pattern} 2>/dev/null; true"], timeout=30).stdout.split()
        overlays = [p for p in listed if rootfs.overlay_of(p.rsplit("/", 1)[-1], campaign_slug(campaign))]
        if not dry_run:
            if overlays:
                host.run(["sh", "-c", "rm -f " + " ".join(shlex.quote(p) for p in overlays)], timeout=60)
            for env, name in guests:
                env.destroy(host, name)
            for name in images:
                container.remove_image(host, name)
        # Each virtual machine has one port on the bridge: in a dry run, count the ones that would go.
        gone = sum(1 for env, _ in guests if env.virtual_machines) if dry_run else 0
        exists = host.run(["test", "-e", f"/sys/class/net/{bridge}"], timeout=30).ok
        empty = exists and len(libvirt.bridge_ports(host, bridge)) <= gone
        if empty and not dry_run:
            libvirt.remove_bridge(host, bridge)
    except (HostError, ProvisionError) as exc:
        return HostLeftovers(host.name, error=str(exc))
    return HostLeftovers(host.name, tuple((env.guest_noun, name) for env, name in guests), tuple(images), tuple(overlays), empty)
