"""`runner plan` counts what launch will run: placement `each` plans every trial on every host of the group,
found in the inventory launch would use, and the table shows each trial's host. No host is contacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.cli import main
from runner.cli.plan import make_plan, per_host, placeholder_hosts
from runner.execution.campaign import resolve_hosts
from runner.matrix.load import load_matrix
from runner.trials import plan
from tests.test_hostile_input import one_line_error

INVENTORY = """\
all:
  children:
    lab:
      hosts:
        {hosts}
"""


def write(tmp_path: Path, placement: str, *, hosts: int = 4, inventory: str | None = "inventory/hosts.yml") -> Path:
    """A matrix of 3 cells x 2 repetitions on group `lab`; with `inventory`, an inventory of `hosts` hosts there
    (beside the matrix, where launch looks without --inventory)."""
    if inventory is not None:
        inv = tmp_path / inventory
        inv.parent.mkdir(parents=True, exist_ok=True)
        inv.write_text(INVENTORY.format(hosts="\n        ".join(f"h{i}: {{ansible_host: 192.0.2.{i}}}" for i in range(1, hosts + 1))))
    path = tmp_path / "m.yml"
    path.write_text(
        f"campaign: plan-each\nhosts: {{group: lab, placement: {placement}}}\n"
        "workload: {name: command, params: {run: 'echo {}'}}\naxes:\n  n: [1, 2, 3]\nrepetitions: 2\n"
    )
    return path


def test_each_counts_trials_times_hosts_as_launch_resolves_them(tmp_path: Path) -> None:
    path = write(tmp_path, "each")
    planned = make_plan(path, cpus=2)
    matrix = load_matrix(path)
    launch_hosts = [s.name for s in resolve_hosts(matrix)]  # what launch would use: inventory/ beside the matrix
    assert planned.hosts == launch_hosts == ["h1", "h2", "h3", "h4"] and planned.note is None
    assert len(planned.trials) == 3 * 2 * 4 == len(plan(matrix, dict.fromkeys(launch_hosts, 2)))
    assert per_host(planned.trials) == {"h1": 6, "h2": 6, "h3": 6, "h4": 6}
    assert {t.trial_id for t in planned.trials} == {t.trial_id for t in plan(matrix, dict.fromkeys(launch_hosts, 2))}


def test_pool_counts_trials_once(tmp_path: Path) -> None:
    planned = make_plan(write(tmp_path, "pool"), cpus=2)
    assert len(planned.trials) == 6 and planned.hosts == ["h1", "h2", "h3", "h4"] and per_host(planned.trials) == {}


def test_plan_output_shows_the_count_and_each_trials_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(write(tmp_path, "each")), "--cpus", "2", "--show", "-1"]) == 0
    out = capsys.readouterr().out
    assert "plan-each: 24 trials = 6 per host x 4 hosts (3 cells x 2 repetitions on each)" in " ".join(out.split())
    assert "trials per host: h1 6, h2 6, h3 6, h4 6" in " ".join(out.split())
    assert "on 4 host(s)" in out
    rows = [line.split("│") for line in out.splitlines() if line.count("│") >= 4]
    shown = [r[3].strip() for r in rows]
    assert len(shown) == 24 and {h: shown.count(h) for h in set(shown)} == {"h1": 6, "h2": 6, "h3": 6, "h4": 6}
    assert [r[3].strip() for r in rows[:1]] == [planned_first_host(tmp_path)]


def planned_first_host(tmp_path: Path) -> str:
    return str(make_plan(tmp_path / "m.yml", cpus=2).trials[0].host)


def test_without_an_inventory_plan_uses_hosts_placeholders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "each", inventory=None)  # group lab is in no inventory launch would read here
    planned = make_plan(path, cpus=2, n_hosts=3)
    assert planned.hosts == placeholder_hosts(3) and len(planned.trials) == 18
    assert planned.note.endswith("planned for 3 placeholder host(s) (--hosts)")
    assert main(["plan", str(path), "--hosts", "3", "--show", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "18 trials = 6 per host x 3 hosts" in out and "placeholder host(s)" in out
    assert placeholder_hosts(1) == ["planned-host"]


def test_a_named_inventory_without_the_group_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "each")
    other = tmp_path / "other.yml"
    other.write_text("all:\n  hosts:\n    x1: {ansible_host: 192.0.2.9}\n")
    assert main(["plan", str(path), "--inventory", str(other)]) == 2
    assert "no host or group 'lab' in" in one_line_error(capsys)
