"""The boot registry: the guests this worker process keeps running, one configuration per hypervisor host.

For one trial, `provide` finds the running guests of the same configuration on that host (`Boot`) or boots
them through the trial's environment (runner.provision.environments: it starts the trial's `vms` guests on
the SAME host CPUs and waits until each answers), then reads what each guest reports about itself (kernel
release, command line, CPUs, paravirtual features) and the pinning applied. A dead man's switch on the
hypervisor host (`Host.spawn`) destroys the guests if this worker process or its connection dies (Ctrl-C,
SIGKILL of the controller, a killed Dask worker). Guests are destroyed by `release` (another configuration
arrives, a trial failed, the campaign ends: `release_all`) and dropped unseen by `forget` (the host failed).

Booting has its own limit, boot_timeout_s() (env RUNNER_GUEST_BOOT_TIMEOUT).
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

from runner.errors import HostError, ProvisionError
from runner.execution import images
from runner.hosts.base import Host, Spawned
from runner.provision import kernelfacts, libvirt
from runner.provision.environments import BootOrder, Environment, Network, destroy_all, in_parallel
from runner.provision.guest import GuestSpec, campaign_slug, describe_guest
from runner.provision.topology import Topology
from runner.trials import guest_config_key
from runner.util import env_seconds
from runner.workloads.base import Workload, WorkloadContext

def boot_timeout_s() -> float:  # read when used: a bad value fails the trial with one line, in its worker
    return env_seconds("RUNNER_GUEST_BOOT_TIMEOUT", 240.0)


def probe_timeout_s() -> float:  # a nested KVM host boots its probe slowly
    return env_seconds("RUNNER_PROBE_TIMEOUT", 15.0)

# Prints what a guest reports about itself, one "key value" line each.
# Prints what a guest reports about itself, one "key value" line each.
FACTS_SCRIPT = (
    'echo "kernel_release $(uname -r)"; echo "cmdline $(cat /proc/cmdline)"; '
    'echo "online_cpus $(cat /sys/devices/system/cpu/online 2>/dev/null)"; '
    'echo "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"; '
    'echo "hypervisor $(dmesg 2>/dev/null | grep -o "Hypervisor detected: .*" | head -n 1 | cut -d: -f2)"; '
    '{ dmesg 2>/dev/null | grep -qi "stealtime\\|steal time" || awk \'/^cpu /{exit !($9 > 0)}\' /proc/stat; } && echo "pv steal_time"; '
    'dmesg 2>/dev/null | grep -qi "PV spinlocks enabled\\|paravirt.*spinlock" && echo "pv pv_spinlocks"; '
    'dmesg 2>/dev/null | grep -qi "kvm-clock" && echo "pv kvm_clock"; '
    # The Xen guest type as Linux sees it: /sys/hypervisor/guest_type (PV, PVH or HVM); else a PV guest's
    # Linux detects "Xen PV" (PVH and HVM guests detect "Xen HVM")
    't=$(cat /sys/hypervisor/guest_type 2>/dev/null); '
    '{ [ "$t" = PV ] || { [ -z "$t" ] && dmesg 2>/dev/null | grep -q "Hypervisor detected: Xen PV"; }; } && echo "pv xen_pv"; '
    '[ "$t" = PVH ] && echo "pv xen_pvh"; ' + kernelfacts.FACTS_LINES + 'exit 0'
)


def parse_guest_facts(text: str) -> dict[str, Any]:
    """FACTS_SCRIPT's output -> {kernel_release, cmdline, online_cpus, clocksource, hypervisor, pv_features}."""
    facts: dict[str, Any] = {"pv_features": []}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "pv":
            facts["pv_features"].append(value.strip())
        elif key:
            facts[key] = value.strip()
    return facts


@dataclass
class Boot:
    """The k running guests (or containers) of one configuration on one hypervisor host."""

    env: Environment
    key: str
    boot_id: str
    hypervisor: Host
    specs: list[GuestSpec]
    guests: list[Host]
    ready_s: list[float]
    accel: str
    guard: Spawned
    net: Network
    image: tuple[str, str] = ("minimal", "")  # guest image catalog name, content digest
    facts: list[dict[str, Any]] = field(default_factory=list)
    prepared: set[str] = field(default_factory=set)
    trials: int = 0  # trials served so far

    def alive(self) -> bool:
        """Every guest still answers (a cheap command over its kept connection)."""
        try:
            return all(g.run(["true"], timeout=20).ok for g in self.guests)
        except HostError:
            return False


_boots: dict[str, Boot] = {}  # hypervisor host name -> its running guests (one configuration at a time)
_boots_lock = threading.Lock()

_GUARD_SCRIPT = 'read -r line; [ "$line" = done ] && exit 0; eval "$1"; exit 0'


def _guard(host: Host, cleanup: Sequence[Sequence[str]]) -> Spawned:
    """A dead man's switch on the hypervisor host: runs `cleanup` unless told "done" on its stdin."""
    script = "; ".join(shlex.join([*argv]) + " >/dev/null 2>&1" for argv in cleanup)
    return host.spawn(["sh", "-c", _GUARD_SCRIPT, "runner-guard", script])


