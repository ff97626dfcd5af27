"""`xen-hvm`, `xen-pvh`, `xen-pv`: Xen guests created with xl on the hypervisor host's dom0
(runner.provision.xen drives xl; one class per guest type)."""

from __future__ import annotations

from typing import ClassVar

from runner.errors import ProvisionError
from runner.hosts.base import Host
from runner.provision import image, xen
from runner.provision.environments.base import Network, register
from runner.provision.environments.vm import VirtualMachines
from runner.provision.guestspec import GuestSpec, belongs_to


class XenGuests(VirtualMachines):
    xl_type: ClassVar[str] = "pv"  # xl.cfg(5) `type`
    guest_noun = "Xen domain"
    accels = ("xen",)
    host_tools = (("xl",), "a Xen dom0 with xen-utils")
    console = "console=hvc0"
    root_device = "/dev/xvda"
    net_modules = image.NET_MODULES + image.XEN_NET_MODULES

    def check_host(self, hv: Host) -> str | None:
        return xen.check_can_run(hv, self.xl_type, self.name)

    def prepare_host(self, hv: Host) -> None:
        if hv.run(["sh", "-c", "command -v xl"], timeout=30).rc != 0:
            raise ProvisionError(f"{hv.name}: {self.name} needs a Xen dom0 with xl; this host has none")

    def start(self, hv: Host, spec: GuestSpec, net: Network, logs: str) -> None:
        xen.start(hv, spec, self.xl_type, bridge=net.bridge, log_dir=logs)

    def console_log(self, spec: GuestSpec, logs: str) -> str:
        return xen.console_log(spec.name, self.xl_type)

    def leftovers(self, hv: Host, campaign: str) -> list[str]:
        return [n for n in xen.xl_domains(hv) if belongs_to(n, campaign)]

    def destroy(self, hv: Host, name: str) -> None:
        xen.destroy(hv, name)

    def destroy_argv(self, hv: Host, name: str) -> list[str]:
        return xen.xl_destroy_argv(name)


@register("xen-hvm")
class XenHvm(XenGuests):
    xl_type = "hvm"
    console = "console=ttyS0"  # the emulated serial port


@register("xen-pvh")
class XenPvh(XenGuests):
    xl_type = "pvh"


@register("xen-pv")
class XenPv(XenGuests):
    xl_type = "pv"
    no_virtual_numa = "Xen does not support virtual NUMA for PV guests (xl.cfg(5), vnuma)"
