"""What every virtual-machine environment shares (kvm, qemu, xen-*): a guest kernel booted directly (a
kernel + initramfs image or a disk image with copy-on-write overlays), a static address on the host-only
guest bridge, reached over SSH through a channel its hypervisor host opens (`SSHHost(..., via=host)`).

A subclass says how one guest starts (`start`), where its console goes (`console_log`), how it is destroyed
and found again (`destroy`, `destroy_argv`, `leftovers`), and its accelerator (`accel`)."""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runner.errors import HostError, ProvisionError
from runner.hosts.base import Host
from runner.provision import libvirt, rootfs
from runner.provision.environments.base import BootOrder, Environment, Network, Started, annotate, destroy_all, in_parallel
from runner.provision.guestspec import GuestSpec, campaign_slug


class VirtualMachines(Environment):
    starts_guests = True
    virtual_machines = True
    cpu_noun = "guest vCPUs"
    shm_share = 0.5  # Linux sizes a tmpfs at half the RAM by default
    boots_kernel = True
    setup_estimate_s = 17.0  # measured under TCG on the development machines (docs/guests.md); real KVM boots faster

    def accel(self, hv: Host, order: BootOrder) -> str:
        """The accelerator this host's guests get (the first of `accels` unless the environment probes)."""
        return self.accels[0]

    def start(self, hv: Host, spec: GuestSpec, net: Network, logs: str) -> None:
        raise NotImplementedError

    def console_log(self, spec: GuestSpec, logs: str) -> str:
        """The guest console's log file on the host."""
        return f"{logs}/{spec.name}.log"

    def console_tail(self, hv: Host, spec: GuestSpec, logs: str) -> str:
        return libvirt.console_tail(hv, self.console_log(spec, logs))

    def release_network(self, hv: Host, net: Network) -> None:
        with contextlib.suppress(ProvisionError, HostError):
            libvirt.remove_bridge(hv, net.bridge)

    def boot(self, hv: Host, order: BootOrder) -> Started:
        accel = self.accel(hv, order)
        vms = int(order.gp["vms"])
        image_name = str(order.params.get("guest_image", "minimal"))
        disks: list[str | None] = [None] * vms
        if image_name == "minimal":
            built = order.images.kernel_image(self, order.params)
            catalog = order.images.guest_catalog(order.images.ship_image(hv, built), self, order.params)
        else:
            built = order.images.disk_image(self, order.params)
            shipped = order.images.ship_disk(hv, built)
            catalog = order.images.disk_catalog(shipped, self, order.params)
            slug = campaign_slug(order.campaign)
            disks = list(make_overlays(hv, shipped.disk, [rootfs.overlay_name(slug, i, order.boot_id) for i in range(vms)]))
        net = order.net
        specs = [order.describe({**order.gp, "accel": accel, **({"disk": disks[i]} if disks[i] else {})}, catalog, i,
                                address=libvirt.guest_address(i, net.subnet))
                 for i in range(vms)]
        libvirt.ensure_bridge(hv, net.bridge, net.subnet)
        guard = order.guard([self.destroy_argv(hv, s.name) for s in specs] + [["rm", "-f", d] for d in disks if d])
        try:
            starts = []
            for spec in specs:
                self.start(hv, spec, net, order.logs)
                starts.append(time.monotonic())
            ready = in_parallel([self._ready_waiter(hv, s, order, t0) for s, t0 in zip(specs, starts, strict=True)])
            known = known_hosts(order.images.cache / f"known_hosts.{os.getpid()}.{hv.name}", specs, net, built.host_key)
            guests = [self.reach(hv, s, net, built.key_path, known) for s in specs]
        except BaseException as exc:
            annotate(exc, {"accel": accel, "guest_json": specs[0].to_json()})
            destroy_all(hv, self, specs, guard)
            raise
        return Started(specs, guests, ready, accel, guard, (image_name, built.digest))

    def reach(self, hv: Host, spec: GuestSpec, net: Network, key_file: Path, known: Path) -> Host:
        """The guest as a Host: SSH to its address, through a channel its hypervisor host opens."""
        # Imported here for start-up time: Fabric and paramiko (0.3 s) are loaded by the first boot, not by
        # every command that only plans (the environments are read at plan time).
        from runner.hosts.ssh import HostSpec, SSHHost

        return SSHHost(HostSpec(name=spec.name, address=libvirt.guest_address(spec.index, net.subnet).split("/")[0],
                                key_file=key_file, known_hosts=known, connect_timeout=30.0), via=hv)

    def _ready_waiter(self, hv: Host, spec: GuestSpec, order: BootOrder, started: float) -> Callable[[], float]:
        def wait() -> float:
            try:
                libvirt.wait_ssh(hv, libvirt.guest_address(spec.index, order.net.subnet),
                                 max(1.0, order.boot_timeout_s - (time.monotonic() - started)))
            except ProvisionError as exc:
                tail = self.console_tail(hv, spec, order.logs)
                raise ProvisionError(f"guest vm {spec.index} ({spec.name}) on {hv.name}: {exc}; console: {tail or '(empty)'}") from None
            return time.monotonic() - started

        return wait


def make_overlays(host: Host, base: Path, names: Sequence[str]) -> list[str]:
    """One copy-on-write overlay of `base` per guest in rootfs.OVERLAY_DIR on the host; their paths."""
    paths = [f"{rootfs.OVERLAY_DIR}/{n}" for n in names]
    fmt = "qcow2" if base.suffix == ".qcow2" else "raw"
    script = f"mkdir -p {rootfs.OVERLAY_DIR} && " + " && ".join(
        shlex.join(rootfs.overlay_argv(str(base), p, fmt)) for p in paths)
    made = host.run(["sh", "-c", script], timeout=120)
    if not made.ok:
        raise ProvisionError(f"{host.name}: cannot create guest disk overlays in {rootfs.OVERLAY_DIR} (needs qemu-img, package qemu-utils): {made.tail()}")
    return paths


def known_hosts(path: Path, specs: Sequence[GuestSpec], net: Network, host_key: str) -> Path:
    """The guests' known_hosts: their addresses with the image's host key (pinned, never learnt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{libvirt.guest_address(s.index, net.subnet).split('/')[0]} {host_key}\n" for s in specs))
    return path
