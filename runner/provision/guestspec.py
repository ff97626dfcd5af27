"""The one normalized guest description (`GuestSpec`) and the names guests get, whatever runs them.

`runner.provision.guest.describe_guest` computes a GuestSpec from one matrix cell; the hypervisor modules
(libvirt, xen, container, the environments) read it. Names are `rnr-<campaign>-<index>-<shortid>` (campaign
reduced to [A-Za-z0-9_.-]); `belongs_to` matches exactly the names a campaign created, so cleanup never
touches another campaign's guests.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from runner.errors import DatasetError, UsageError

# Version of GuestSpec.to_json. History:
#   1 - first release (`vms` was added before any dataset held a guest description).
GUEST_SPEC_VERSION = 1

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