def _network(ctx: WorkloadContext) -> Network:
    net = ctx.extra.get("guest_network") or {}
    return Network(net.get("bridge") or libvirt.BRIDGE, net.get("subnet") or libvirt.SUBNET)


def provide(environment: Environment, host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext) -> Boot:
    """The running guests for this trial: the host's current boot if it has this configuration and is
    alive, else a new boot (the previous one is destroyed first: a host runs one configuration at a time)."""
    campaign = str(ctx.extra.get("campaign", "campaign"))
    gp = environment.guest_params(params, ctx.cpus)
    key = guest_config_key(environment.name, {**gp, **{k: params.get(k) for k in ("guest_kernel_spec", "guest_image", "guest_image_spec")}},
                           campaign)
    with _boots_lock:
        boot = _boots.get(host.name)
    if boot is not None and (boot.key != key or not boot.alive()):
        release(host.name)
        boot = None
    if boot is None:
        boot = _boot(environment, host, plugin, params, ctx, gp, key)
        with _boots_lock:
            _boots[host.name] = boot
    return boot


def _describe(env: str, topo: Topology, campaign: str, gp: Mapping[str, Any], catalog: Mapping[str, Mapping[str, str]], index: int,
              address: str | None = None) -> GuestSpec:
    return describe_guest(env, gp, topo, catalog, campaign, index, address=address)


def _boot(environment: Environment, host: Host, plugin: Workload, params: Mapping[str, Any], ctx: WorkloadContext,
          gp: Mapping[str, Any], key: str) -> Boot:
    environment.prepare_host(host)  # first: a host that cannot run the environment costs no image build
    campaign = str(ctx.extra.get("campaign", "campaign"))
    shop = images.Shop(plugin)
    net = _network(ctx)
    logs = str(shop.cache / "logs" / campaign_slug(campaign)) if host.is_local else libvirt.LOG_DIR
    topo = images.host_topology(host)
    for name in environment.leftovers(host, campaign):  # a killed attempt's or another worker's guests
        environment.destroy(host, name)
    boot_id = uuid.uuid4().hex[:12]
    order = BootOrder(campaign=campaign, gp=gp, params=params, describe=partial(_describe, environment.name, topo, campaign), net=net,
                      logs=logs, images=shop, boot_timeout_s=boot_timeout_s(), probe_timeout_s=probe_timeout_s(),
                      guard=partial(_guard, host), boot_id=boot_id)
    started = environment.boot(host, order)
    boot = Boot(environment, key, boot_id, host, started.specs, started.guests, started.ready_s, started.accel, started.guard, net,
                image=started.image)
    try:
        boot.facts = in_parallel([_facts_reader(boot, i) for i in range(len(boot.specs))])
    except BaseException:
        _release_boot(boot, raise_errors=False)
        raise
    return boot


def _facts_reader(boot: Boot, i: int) -> Callable[[], dict[str, Any]]:
    def read() -> dict[str, Any]:
        guest = boot.guests[i]
        try:
            facts = parse_guest_facts(guest.run(["sh", "-c", FACTS_SCRIPT], timeout=60).stdout)
        except HostError as exc:
            guest_lost(boot.hypervisor, boot.specs[i], exc)
        with contextlib.suppress(ProvisionError):
            pins = boot.env.pins(boot.hypervisor, boot.specs[i].name)
            if pins is not None:
                facts["pins_applied"] = [list(p) for p in pins]
        return facts

    return read


def _release_boot(boot: Boot, *, raise_errors: bool) -> None:
    for guest in boot.guests:
        with contextlib.suppress(Exception):
            guest.close()
    errors = destroy_all(boot.hypervisor, boot.env, boot.specs, boot.guard)
    boot.env.release_network(boot.hypervisor, boot.net)
    if errors and raise_errors:
        raise ProvisionError(f"cannot destroy {errors[0]}")


def release(host_name: str, *, raise_errors: bool = False) -> None:
    """Destroy the guests this process keeps on a hypervisor host (no-op if none)."""
    with _boots_lock:
        boot = _boots.pop(host_name, None)
    if boot is not None:
        _release_boot(boot, raise_errors=raise_errors)


def forget(host_name: str) -> None:
    """The hypervisor host failed: drop its boot without talking to it (its dead man's switch cleans up
    when the connection is gone)."""
    with _boots_lock:
        boot = _boots.pop(host_name, None)
    if boot is not None:
        for guest in boot.guests:
            with contextlib.suppress(Exception):
                guest.close()


def release_all(campaign: str | None = None) -> int:
    """Destroy every boot this process keeps (of `campaign` only, if given); returns how many."""
    with _boots_lock:
        names = [n for n, b in _boots.items() if campaign is None or b.specs[0].campaign == campaign]
    for name in names:
        with contextlib.suppress(Exception):
            release(name)
    return len(names)


def guest_lost(host: Host, spec: GuestSpec, exc: HostError) -> NoReturn:
    """A guest's connection broke: a HostError of the hypervisor host if that is what went (the runner then
    drops the host), else a ProvisionError naming the guest and its host (the trial fails)."""
    host.run(["true"], timeout=15)  # raises HostError when the hypervisor host itself is gone
    raise ProvisionError(f"guest vm {spec.index} ({spec.name}) on {host.name}: {exc}") from None

