"""Build lockbench.c with the system cc and run every lock briefly (about 6 s in all on 2 cores)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runner.workloads.lockbench.parse import parse_output
from tests.events import wait_for

SOURCE = Path(__file__).parents[1] / "runner" / "workloads" / "lockbench" / "lockbench.c"
LOCKS = ["ttas", "ticket", "mcs", "mutex", "oticket", "spinpark"]
WARNINGS = ["-Wall", "-Wextra", "-Werror"]


def _cc(out: Path, *flags: str) -> Path:
    proc = subprocess.run(
        ["cc", "-O2", "-pthread", *WARNINGS, *flags, "-o", str(out), str(SOURCE)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return out


@pytest.fixture(scope="module")
def lockbench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cc(tmp_path_factory.mktemp("lockbench") / "lockbench")


def _run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_runs_and_counts(lockbench: Path, lock: str, threads: int) -> None:
    proc = _run(lockbench, "--lock", lock, "--threads", str(threads), "--duration", "0.2", "--pin", "compact")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["counter_ok"] is True
    assert doc["total_ops"] > 0
    assert sum(doc["per_thread_ops"]) == doc["total_ops"] == doc["counter"]
    assert (doc["lock"], doc["threads"], doc["pin"]) == (lock, threads, "compact")
    assert doc["duration_s"] >= 0.2
    assert parse_output(proc.stdout) == doc


def test_a_lock_that_does_not_exclude_is_caught(lockbench: Path) -> None:
    # "none" takes no lock: the read-work-write of the shared counter loses updates.
    proc = _run(lockbench, "--lock", "none", "--threads", "2", "--duration", "0.2")
    assert proc.returncode == 3
    assert "counter mismatch" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counter_ok"] is False and doc["counter"] < doc["total_ops"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["--lock", "spin"], "--lock: unknown lock 'spin'; known: ttas, ticket"),
        (["--threads", "0"], "--threads: 0 is out of range"),
        (["--threads", "two"], "--threads: 'two' is not a non-negative integer"),
        (["--duration", "-1"], "--duration: '-1' is not a number of seconds"),
        (["--pin", "scatter"], "--pin: 'scatter' is not one of none, compact"),
        (["--cpus", "1-0"], "--cpus: bad CPU range in '1-0'"),
        (["--cpus", "0,x"], "--cpus: bad CPU list '0,x'"),
        (["--cpus", "4095"], "--cpus: cpu 4095 is not in this process's affinity mask"),
        (["--threads"], "option --threads needs a value"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_option_exits_2(lockbench: Path, args: list[str], message: str) -> None:
    proc = _run(lockbench, *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert message in proc.stderr and proc.stderr.count("\n") == 1


def test_help_version_and_cpus(lockbench: Path) -> None:
    assert _run(lockbench, "--help").stdout.startswith("usage: lockbench")
    assert _run(lockbench, "--version").stdout == "lockbench 1.2\n"
    doc = json.loads(_run(lockbench, "--threads", "3", "--pin", "compact", "--cpus", "0", "--duration", "0.05").stdout)
    assert doc["cpus"] == [0] and doc["counter_ok"] is True


def test_static_build(tmp_path: Path) -> None:
    binary = _cc(tmp_path / "lockbench-static", "-static")
    assert _run(binary, "--version").returncode == 0


def test_sigusr1_ends_the_run_early_and_it_still_reports(lockbench: Path, tmp_path: Path) -> None:
    """The runner ends k guests' runs at one instant with SIGUSR1: lockbench stops measuring at once and
    reports over the time it ran, with its mutual-exclusion check intact."""
    import json
    import signal
    import time

    import psutil

    pid_file = tmp_path / "run.pid"
    proc = subprocess.Popen([str(lockbench), "--lock", "ticket", "--threads", "2", "--duration", "60", "--pid-file", str(pid_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Signalled once it can be stopped (its pid file) and has measured for a while: 0.5 s of CPU time in its
    # two lock threads, that is at least 0.25 s of measuring however busy the machine is.
    measured = wait_for(lambda: proc.poll() is not None
                        or (pid_file.exists() and sum(psutil.Process(proc.pid).cpu_times()[:2]) >= 0.5), 50)
    assert measured and proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=50)  # ended by the signal, well before its 60 s
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["stopped_early"] is True and doc["counter_ok"] is True and doc["total_ops"] > 0
    assert 0.2 < doc["duration_s"] < 60


def test_a_run_that_reaches_its_duration_is_not_stopped_early(lockbench: Path) -> None:
    import json

    out = _run(lockbench, "--lock", "ticket", "--threads", "2", "--duration", "0.2").stdout
    assert json.loads(out)["stopped_early"] is False


def test_the_runners_stop_signals_only_its_own_run(lockbench: Path, tmp_path: Path) -> None:
    """stop_argv finds its run by the run's --pid-file and checks the process name before the signal: a
    pid file naming another process (a stale file, a reused pid) is left alone; its real run, started
    after the stop began to look, is ended early and says so."""
    import shutil
    import time

    import psutil

    from runner.workloads import base
    from runner.workloads.base import WorkloadContext
    from runner.workloads.lockbench import binary_name

    plugin = base.get("lockbench")
    ctx = WorkloadContext("h", str(tmp_path), 2, extra={"run_id": "r1"})
    assert plugin.stop_argv(WorkloadContext("h", str(tmp_path), 2)) is None  # no run id: nothing to stop
    argv = plugin.stop_argv(ctx)
    pid_file = argv[-2]
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        Path(pid_file).write_text(f"{stranger.pid}\n")
        assert subprocess.run(argv, timeout=60).returncode == 1  # looked for 15 s, never signalled
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
    Path(pid_file).unlink()
    binary = tmp_path / binary_name()
    shutil.copy(lockbench, binary)
    run_argv = plugin.command({"threads": 2, "duration": 60}, ctx)
    assert run_argv[0] == str(binary) and run_argv[-2:] == ["--pid-file", pid_file]

    def between_looks() -> bool:  # the stop's `sleep 0.05` between two looks runs: it looked, found nothing
        for child in psutil.Process(stop.pid).children():
            try:
                if child.name() == "sleep":
                    return True
            except psutil.NoSuchProcess:
                pass
        return False

    stop = subprocess.Popen(argv)
    looking = wait_for(lambda: stop.poll() is not None or between_looks(), 10, poll=0.005)
    assert looking and stop.poll() is None, "the stop never started looking"
    run = subprocess.Popen(run_argv, stdout=subprocess.PIPE, text=True)
    assert stop.wait(timeout=30) == 0
    out, _ = run.communicate(timeout=30)
    doc = json.loads(out)
    assert doc["stopped_early"] is True and doc["duration_s"] < 60 and doc["counter_ok"] is True
    assert not Path(pid_file).exists()  # removed at exit
