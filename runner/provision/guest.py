"""The one normalized guest description, whatever runs it (libvirt/KVM or TCG, Xen HVM/PV, a container).

`describe_guest` is a pure decision: from one matrix cell's parameters, the host topology and the kernel
catalog it computes everything a hypervisor module needs (`runner.provision.libvirt.domain_xml`,
`runner.provision.xen.xl_config`, `runner.provision.container.start_argv`) and what the dataset records
(`GuestSpec.to_json` goes into the `guest_json` column).

Over-commit: the k guests of one trial (`vms` axis, index 0..k-1) get the SAME host CPUs, so k VMs share
the cores one VM would have alone.

What each environment allows (accelerators, virtual NUMA, a kernel of its own) is said by the environment
(runner.provision.environments); GuestSpec and the guest names live in runner.provision.guestspec.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from runner import defaults
from runner.errors import UnknownNameError, UsageError
from runner.provision import environments
from runner.provision.guestspec import GUEST_SPEC_VERSION, NAME_PREFIX, GuestSpec, belongs_to, campaign_slug
from runner.provision.topology import Topology, cell_plan, pin_plan

__all__ = ["GUEST_SPEC_VERSION", "NAME_PREFIX", "GuestSpec", "belongs_to", "campaign_slug", "describe_guest", "split_evenly"]


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
    environment = environments.get(env) if env in environments.known() else None
    if environment is None or not environment.starts_guests:
        raise UnknownNameError(f"no guest environment {env!r}; known: {', '.join(environments.guest_names())}")
    known = {"vcpus", "memory", "pin", "guest_numa", "guest_kernel", "accel", "disk", "vms"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise UsageError(f"unknown guest parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    vcpus = _int_param(params, "vcpus", None, 1)
    memory = _int_param(params, "memory", None, defaults.GUEST_MEMORY_MIN_MIB)
    numa = _int_param(params, "guest_numa", 1, 0)
    vms = _int_param(params, "vms", defaults.VMS, 1)
    accels = environment.accels
    accel = params.get("accel", accels[0])
    if accel not in accels:
        raise UsageError(f"guest parameter accel: {accel!r} is not possible with {env}; allowed: {', '.join(accels)}")
    if numa > vcpus:
        raise UsageError(f"guest parameter guest_numa: {numa} virtual nodes need at least {numa} vCPUs, got {vcpus}")
    if numa > 1 and environment.no_virtual_numa:
        raise UsageError(f"guest parameter guest_numa: {environment.no_virtual_numa}")

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
    if environment.boots_kernel:
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
