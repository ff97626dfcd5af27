"""The Environment contract: where on a host a trial's workload runs (the matrix's `env` parameter).

One class per environment, registered by name with `@register("kvm")`, holds everything that environment
is and does; nothing else in the runner branches on an environment's name. A newcomer adds an environment
in one module of this package (runner.provision.environments.qemu is the worked example,
docs/architecture.md walks through it); the registry imports every module the package holds.

What an environment says (class attributes, plain data, read at plan time):

- `starts_guests`: False for `host` (the workload runs on the trial's host itself); True when the
  environment starts guests or containers on the trial's host (its hypervisor host).
- `virtual_machines`: its guests are virtual machines (the `vms` axis boots k of them: k times the set-up),
  booted by the runner and reached over SSH (their `ssh_ready_s` is recorded).
- `accels`: the accelerators its trials may record, the default first (kvm may fall back to tcg).
  `failure_accel`: what a trial that failed before the environment said records (None: unknown).
- `host_tools`: ((commands, any one of which will do), the package that provides them): checked on
  every host before any trial runs.
- `setup_estimate_s`: rough seconds one guest's boot adds to a trial, for plans and progress.
- `boots_kernel`: its guests boot a guest kernel (the matrix's `guest_kernel`); a container has none.
- `console`, `root_device`, `net_modules`: the guest kernel's console argument, the root device of a disk
  image as the guest sees it, and the network drivers the guest's init loads.
- `no_virtual_numa`: why it cannot give a guest virtual NUMA nodes ("" when it can).
- `guest_noun`: what one of its guests is called in messages ("libvirt domain", "container").
- `cpu_noun`: what the CPUs its load runs on are called in reports ("guest vCPUs", "container CPUs").
- `shm_share`: the share of its memory limit a tmpfs in /dev/shm may fill (a guest's is half its RAM).

What an environment does (methods; the hypervisor host `hv` is any Host, this machine or a lab host over
SSH, and every command runs through it):

- plan time, pure: `check_params(params)` refuses a combination no host can provide (UsageError);
  `guest_params(params, host_cpus)` the `describe_guest` parameters of a trial; `setup_seconds(params)`.
- before any trial: `check_host(hv)` says in one line why this host cannot run it (None: it can), after
  its `host_tools` were found.
- boot: `prepare_host(hv)` (start daemons, check the hypervisor), `leftovers(hv, campaign)` (the names of
  that campaign's guests left there by a killed attempt), `boot(hv, order) -> Started` (start the trial's
  k guests on the same host CPUs, wait until each answers, and give a Host for each: how it is reached).
- console: `console_tail(hv, spec, logs)` the last lines of a guest's console, for a boot that failed.
- measure: `schedstats(hv, names)` per-vCPU schedstat of running guests, `pins(hv, name)` the vCPU
  pinning actually applied, `oom_kills(hv, names)` how many processes the OOM killer has ended in each
  running guest's memory cgroup (all None when the environment cannot say).
- destroy and clean up (also `runner cleanup`, runner.provision.leftovers): `destroy(hv, name)` (no-op if gone), `destroy_argv(hv, name)` the same as one
  command for the dead man's switch that runs on the host if the runner dies, `release_network(hv, net)`
  after the last guest is gone.

Errors: HostError when the host itself fails (the runner may drop the host), ProvisionError when the
environment cannot be set up. An environment whose tools a host lacks still registers; `check_host` and
`host_tools` say what is missing when a campaign wants it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from runner import defaults
from runner.hosts.base import Host, Spawned
from runner.errors import HostError, ProvisionError, UsageError
from runner.provision import image, libvirt, rootfs
from runner.provision.guestspec import GuestSpec
from runner.registry import Registry


@dataclass(frozen=True)
class Network:
    """A hypervisor host's guest network (inventory vars runner_guest_bridge, runner_guest_subnet)."""

    bridge: str = libvirt.BRIDGE
    subnet: str = libvirt.SUBNET


