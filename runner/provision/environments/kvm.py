"""`kvm`: libvirt guests on the hypervisor host, with KVM where it really boots a guest, else TCG
(runner.provision.libvirt drives libvirt; libvirt.probe_accel decides the accelerator once per host)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runner.hosts.base import Host
from runner.provision import libvirt, xen
from runner.provision.environments.base import BootOrder, Network, register
from runner.provision.environments.vm import VirtualMachines
from runner.provision.guestspec import GuestSpec


@register("kvm")
class Kvm(VirtualMachines):
    guest_noun = "libvirt domain"
    accels = ("kvm", "tcg")
    host_tools = (("virsh",), "libvirt-clients and libvirt-daemon-system")

    def check_host(self, hv: Host) -> str | None:
        # In a Xen dom0 there is no usable /dev/kvm: libvirt's guests would silently run under TCG.
        if xen.is_dom0(hv):
            return f"host {hv.name}: env {self.name}: it is a Xen dom0 (no KVM there; its guests would run under TCG)"
        return None

    def prepare_host(self, hv: Host) -> None:
        libvirt.ensure_libvirtd(hv)

    def accel(self, hv: Host, order: BootOrder) -> str:
        """"kvm" if a KVM guest really boots on this host, else "tcg" (probed once per host and process)."""
        img = order.images.ship_image(hv, order.images.kernel_image(self, {}))
        return order.images.memoized(("accel", hv.name), lambda: libvirt.probe_accel(
            hv, str(img.kernel), str(img.initrd), order.probe_timeout_s, log_dir=order.logs))

    def start(self, hv: Host, spec: GuestSpec, net: Network, logs: str) -> None:
        libvirt.start(hv, spec, bridge=net.bridge, log_dir=logs)

    def leftovers(self, hv: Host, campaign: str) -> list[str]:
        return libvirt.list_campaign(hv, campaign)

    def destroy(self, hv: Host, name: str) -> None:
        libvirt.destroy(hv, name)

    def destroy_argv(self, hv: Host, name: str) -> list[str]:
        return libvirt.destroy_argv(name)

    def schedstats(self, hv: Host, names: Sequence[str]) -> Mapping[str, Mapping[int, tuple[int, int, int]]] | None:
        return libvirt.vcpu_schedstats(hv, names)

    def pins(self, hv: Host, name: str) -> tuple[tuple[int, ...], ...] | None:
        return libvirt.vcpu_pins(hv, name)
