"""Signals and the machine's own faults (issue 20): `runner serve` given SIGTERM mid-campaign exits with the
campaign's measured trials kept; Ctrl-C during start-up is one line; a workload killed for memory says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner import defaults
from runner.cli import main
from runner.execution import environments
from runner.hosts.local import LocalHost
from runner.lab import schedule as sch
from runner.provision import container
from runner.records.store import read_campaign
from runner.workloads import base
from tests.events import as_a_terminal_starts_it, wait_for

PROJECT = Path(__file__).resolve().parents[1]
RUNNER = [sys.executable, "-m", "runner.cli"]
HERE = LocalHost()
ENV = {**os.environ, "PYTHONPATH": str(PROJECT), "COLUMNS": "1000"}  # this checkout's runner, whatever is installed


def test_serve_exits_on_sigterm_mid_campaign_and_keeps_what_was_measured(tmp_path: Path) -> None:
    home, ds, marks = tmp_path / "home", tmp_path / "ds", tmp_path / "marks"
    marks.mkdir()
    matrix = tmp_path / "slow.yml"
    matrix.write_text(  # every trial after the first waits for a gate the test never opens: the campaign runs on
        "campaign: slow\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: command, params: {run: 'if [ $RUNNER_N -gt 1 ]; then while [ ! -e " + str(marks) +
        "/go ]; do sleep 0.1; done; fi; echo {\\\"v\\\": $RUNNER_N}'}}\n"
        "axes: {n: [1, 2, 3]}\nrepetitions: 1\ntimeout: 600\n")
    now = datetime.now().astimezone()
    sch.add_schedule("slow", matrix, "* * * * *", datasets=ds, use_systemd=False, home=home, now=now - timedelta(minutes=5))
    proc = subprocess.Popen([*RUNNER, "serve"], env={**ENV, "RUNNER_HOME": str(home)}, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: list(ds.glob("slow-*/trials/workload=*/*.ok.parquet")), timeout=900)
        proc.send_signal(signal.SIGTERM)  # to serve alone, as systemd's stop does first
        _, err = proc.communicate(timeout=900)  # a bound against a hang: serve used to go on serving
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "runner: interrupted", err
    (dataset,) = ds.glob("slow-*")
    _, trials, _ = read_campaign(dataset)
    ok = trials[trials["status"] == "ok"]
    assert len(ok) >= 1 and ok["trial_id"].is_unique and set(ok["n"]) == {1}
    assert sch.last_run("slow", home) is None  # the slot was interrupted: it runs again (resumes) next time


# ----- a workload killed for memory says so ----------------------------------------------------------------
def _result(rc: int, stderr: str = "") -> SimpleNamespace:
    return SimpleNamespace(timed_out=False, rc=rc, stderr=stderr, stdout="", wall_s=1.0)


@pytest.mark.parametrize(("params", "rc", "expect"), [
    ({"env": "container", "memory": 1024}, 137, "h: workload killed (SIGKILL, status 137): out of memory (limit 1024 MiB)"),
    ({"env": "kvm"}, -9, f"h: workload killed (SIGKILL, status -9): out of memory (limit {defaults.GUEST_MEMORY_MIB} MiB)"),
    ({"env": "host"}, 137, "h: workload killed (SIGKILL, status 137); the kernel's OOM killer or another process ended it"),
    ({"env": "container"}, 137, "h: workload killed (SIGKILL, status 137); the kernel's OOM killer"),
    ({"env": "container", "memory": 1024}, 1, "h: workload exited with status 1: no output"),
])
def test_a_workload_killed_for_memory_says_so(params: dict, rc: int, expect: str) -> None:
    outcome = environments.finish(None, params, "h", _result(rc), 10.0)  # type: ignore[arg-type]
    assert outcome.status == "failed" and outcome.error.startswith(expect), outcome.error


@pytest.mark.parametrize(("params", "oom_kills", "expect"), [
    ({"env": "container", "memory": 64}, 1,
     "h: workload killed (SIGKILL, status 137): out of memory (limit 64 MiB; the cgroup's OOM killer ended it)"),
    ({"env": "container", "memory": 64}, 0,
     "h: workload killed by SIGKILL (status 137), not for memory: the container's memory cgroup counted no OOM kill"),
    ({"env": "container"}, 2, "h: workload killed (SIGKILL, status 137): out of memory (no limit; the kernel's OOM killer"),
])
def test_a_sigkill_is_called_out_of_memory_only_when_the_cgroup_counted_an_oom_kill(params: dict, oom_kills: int,
                                                                                     expect: str) -> None:
    outcome = environments.finish(None, params, "h", _result(137), 10.0, oom_kills=oom_kills)  # type: ignore[arg-type]
    assert outcome.status == "failed" and outcome.error.startswith(expect), outcome.error
    assert "most likely" not in outcome.error


def test_oom_kill_counters_parse() -> None:
    assert container.parse_oom_kills("rnr-a\t0\nrnr-b\t3\n\ngarbage\nrnr-c\t\n") == {"rnr-a": 0, "rnr-b": 3}


@pytest.mark.integration
@pytest.mark.guest
def test_a_container_trial_is_out_of_memory_only_when_its_cgroup_says_so(tmp_path: Path) -> None:
    """Two real container trials under a 64 MiB limit: one holds 256 MiB in a shell variable (the cgroup's OOM
    killer ends it), one sends itself SIGKILL with nothing allocated. Both exit with status 137; only the
    first is out of memory."""
    name = "pytest-trust-oom"
    matrix = tmp_path / "oom.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: command, params: {env: container, memory: 64, run: 'if [ $RUNNER_HOW = grow ]; then "
        "x=$(head -c 256m /dev/zero | tr \"\\\\0\" a); echo ${#x}; else kill -9 $$; fi'}}\n"
        "axes: {how: [grow, kill]}\nrepetitions: 1\ntimeout: 300\nretry: {attempts: 1}\n")
    try:
        assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 1
        _, trials, _ = read_campaign(name, tmp_path / "ds")
        errors = dict(zip(trials["how"], trials["error"], strict=True))
        assert set(trials["status"]) == {"failed"}, errors
        assert ("workload killed (SIGKILL, status 137): out of memory (limit 64 MiB; the cgroup's OOM killer ended it); "
                "give the environment more `memory`") in errors["grow"], errors
        assert ("workload killed by SIGKILL (status 137), not for memory: the container's memory cgroup counted no OOM kill; "
                "another process ended it") in errors["kill"], errors
        assert container.list_campaign(HERE, name) == []
    finally:
        main(["cleanup", name])


def test_plan_warns_when_gmake_cannot_fit_its_tmpfs(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if (why := base.get("gmake").missing()) is not None:
        pytest.skip(why)
    m = tmp_path / "gm.yml"
    m.write_text("campaign: gm\nworkload: {name: gmake}\naxes:\n  env: [container]\n  memory: [1024, 4096]\n")
    assert main(["plan", str(m)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("warning: gmake in container with memory 1024 MiB: its /dev/shm holds 1024 MiB") == 1, out
    assert "memory 4096" not in out


# ----- Ctrl-C while the local cluster starts ----------------------------------------------------------------
def _children_with(pid: int, word: str) -> list[int]:
    """Processes whose parent is `pid` and whose command line holds `word`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and word in cmdline:
            found.append(int(entry.name))
    return found


def test_ctrl_c_while_the_fork_server_starts_is_one_line(tmp_path: Path) -> None:
    """SIGINT to the process group while the workers' fork server imports: it printed its own traceback."""
    matrix = tmp_path / "c.yml"
    matrix.write_text(f"campaign: cc\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
                      "workload: {name: command, params: {run: 'echo {\\\"v\\\": $RUNNER_N}'}}\naxes: {n: [1, 2]}\n")
    proc = subprocess.Popen([*RUNNER, "launch", str(matrix), "--datasets", str(tmp_path / "ds")], env=ENV, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_a_terminal_starts_it)
    try:
        assert wait_for(lambda: _children_with(proc.pid, "forkserver"), timeout=900)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=900)  # a bound against a hang
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("runner: ")][-1].startswith("runner: interrupted"), err
