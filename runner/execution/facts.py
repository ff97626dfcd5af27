"""Facts of a campaign's hosts: collected before the first trial and after the last, compared with the
previous launch's, stored with the dataset."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runner.errors import HostError, RunnerError
from runner.execution.dispatch import Progress
from runner.execution.worker import host_cpus
from runner.provision.fingerprint import collect_on, diff_fingerprints
from runner.provision.inventory import connect
from runner.records.store import CampaignStore

def collect_facts(spec: Any) -> dict[str, Any]:
    """Facts of one host: its fingerprint where the collector runs, at least its CPU count.

    Raises HostError when the host cannot be reached; a failing collector only leaves `facts_error`.
    """
    host = connect(spec)
    try:
        facts: dict[str, Any] = {"host": spec.name, "cpus": host_cpus(host)}
        try:
            facts.update(collect_on(host))
        except HostError:
            raise
        except RunnerError as exc:
            facts["facts_error"] = str(exc)
        return facts
    finally:
        host.close()


def collect_all(specs: Sequence[Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Facts of every host, collected in parallel: (facts by host, reason by unreachable host)."""
    if not specs:
        return {}, {}

    def one(spec: Any) -> tuple[str, dict[str, Any] | None, str | None]:
        try:
            return spec.name, collect_facts(spec), None
        except HostError as exc:
            return spec.name, None, str(exc)

    with ThreadPoolExecutor(max_workers=min(16, len(specs))) as pool:
        results = list(pool.map(one, specs))
    facts = {name: f for name, f, _ in results if f is not None}
    dead = {name: why for name, _, why in results if why is not None}
    return facts, dead


def fact_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """'path: old -> new' for every fact that differs (pure)."""
    return [f"{c.path}: {c.old!r} -> {c.new!r}" for c in diff_fingerprints(before, after)]


def describe_changes(host: str, changes: Sequence[str], when: str, limit: int = 3) -> str:
    """One line for the progress display and the summary (pure)."""
    shown = "; ".join(changes[:limit])
    more = f" (+{len(changes) - limit} more)" if len(changes) > limit else ""
    return f"{host}: facts changed {when}: {shown}{more}"



def facts_after(
    store: CampaignStore,
    specs: Sequence[Any],
    before: Mapping[str, Mapping[str, Any]],
    progress: Progress,
    on_progress: Callable[[Progress], None] | None,
) -> list[str]:
    """Take the facts of the hosts again, store them, and return a line per host that changed."""
    after, gone = collect_all(specs)
    lines = []
    for name, f in sorted(after.items()):
        store.write_host_facts(name, f, when="after")
        if diff := fact_changes(before.get(name, {}), f):
            lines.append(describe_changes(name, diff, "during the campaign"))
    lines += [f"{name}: facts after the campaign not taken: {why}" for name, why in sorted(gone.items())]
    if lines:
        progress.messages.extend(lines)
        (on_progress or (lambda p: None))(progress)
    return lines

