"""The one normalized guest description, whatever runs it (libvirt/KVM or TCG, Xen HVM/PV, a container).

`describe_guest` is a pure decision: from one matrix cell's parameters, the host topology and the kernel
catalog it computes everything a hypervisor module needs (`runner.provision.libvirt.domain_xml`,
`runner.provision.xen.xl_config`, `runner.provision.container.start_argv`) and what the dataset records
(`GuestSpec.to_json` goes into the `guest_json` column).

Over-commit: the k guests of one trial (`vms` axis, index 0..k-1) get the SAME host CPUs, so k VMs share
the cores one VM would have alone.

Names are `rnr-<campaign>-<index>-<shortid>` (campaign reduced to [A-Za-z0-9_.-]); `belongs_to` matches
exactly the names a campaign created, so cleanup never touches another campaign's guests.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from runner import defaults
from runner.errors import DatasetError, UnknownNameError, UsageError
from runner.provision.topology import Topology, cell_plan, pin_plan

# Version of GuestSpec.to_json. History:
#   1 - first release (`vms` was added before any dataset held a guest description).
GUEST_SPEC_VERSION = 1

ENVS = defaults.GUEST_ENVS
# Accelerators each environment may record. kvm may fall back to tcg (see libvirt.probe_accel).
ACCELS = {"kvm": ("kvm", "tcg"), "xen-hvm": ("xen",), "xen-pvh": ("xen",), "xen-pv": ("xen",), "container": ("none",)}
NAME_PREFIX = "rnr"


@dataclass(frozen=True)
class GuestSpec:
    """Everything needed to start one guest. CPU sets are tuples of host CPU ids; empty means unpinned.

    vcpu_pins[i] are the host CPUs vCPU i may run on; numa_cells[j] is (guest vCPUs of cell j, MiB of cell j,
    host NUMA node backing it); an empty numa_cells means a flat guest. For a container, vcpus is the
    cpuset size and the kernel fields are ''.
    """

    env: str
    name: str
    campaign: str
    index: int
    vcpus: int
    memory_mib: int
    vcpu_pins: tuple[tuple[int, ...], ...]
    emulator_pins: tuple[int, ...]
    numa_cells: tuple[tuple[tuple[int, ...], int, int], ...]
    kernel: str
    initrd: str
    cmdline: str
    accel: str
    guest_kernel: str
    disk: str | None = None
    vms: int = 1  # guests of the trial (over-commit); all get the same host CPUs

    @property
    def host_cpus(self) -> tuple[int, ...]:
        """All host CPUs the guest's vCPUs are pinned to (sorted, unique); empty if unpinned."""
        return tuple(sorted({c for pins in self.vcpu_pins for c in pins}))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal specs give equal strings."""
        data = asdict(self)
        data["spec_version"] = GUEST_SPEC_VERSION
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GuestSpec:
        data = json.loads(text)
        version = data.pop("spec_version", None)
        if version != GUEST_SPEC_VERSION:
            raise DatasetError(f"guest description version {version!r} is not supported; this runner reads {GUEST_SPEC_VERSION}")
        return cls(
            **{
                **data,
                "vcpu_pins": tuple(tuple(p) for p in data["vcpu_pins"]),
                "emulator_pins": tuple(data["emulator_pins"]),
                "numa_cells": tuple((tuple(cpus), mib, node) for cpus, mib, node in data["numa_cells"]),
            }
        )


def campaign_slug(campaign: str) -> str:
    """The campaign name as it appears in guest, container and image names."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", campaign)
    if not slug:
        raise UsageError(f"campaign name {campaign!r} has no usable characters for guest names")
    return slug


def belongs_to(name: str, campaign: str) -> bool:
    """True if `name` is a guest/container name made by `describe_guest` for `campaign` (and no other)."""
    return re.fullmatch(rf"{NAME_PREFIX}-{re.escape(campaign_slug(campaign))}-\d+-[0-9a-f]{{8}}", name) is not None


# What an environment needs on its hypervisor host: alternatives of a command, and the package to install.
HOST_TOOLS = {
    "kvm": (("virsh",), "libvirt-clients and libvirt-daemon-system"),
    "container": (("podman", "docker"), "podman and runc"),
    "xen-hvm": (("xl",), "a Xen dom0 with xen-utils"),
    "xen-pvh": (("xl",), "a Xen dom0 with xen-utils"),
    "xen-pv": (("xl",), "a Xen dom0 with xen-utils"),
}


