"""Campaigns on remote hosts: the namespace test bed's real sshds, reached over SSH through Dask workers.

Also the helpers the fault and scheduler tests share: a matrix for the test bed, and the clean-up of the
campaign's work directories (the test bed hosts share this machine's filesystem).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from runner.execution import campaign
from runner.execution.campaign import WORKDIR_ROOT, describe_changes, fact_changes, workdir_for
from runner.matrix.load import Matrix, load_matrix
from runner.records.store import CampaignStore, read_campaign
from runner.testing.testbed import TestBed

WORK_BASE = Path(WORKDIR_ROOT)
# A command trial that reports one metric; $RUNNER_WORKDIR is the campaign's directory on the host.
ECHO = 'echo "{\\"n\\": 1}"'


def bed_matrix(
    tmp: Path,
    bed: TestBed,
    *,
    run: str = ECHO,
    axes: str = "  x: [1, 2]\n",
    reps: int = 1,
    timeout: float = 30,
    placement: str = "pool",
    retry: str = "{attempts: 2, on: [failed, timeout, host]}",
    workload: str | None = None,
    group: str = "testbed",
) -> Matrix:
    """A matrix over the test bed's group with a unique campaign name (work directories are shared)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    body = workload or f"workload:\n  name: command\n  params:\n    run: {json.dumps(run)}\n"
    path = tmp / f"{name}.yml"
    path.write_text(
        f"campaign: {name}\n"
        f"hosts: {{group: {group}, placement: {placement}, inventory: {bed.inventory_path}}}\n"
        f"{body}"
        f"axes:\n{axes}"
        f"repetitions: {reps}\ntimeout: {timeout}\nretry: {retry}\n"
    )
    return load_matrix(path)


def remove_workdirs(campaign_name: str) -> None:
    shutil.rmtree(WORK_BASE / campaign_name, ignore_errors=True)


def run_campaign(matrix: Matrix, datasets: Path, campaigns: list[str], **kwargs: object) -> campaign.Summary:
    campaigns.append(matrix.campaign)
    return campaign.launch(matrix, datasets=datasets, hosts=campaign.resolve_hosts(matrix), **kwargs)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.netns
def test_lockbench_over_ssh_built_once_per_host(testbed: TestBed, tmp_path: Path, campaigns: list[str]) -> None:
    workload = "workload: {name: lockbench, params: {duration: 0.1}}\n"
    matrix = bed_matrix(tmp_path, testbed, workload=workload, axes="  lock: [ttas, ticket]\n  threads: [1, '100%']\n", reps=3)
    messages: list[str] = []
    summary = run_campaign(matrix, tmp_path / "ds", campaigns, on_progress=lambda p: messages.extend(p.messages[len(messages):]))
    assert summary.success and summary.ok == 12 and summary.attempts == 12
    assert summary.dead_hosts == () and summary.host_changes == ()

    metrics, trials, prov = read_campaign(summary.dataset)
    assert set(trials["status"]) == {"ok"} and trials["trial_id"].is_unique
    assert set(trials["host"]) == {"tb1", "tb2", "tb3"}  # the pool spread over every host
    assert (metrics[(metrics["metric"] == "throughput") & metrics["thread"].isna()]["value"] > 0).all()
    # The CPU count each host reported resolved '100%'; facts were taken before and after.
    assert set(prov["hosts"]) == {"tb1", "tb2", "tb3"} and all(f["cpus"] >= 1 for f in prov["hosts"].values())
    assert prov["host_changes"] == [] and prov["dead_hosts"] == {}
    assert sorted(p.name for p in (summary.dataset / "hosts").glob("*.after.json")) == [f"tb{i}.after.json" for i in (1, 2, 3)]

    # lockbench was built once per host, during that host's first trial, not again later.
    for host, group in trials.groupby("host"):
        spec = next(s for s in campaign.resolve_hosts(matrix) if s.name == host)
        binaries = list(Path(workdir_for(matrix, spec)).glob("lockbench-*"))
        assert len(binaries) == 1
        starts = sorted(ts.timestamp() for ts in group["started_at"])
        assert len(starts) < 2 or binaries[0].stat().st_mtime < starts[1]

    # Launching again: everything recorded, nothing runs, facts compared with the first launch.
    again = run_campaign(matrix, tmp_path / "ds", campaigns)
    assert again.success and again.skipped == 12 and again.attempts == 0 and again.host_changes == ()


@pytest.mark.integration
@pytest.mark.netns
def test_shell_metacharacters_reach_remote_shell_as_data(testbed: TestBed, tmp_path: Path, campaigns: list[str]) -> None:
    pwned = tmp_path / "pwned"
    values = [f"$(touch {pwned});`touch {pwned}`;|& id", "a'b\"c $HOME \\n *", "; rm -rf / #"]
    run = 'printf "%s" "$RUNNER_V" > "$RUNNER_WORKDIR/seen.$$"; echo "{\\"n\\": 1}"'
    matrix = bed_matrix(tmp_path, testbed, run=run, axes=f"  v: {json.dumps(values)}\n")
    summary = run_campaign(matrix, tmp_path / "ds", campaigns)
    assert summary.success, summary.failures
    assert not pwned.exists()
    seen = {p.read_text() for p in (WORK_BASE / matrix.campaign).glob("*/seen.*")}
    assert seen == set(values)  # each value arrived byte for byte
    _, trials, _ = read_campaign(summary.dataset)
    assert set(trials["v"]) == set(values)  # and is recorded verbatim
    assert {json.loads(p)["v"] for p in trials["params_json"]} == set(values)


def test_fact_changes_are_described() -> None:
    before = {"host": "tb1", "cpus": 2, "kernel": {"release": "6.1.0", "cmdline": "quiet"}, "thp": {"enabled": "always"}}
    after = {"host": "tb1", "cpus": 2, "kernel": {"release": "6.1.0", "cmdline": "quiet"}, "thp": {"enabled": "never"}}
    assert fact_changes(before, before) == []
    changes = fact_changes(before, after)
    assert changes == ["thp.enabled: 'always' -> 'never'"]
    line = describe_changes("tb1", changes * 5, "during the campaign")
    assert line.startswith("tb1: facts changed during the campaign: thp.enabled") and line.endswith("(+2 more)")


@pytest.mark.integration
@pytest.mark.netns
def test_changed_host_facts_are_reported_on_resume(testbed: TestBed, tmp_path: Path, campaigns: list[str]) -> None:
    # A host whose facts differ from those stored by the previous launch is a finding, not a silent merge.
    matrix = bed_matrix(tmp_path, testbed, axes="  x: [1]\n")
    first = run_campaign(matrix, tmp_path / "ds", campaigns)
    assert first.success
    store = CampaignStore(first.dataset)
    facts = store.host_facts()["tb2"]
    store.write_host_facts("tb2", {**facts, "kernel": {**facts.get("kernel", {}), "release": "0.0-earlier"}})
    messages: list[str] = []
    again = run_campaign(matrix, tmp_path / "ds", campaigns, on_progress=lambda p: messages.extend(p.messages[len(messages):]))
    assert again.success, again.host_changes
    assert any(line.startswith("tb2: facts changed since the previous launch: kernel.release: '0.0-earlier' -> ") for line in again.host_changes), again.host_changes
    assert any(m.startswith("tb2: facts changed since the previous launch") for m in messages)
    assert store.read_provenance()["host_changes"] == list(again.host_changes)
