"""Checks before a campaign touches a host: which inventory and hosts, guest combinations a host can provide,
and the tools the environments need on every host (one UsageError naming what is wrong)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runner import defaults
from runner.execution import environments, placement
from runner.provision import environments as envs
from runner.provision import xen
from runner.util import one_line
from runner.errors import HostError, RunnerError, UsageError
from runner.matrix.load import Matrix
from runner.provision.inventory import check_known_hosts, connect, load_inventory
from runner.trials import Trial

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def inventory_path(matrix: Matrix, inventory: str | Path | None = None) -> Path:
    """The inventory a campaign uses: given, else the matrix's, else inventory/ beside it, else the project's."""
    path = inventory or matrix.inventory
    if path is None:
        beside = matrix.path.parent / "inventory"
        path = beside if beside.exists() else PROJECT_ROOT / "inventory"
    return Path(path)


def resolve_hosts(matrix: Matrix, inventory: str | Path | None = None, known_hosts: str | Path | None = None) -> list[Any]:
    """HostSpecs of the matrix's host group, read through Ansible's inventory loading. `known_hosts` (a
    command's --known-hosts or RUNNER_KNOWN_HOSTS) wins over the inventory's; every known_hosts file the
    hosts use is checked here, before anything connects (UsageError naming it)."""
    # An inventory script runs only when the user named the inventory (not the matrix's, not one found by default).
    specs = load_inventory(inventory_path(matrix, inventory), known_hosts, scripts=inventory is not None).resolve(matrix.hosts)
    check_known_hosts(specs)
    return specs


def check_guests(matrix: Matrix, trials: Sequence[Trial]) -> None:
    """Refuse guest combinations no host can provide (e.g. xen-pv with guest_numa), naming the file."""
    for t in trials:
        p = t.param_dict
        try:
            environments.environment(str(p.get("env", defaults.ENV))).check_params(p)
        except UsageError as exc:
            raise UsageError(f"{matrix.path}: {exc}") from None


def check_host_envs(specs: Sequence[Any]) -> None:
    """Every environment an inventory host names in runner_envs is a known one (UsageError naming the host and
    the known ones)."""
    known = envs.known()
    for spec in specs:
        for env in getattr(spec, "envs", None) or ():
            if env not in known:
                raise UsageError(f"host {spec.name}: runner_envs: no environment {env!r}; known: {', '.join(known)}")


def host_abilities(specs: Sequence[Any], wanted_envs: set[str]) -> tuple[dict[str, dict[str, str | None]], set[str]]:
    """What each reachable host can run of `envs`, found on the host: (host -> env -> None or why not, the
    hosts that are a Xen dom0). A host runs an environment when the inventory lets it (runner_envs, when
    given), it has the environment's tools (virsh, podman, xl) and the environment's own check passes
    (e.g. the Xen's virt_caps, KVM refused in a dom0). Hosts that cannot be reached are left out (they are
    handled as dead hosts)."""
    check_host_envs(specs)
    wanted = sorted(wanted_envs)
    declared = placement.declared_abilities(wanted, specs)

    # One command per host finds every environment's tools and whether it is a Xen dom0 (a round trip to a
    # nested or distant host can take seconds); then each environment's own check runs where its tools are.
    script = "; ".join([f"{xen.DOM0_PROBE} && echo dom0"] + [
        f"{{ {' || '.join(f'command -v {shlex.quote(t)}' for t in environments.environment(env).host_tools[0])}; }} >/dev/null "
        f"&& echo {shlex.quote(env)}" for env in wanted if environments.environment(env).host_tools] + ["true"])

    def probe(spec: Any) -> tuple[str, dict[str, str | None], bool] | None:
        host = connect(spec)
        try:
            found: dict[str, str | None] = {}
            listed = host.run(["sh", "-c", script], timeout=60)
            if not listed.ok:
                raise HostError(f"{spec.name}: cannot look for the environments' tools: {listed.tail()}")
            present = set(listed.stdout.split())
            dom0 = "dom0" in present
            for env in wanted:
                if (why := declared[spec.name][env]) is not None:
                    found[env] = why
                    continue
                environment = environments.environment(env)
                if environment.host_tools and env not in present:
                    tools, package = environment.host_tools
                    found[env] = f"needs {' or '.join(tools)} ({package}); not found there"
                    continue
                try:
                    found[env] = _clause(environment.check_host(host), spec.name, env)
                except HostError:
                    raise
                except RunnerError as exc:  # e.g. `xl info` failing: the environment cannot run there
                    found[env] = _clause(one_line(exc), spec.name, env)
            return spec.name, found, dom0
        except HostError:
            return None  # unreachable hosts are handled as dead hosts
        finally:
            host.close()

    with ThreadPoolExecutor(max_workers=min(16, len(specs)) or 1) as pool:
        results = [r for r in pool.map(probe, specs) if r is not None]
    return {name: found for name, found, _ in results}, {name for name, _, dom0 in results if dom0}


def _clause(why: str | None, host: str, env: str) -> str | None:
    """An environment's one-line refusal without the "host H: env E: " it may start with (the placement's
    messages name both)."""
    if why is None:
        return None
    for prefix in (f"host {host}: ", f"env {env}: "):
        why = why.removeprefix(prefix)
    return why


def place_hosts(specs: Sequence[Any], wanted: set[str], group: str = "") -> placement.EnvPlacement:
    """Which of the reachable hosts take which environments (placement.place_envs over host_abilities); an
    environment no host can run is one UsageError naming it, the hosts and why."""
    abilities, dom0 = host_abilities(specs, wanted)
    own = {e for e in wanted if not environments.environment(e).virtual_machines}
    return placement.place_envs(sorted(wanted), abilities, group=group, own_kernel=own, dom0=dom0)


def check_host_tools(specs: Sequence[Any], wanted: set[str]) -> None:
    """Every host has what the campaign's environments need (virsh, podman, xl), before any trial runs;
    else one UsageError naming the host, the environment and what is missing. (A campaign's launch uses
    place_hosts instead: a host needs only what its own environments need.)"""
    abilities, _ = host_abilities(specs, wanted)
    problems = [f"host {name}: env {env} {why}" if why.startswith("needs") else f"host {name}: env {env}: {why}"
                for name, found in abilities.items() for env, why in found.items() if why is not None]
    if problems:
        raise UsageError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