def check_guest_params(env: str, params: Mapping[str, Any]) -> None:
    """Refuse, before any trial runs, a combination the environment cannot provide (UsageError naming
    the keys): what describe_guest would refuse for every host, checked on the parameters alone. Pure."""
    if env == "host":
        return
    numa = params.get("guest_numa", 1)
    vcpus = params.get("vcpus")
    if isinstance(numa, int) and numa > 1:
        if env == "xen-pv":
            raise UsageError(f"env xen-pv with guest_numa {numa}: Xen does not support virtual NUMA for PV guests (xl.cfg(5), vnuma)")
        if env == "container":
            raise UsageError(f"env container with guest_numa {numa}: a container has no virtual NUMA nodes")
        if isinstance(vcpus, int) and numa > vcpus:
            raise UsageError(f"env {env}: guest_numa {numa} virtual nodes need at least {numa} vCPUs, got vcpus {vcpus}")


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` split into `parts` integers differing by at most one, larger ones first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _int_param(params: Mapping[str, Any], key: str, default: int | None, minimum: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"guest parameter {key}: {value!r} is not an integer")
    if value < minimum:
        raise UsageError(f"guest parameter {key}: {value} is below {minimum}")
    return value


def describe_guest(
    env: str,
    params: Mapping[str, Any],
    topo: Topology,
    catalog: Mapping[str, Mapping[str, str]],
    campaign: str,
    index: int,
    *,
    address: str | None = None,
) -> GuestSpec:
    """The GuestSpec of guest `index` of a trial.

    params: vcpus, memory (MiB), pin ("packed"|"spread"|"none", default packed), guest_numa (virtual
    nodes, vCPUs and memory split evenly; 0 or 1 = flat), guest_kernel (catalog key; not for containers),
    accel (default: kvm, xen or none by env; kvm may be "tcg"), disk (optional image path), vms (guests
    of the trial, default 1; recorded in the spec).
    catalog: {name: {kernel, initrd, cmdline}}. address ("10.214.0.5/24") is appended to the kernel
    command line as runner.ip=, read by the guest image's init.
    """
    if env not in ENVS:
        raise UnknownNameError(f"no guest environment {env!r}; known: {', '.join(ENVS)}")
    known = {"vcpus", "memory", "pin", "guest_numa", "guest_kernel", "accel", "disk", "vms"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise UsageError(f"unknown guest parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    vcpus = _int_param(params, "vcpus", None, 1)
    memory = _int_param(params, "memory", None, defaults.GUEST_MEMORY_MIN_MIB)
    numa = _int_param(params, "guest_numa", 1, 0)
    vms = _int_param(params, "vms", defaults.VMS, 1)
    accel = params.get("accel", ACCELS[env][0])
    if accel not in ACCELS[env]:
        raise UsageError(f"guest parameter accel: {accel!r} is not possible with {env}; allowed: {', '.join(ACCELS[env])}")
    if numa > vcpus:
        raise UsageError(f"guest parameter guest_numa: {numa} virtual nodes need at least {numa} vCPUs, got {vcpus}")
    if numa > 1 and env == "xen-pv":
        raise UsageError("guest parameter guest_numa: Xen does not support virtual NUMA for PV guests (xl.cfg(5), vnuma)")
    if numa > 1 and env == "container":
        raise UsageError("guest parameter guest_numa: a container has no virtual NUMA nodes")

    cells: list[tuple[tuple[int, ...], int, int]] = []
    if numa > 1:
        # Each virtual node's memory on the host node its vCPUs are pinned to (see topology.cell_plan).
        sizes = split_evenly(vcpus, numa)
        plan, nodes = cell_plan(topo, sizes, params.get("pin", "packed"))
        first = 0
        for n_cpus, mib, node in zip(sizes, split_evenly(memory, numa), nodes, strict=True):
            cells.append((tuple(range(first, first + n_cpus)), mib, node))
            first += n_cpus
    else:
        plan = pin_plan(topo, vcpus, params.get("pin", "packed"))
    vcpu_pins = tuple((cpu,) for cpu in plan)
    emulator_pins = tuple(sorted(set(plan)))

    kernel = initrd = cmdline = guest_kernel = ""
    if env != "container":
        guest_kernel = params.get("guest_kernel", "")
        if guest_kernel not in catalog:
            known_kernels = ", ".join(sorted(catalog)) or "(catalog is empty)"
            raise UnknownNameError(f"no guest kernel {guest_kernel!r}; known: {known_kernels}")
        entry = catalog[guest_kernel]
        kernel, initrd, cmdline = entry["kernel"], entry.get("initrd", ""), entry.get("cmdline", "")
        if address:
            cmdline = f"{cmdline} runner.ip={address}".strip()

    spec = GuestSpec(
        env=env,
        name="",
        campaign=campaign,
        index=index,
        vcpus=vcpus,
        memory_mib=memory,
        vcpu_pins=vcpu_pins,
        emulator_pins=emulator_pins,
        numa_cells=tuple(cells),
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        accel=accel,
        guest_kernel=guest_kernel,
        disk=params.get("disk"),
        vms=vms,
    )
    short = hashlib.sha256(spec.to_json().encode()).hexdigest()[:8]
    return replace(spec, name=f"{NAME_PREFIX}-{campaign_slug(campaign)}-{index}-{short}")