class Images(Protocol):
    """The guest images a boot needs, built once on this machine and copied once to a hypervisor host
    (runner.execution.images provides it)."""

    cache: Path  # this machine's cache of builds (keys, images, known_hosts, console logs of local boots)

    def kernel_image(self, env: Environment, params: Mapping[str, Any]) -> image.GuestImage: ...
    def disk_image(self, env: Environment, params: Mapping[str, Any]) -> Any: ...
    def ship_image(self, host: Host, img: image.GuestImage) -> image.GuestImage: ...
    def ship_disk(self, host: Host, img: Any) -> Any: ...
    def guest_catalog(self, img: Any, env: Environment, params: Mapping[str, Any]) -> dict[str, dict[str, str]]: ...
    def disk_catalog(self, img: Any, env: Environment, params: Mapping[str, Any]) -> dict[str, dict[str, str]]: ...
    def container_image(self, host: Host, campaign: str, params: Mapping[str, Any]) -> str: ...
    def memoized(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any: ...


@dataclass(frozen=True)
class BootOrder:
    """What one boot needs, given by the runner: the trial's guest parameters (`guest_params`), the full
    trial parameters, `describe_guest` bound to the environment, the host's topology and the campaign, the
    host's guest network, where consoles are logged on the host, the
    images, how long a guest may take to answer, and the dead man's switch maker (argvs -> Spawned)."""

    campaign: str
    gp: Mapping[str, Any]
    params: Mapping[str, Any]
    describe: Callable[..., GuestSpec]  # (guest params, kernel catalog, index, address=None) -> GuestSpec
    net: Network
    logs: str
    images: Images
    boot_timeout_s: float
    probe_timeout_s: float
    guard: Callable[[Sequence[Sequence[str]]], Spawned]
    boot_id: str


@dataclass
class Started:
    """The k running guests of one boot: their specs, a Host for each, seconds until each answered, the
    accelerator used, the dead man's switch, and the guest image (catalog name, content digest)."""

    specs: list[GuestSpec]
    guests: list[Host]
    ready_s: list[float]
    accel: str
    guard: Spawned
    image: tuple[str, str]


class Environment:
    """One environment (see the module docstring for the contract). Subclasses set the attributes and
    override the methods their environment needs; the defaults describe an environment without guests."""

    name: ClassVar[str] = ""  # set by @register
    starts_guests: ClassVar[bool] = False
    virtual_machines: ClassVar[bool] = False
    accels: ClassVar[tuple[str, ...]] = ("none",)
    failure_accel: ClassVar[str | None] = None
    host_tools: ClassVar[tuple[tuple[str, ...], str] | None] = None
    setup_estimate_s: ClassVar[float] = 0.0
    boots_kernel: ClassVar[bool] = False
    console: ClassVar[str] = "console=ttyS0"
    root_device: ClassVar[str] = "/dev/vda"
    net_modules: ClassVar[tuple[str, ...]] = image.NET_MODULES
    no_virtual_numa: ClassVar[str] = ""
    guest_noun: ClassVar[str] = "guest"
    cpu_noun: ClassVar[str] = "host CPUs"  # what the CPUs a trial's load runs on are called in reports
    shm_share: ClassVar[float] = 1.0  # the share of a memory limit that its /dev/shm (tmpfs) may hold

    def memory_limit_mib(self, params: Mapping[str, Any]) -> int | None:
        """The memory limit a trial runs under (its `memory`; a guest's default when it gives none); None when
        nothing limits it (the bare host, a container without `memory`)."""
        if not self.starts_guests:
            return None
        memory = params.get("memory")
        if isinstance(memory, int) and not isinstance(memory, bool):
            return memory
        return defaults.GUEST_MEMORY_MIB if self.virtual_machines else None

    def shm_mib(self, params: Mapping[str, Any]) -> int | None:
        """What /dev/shm can hold under the trial's memory limit (None: no limit)."""
        limit = self.memory_limit_mib(params)
        return None if limit is None else int(limit * self.shm_share)

    # ---------------------------------------------------------------------------- plan time (pure)

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Refuse, before any trial runs, what `describe_guest` would refuse on every host (UsageError
        naming the keys), from the parameters alone."""
        if not self.starts_guests:
            return
        numa = params.get("guest_numa", 1)
        vcpus = params.get("vcpus")
        if isinstance(numa, int) and numa > 1:
            if self.no_virtual_numa:
                raise UsageError(f"env {self.name} with guest_numa {numa}: {self.no_virtual_numa}")
            if isinstance(vcpus, int) and numa > vcpus:
                raise UsageError(f"env {self.name}: guest_numa {numa} virtual nodes need at least {numa} vCPUs, got vcpus {vcpus}")

    def guest_params(self, params: Mapping[str, Any], host_cpus: int) -> dict[str, Any]:
        """The `describe_guest` parameters of a trial: vcpus (default: all host CPUs), memory (default
        defaults.GUEST_MEMORY_MIB), vms (default defaults.VMS), pin and guest_numa if given, guest_kernel
        (default "default") when the guests boot a kernel."""
        out: dict[str, Any] = {
            "vcpus": params.get("vcpus", host_cpus),
            "memory": params.get("memory", defaults.GUEST_MEMORY_MIB),
            "vms": params.get("vms", defaults.VMS),
        }
        out |= {k: params[k] for k in ("pin", "guest_numa") if k in params}
        if self.boots_kernel:
            out["guest_kernel"] = params.get("guest_kernel", "default")
        return out

    def setup_seconds(self, params: Mapping[str, Any]) -> float:
        """Rough seconds to start a trial's guests (k virtual machines boot at once, roughly k times the work)."""
        vms = int(params.get("vms", defaults.VMS)) if self.virtual_machines else 1
        return self.setup_estimate_s * vms

    # ------------------------------------------------------------------------------ before any trial

    def check_host(self, hv: Host) -> str | None:
        """Why this host cannot run the environment's guests, in one line (None: it can)."""
        return None

    # ------------------------------------------------------------------------------------------ boot

    def prepare_host(self, hv: Host) -> None:
        """Make the host ready to start guests (daemons); ProvisionError if it cannot be."""

    def leftovers(self, hv: Host, campaign: str) -> list[str]:
        """Names of `campaign`'s guests on the host (a killed attempt's or another worker's)."""
        return []

    def boot(self, hv: Host, order: BootOrder) -> Started:
        """Start the trial's guests on the host and return them, reachable (ProvisionError if not)."""
        raise UsageError(f"env {self.name} starts no guests")

    def console_tail(self, hv: Host, spec: GuestSpec, logs: str) -> str:
        """The last lines of the guest's console on the host, on one line ("" if none)."""
        return ""

    # --------------------------------------------------------------------------------------- measure

    def schedstats(self, hv: Host, names: Sequence[str]) -> Mapping[str, Mapping[int, tuple[int, int, int]]] | None:
        """Guest name -> vCPU -> (on-CPU ns, run delay ns, timeslices) in one round trip; None: not known here."""
        return None

    def pins(self, hv: Host, name: str) -> tuple[tuple[int, ...], ...] | None:
        """The host CPUs of each vCPU of a running guest, read back; None: not known here."""
        return None

    def oom_kills(self, hv: Host, names: Sequence[str]) -> Mapping[str, int] | None:
        """Guest name -> processes its memory cgroup's OOM killer has ended so far (a counter that only rises),
        in one round trip, read while the guests run; None: not known here (a guest missing from the
        mapping: not known for that guest)."""
        return None

    # -------------------------------------------------------------------------- destroy and clean up

    def destroy(self, hv: Host, name: str) -> None:
        """Stop guest `name` at once (no-op if it does not exist)."""

    def destroy_argv(self, hv: Host, name: str) -> list[str]:
        """One command that destroys guest `name` on the host (run by the dead man's switch)."""
        return ["true"]

    def release_network(self, hv: Host, net: Network) -> None:
        """After the last guest of a boot is gone: remove what the boot added to the host's network."""


E = TypeVar("E", bound=type[Environment])
# Every module of this package is imported on the first lookup: a new environment is one new module here.
ENVIRONMENTS: Registry[Environment] = Registry("runner.provision.environments", "environment {name!r} is not available; known: {known}",
                                               shared=True)


def register(name: str) -> Callable[[E], E]:
    """Class decorator: the environment `name` (one instance, shared)."""
    return ENVIRONMENTS.register(name)


def get(name: str) -> Environment:
    return ENVIRONMENTS.get(name)


def known() -> tuple[str, ...]:
    """Every environment a trial can name, `host` first."""
    return tuple(sorted(ENVIRONMENTS.names(), key=lambda n: (n != defaults.ENV, n)))


def guest_names() -> tuple[str, ...]:
    """The environments that start guests or containers."""
    return tuple(n for n in known() if get(n).starts_guests)


# ------------------------------------------------------------------------------ helpers for boots


def in_parallel(fns: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the functions in one thread each; return their results, or raise the most telling error."""
    with ThreadPoolExecutor(max_workers=len(fns)) as pool:
        futures = [pool.submit(fn) for fn in fns]
        errors = [e for e in (f.exception() for f in futures) if e is not None]
    if errors:
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (real or errors)[0]
    return [f.result() for f in futures]


def annotate(exc: BaseException, fields: Mapping[str, Any]) -> None:
    """Give a failure what the trial record needs to say which guests it concerned (accel, guest_json and
    the boot's fields): the worker records them with the failed attempt."""
    if getattr(exc, "trial_fields", None) is None:
        with contextlib.suppress(AttributeError):
            exc.trial_fields = dict(fields)  # type: ignore[attr-defined]


def destroy_all(host: Host, env: Environment, specs: Sequence[GuestSpec], guard: Spawned) -> list[str]:
    """Destroy the guests and their disk overlays, then end the dead man's switch (told "done" when all
    went; else it runs its cleanup on the host now). The errors, one line each."""
    errors = []
    for spec in specs:
        try:
            env.destroy(host, spec.name)
            if spec.disk and spec.disk.startswith(f"{rootfs.OVERLAY_DIR}/"):
                gone = host.run(["rm", "-f", spec.disk], timeout=60)
                if not gone.ok:
                    errors.append(f"guest {spec.name}: cannot remove its disk overlay {spec.disk}: {gone.tail()}")
        except (ProvisionError, HostError) as exc:
            errors.append(f"guest {spec.name}: {exc}")
    # Not clean: the guard runs its cleanup on the host now (and again, harmlessly, on what is gone).
    guard.finish("" if errors else "done\n", timeout=120)
    return errors
