"""Checks before a campaign touches a host: which inventory and hosts, guest combinations a host can provide,
and the tools the environments need on every host (one UsageError naming what is wrong)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runner import defaults
from runner.execution import environments
from runner.errors import HostError, UsageError
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


def check_host_tools(specs: Sequence[Any], envs: set[str]) -> None:
    """Every host has what the campaign's environments need (virsh, podman, xl), before any trial runs;
    else one UsageError naming the host, the environment and what is missing."""
    wanted = {env: environments.environment(env).host_tools for env in sorted(envs) if environments.environment(env).host_tools}
    if not wanted:
        return

    def missing(spec: Any) -> str | None:
        host = connect(spec)
        try:
            for env, (tools, package) in wanted.items():
                probe = " || ".join(f"command -v {t}" for t in tools)
                if not host.run(["sh", "-c", probe], timeout=30).ok:
                    return f"host {spec.name}: env {env} needs {' or '.join(tools)} ({package}); not found there"
                if (why := environments.environment(env).check_host(host)) is not None:
                    return why
        except HostError:
            return None  # unreachable hosts are handled as dead hosts
        finally:
            host.close()
        return None

    with ThreadPoolExecutor(max_workers=min(16, len(specs)) or 1) as pool:
        problems = [m for m in pool.map(missing, specs) if m]
    if problems:
        raise UsageError(problems[0] + (f" (and {len(problems) - 1} more hosts)" if len(problems) > 1 else ""))
