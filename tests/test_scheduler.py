"""Campaigns through an external Dask scheduler: real `dask scheduler` and `dask worker` processes on
127.0.0.1, started by the tests, as a lab runs them (see docs/hosts.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli import main
from runner.execution import campaign
from runner.execution.campaign import _preferred, workdir_for
from runner.execution.cluster import worker_addresses
from runner.execution.worker import AttemptSpec, execute
from runner.matrix.load import Matrix
from runner.records.store import read_campaign
from runner.testing.testbed import TestBed
from runner.trials import plan
from tests.events import wait_for
from tests.test_remote_campaign import bed_matrix, run_campaign

DASK = str(Path(sys.executable).parent / "dask")
PROJECT = Path(__file__).resolve().parents[1]
# Short scheduler-side leases, so the lease of a killed worker's trial expires quickly.
LEASE_ENV = {
    "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": "3s",
    "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "500ms",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """A `dask scheduler` and any number of `dask worker` processes; stop() ends exactly those."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen] = []
        self.address = f"tcp://127.0.0.1:{free_port()}"

    def start(self, *argv: str) -> subprocess.Popen:
        log = open(self.logs / f"{argv[0]}-{len(self.procs)}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [DASK, *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **LEASE_ENV}, start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def scheduler(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self.start("scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")

    def workers(self, n: int, *extra: str) -> subprocess.Popen:
        return self.start("worker", self.address, "--host", "127.0.0.1", "--nworkers", str(n), "--nthreads", "1", "--no-dashboard", *extra)

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:  # connecting waits for the scheduler
            if n:
                client.wait_for_workers(n, timeout=60)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def external_dask(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    """A scheduler with two single-threaded workers (each under a nanny that restarts it)."""
    dask = DaskProcesses(tmp_path_factory.mktemp("dask"))
    try:
        dask.scheduler()
        dask.workers(2)
        dask.wait_for_workers(2)
        yield dask
    finally:
        dask.stop()


def test_preferred_workers_round_robin() -> None:
    assert _preferred(["tb1", "tb2", "tb3"], ["w1", "w2"]) == {"tb1": "w1", "tb2": "w2", "tb3": "w1"}
    assert _preferred(["tb1"], []) == {}


@pytest.mark.integration
@pytest.mark.netns
def test_launch_with_external_scheduler(
    testbed: TestBed, external_dask: DaskProcesses, tmp_path: Path, campaigns: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = bed_matrix(tmp_path, testbed, axes="  x: [1, 2, 3, 4, 5, 6]\n")
    campaigns.append(matrix.campaign)
    rc = main(["launch", str(matrix.path), "--datasets", str(tmp_path / "ds"), "--scheduler", external_dask.address, "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "6 ok now, 0 failed" in out
    assert "the scheduler has 2 worker threads for 3 hosts" in err  # said, not hidden
    _, trials, _ = read_campaign(tmp_path / "ds" / matrix.campaign)
    assert len(trials) == 6 and set(trials["status"]) == {"ok"} and len(set(trials["host"])) >= 2


@pytest.mark.integration
@pytest.mark.netns
def test_dask_worker_killed_mid_trial(testbed: TestBed, external_dask: DaskProcesses, tmp_path: Path, campaigns: list[str]) -> None:
    from distributed import Client

    # The first attempt of trial x=1 marks that it runs, then waits for the go file (bounded, so nothing hangs);
    # Dask's re-run of it and the other trials run at once (the hosts share this file system).
    marks = tmp_path / "marks"
    marks.mkdir()
    run = (f'if [ "$RUNNER_X" = 1 ] && mkdir "{marks}/started" 2>/dev/null; then i=0; '
           f'while [ ! -e "{marks}/go" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; fi; echo "{{\\"n\\": 1}}"')
    matrix = bed_matrix(tmp_path, testbed, run=run, axes="  x: [1, 2, 3]\n", retry="{attempts: 1, on: [failed]}")
    gated = next(f"-{t.trial_id}-a1-" for t in plan(matrix, {"tb1": 1}) if dict(t.params)["x"] == 1)
    killed: list[str] = []

    def executing(dask_worker) -> list[str]:  # noqa: ANN001 - a distributed.Worker, passed in by Client.run
        return [str(ts.key) for ts in dask_worker.state.executing]

    def kill_the_gated_trials_worker() -> None:
        try:
            with Client(external_dask.address, timeout="30s") as client:
                if not wait_for(lambda: (marks / "started").is_dir()):
                    return
                busy = [w for w, keys in client.run(executing).items() if any(gated in k for k in keys)]
                if busy:  # the worker whose trial is inside its workload now, waiting for go
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)  # the worker process; its nanny starts a new one
                    killed.append(busy[0])
        finally:
            (marks / "go").touch()  # the killed attempt's workload, left running on its host, ends too

    killer = threading.Thread(target=kill_the_gated_trials_worker, daemon=True)
    killer.start()
    summary = run_campaign(matrix, tmp_path / "ds", campaigns, scheduler=external_dask.address)
    killer.join()
    assert killed, "no trial was seen running"
    # One attempt per trial (retries allow none): the killed trial was re-run by Dask, recorded once.
    assert summary.success and summary.ok == 3 and summary.attempts == 3, summary.failures
    _, trials, _ = read_campaign(summary.dataset)
    assert len(trials) == 3 and trials["trial_id"].is_unique and set(trials["attempt"]) == {1}
    external_dask.wait_for_workers(2)  # the nanny replaced the killed worker


@pytest.mark.integration
@pytest.mark.netns
def test_host_lease_serialises_trials_across_workers(
    testbed: TestBed, external_dask: DaskProcesses, tmp_path: Path, campaigns: list[str]
) -> None:
    # Campaigns sharing one scheduler may send trials for the same host to different workers at once:
    # the scheduler-wide host lease makes them take turns.
    from distributed import Client

    run = 'sleep 1; echo "{\\"n\\": 1}"'
    matrix = bed_matrix(tmp_path, testbed, run=run, axes="  x: [1, 2]\n", group="tb1")
    # Without the lease: each trial marks that it runs, then waits (bounded) until the other one runs too, and
    # prints its result only if it saw that; so both ok means they overlapped, however slow the machine is.
    marks = tmp_path / "marks"
    marks.mkdir()
    both = f'{{ [ -e "{marks}/in.1" ] && [ -e "{marks}/in.2" ]; }}'
    barrier = (f'touch "{marks}/in.$RUNNER_X"; i=0; while ! {both} && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; '
               f'{both} && echo "{{\\"n\\": 1}}"')
    unleased = bed_matrix(tmp_path, testbed, run=barrier, axes="  x: [1, 2]\n", group="tb1", timeout=90)
    campaigns.extend([matrix.campaign, unleased.campaign])
    spec = campaign.resolve_hosts(matrix)[0]
    with Client(external_dask.address, timeout="10s") as client:
        workers = worker_addresses(client)[:2]

        def spans(m: Matrix, lease: bool) -> list[tuple[float, float]]:
            specs = [AttemptSpec(t, 1, spec, m.timeout, workdir_for(m, spec), host_lease=lease) for t in plan(m, {"tb1": 2})]
            futures = [client.submit(execute, a, workers=[w], allow_other_workers=False, pure=False) for a, w in zip(specs, workers)]
            records = client.gather(futures)
            assert [r.status for r in records] == ["ok", "ok"], [r.error for r in records]
            return sorted((r.started_at, r.ended_at) for r in records)

        first, second = spans(matrix, lease=True)
        assert second[0] >= first[1]
        first, second = spans(unleased, lease=False)
        assert second[0] < first[1]  # without the lease the two trials overlap


@pytest.mark.integration
def test_scheduler_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_campaign_holds import local_inventory

    inventory, _ = local_inventory(tmp_path)  # this machine, its hold file in tmp_path: no other test waits on it
    marker = tmp_path / "started"
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        "campaign: sched\n"
        f"hosts: {{group: local, inventory: {inventory}}}\n"
        "workload: {name: command, params: {run: 'touch \"$RUNNER_MARKER\"; sleep \"$RUNNER_SLEEP\"; echo \"{\\\"n\\\": 1}\"', "
        f"marker: {marker}}}}}\n"
        "axes:\n  sleep: [10]\nrepetitions: 1\ntimeout: 30\n"
    )
    datasets = str(tmp_path / "ds")
    nobody = f"tcp://127.0.0.1:{free_port()}"
    assert main(["launch", str(matrix), "--datasets", datasets, "--scheduler", nobody, "--quiet"]) == 2  # bad input
    err = capsys.readouterr().err
    assert err == f"runner: cannot reach the Dask scheduler at {nobody}: Connection refused; is `dask scheduler` running there?\n"

    dask = DaskProcesses(tmp_path)
    try:
        dask.scheduler()
        dask.wait_for_workers(0)
        monkeypatch.setenv("RUNNER_WORKER_WAIT", "1")
        assert main(["launch", str(matrix), "--datasets", datasets, "--scheduler", dask.address, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"runner: the Dask scheduler at {dask.address} has no workers after 1 s; start some with `dask worker")
        assert err.count("\n") == 1

        # The only worker (no nanny) dies mid-trial and none comes back: the campaign says so at once, waits
        # RUNNER_WORKER_WAIT seconds, then stops with one line instead of waiting forever.
        worker = dask.workers(1, "--no-nanny")
        dask.wait_for_workers(1)

        def kill_when_started() -> None:
            wait_for(marker.exists, 60)
            os.killpg(worker.pid, signal.SIGKILL)

        threading.Thread(target=kill_when_started, daemon=True).start()
        assert main(["launch", str(matrix), "--datasets", datasets, "--scheduler", dask.address, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.count("runner: ") == 2  # the note (the progress display may wrap it), then the error
        assert " ".join(err.split()).startswith(
            "runner: every Dask worker left the scheduler; 1 trials wait for new workers (up to 1 s, RUNNER_WORKER_WAIT)"
        )
        assert err.splitlines()[-1].startswith("runner: every Dask worker left the scheduler (1 trials were running); start workers again")
    finally:
        dask.stop()


@pytest.mark.integration
def test_workers_of_another_runner_version_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A scheduler whose worker imports another runner version: one line naming the worker and both versions,
    exit 2, before any trial (nothing recorded). The worker is a real `dask worker` whose preload gives the
    runner it imports another version string, as a worker started from an older checkout would have."""
    from tests.test_campaign_holds import local_inventory

    inventory, _ = local_inventory(tmp_path)
    preload = tmp_path / "other_runner_version.py"
    preload.write_text(
        "import runner\nimport runner.execution.worker as worker\n"
        "runner.__version__ = worker.__version__ = '0.0.0+other'\n"
    )
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        "campaign: otherversion\n"
        f"hosts: {{group: local, inventory: {inventory}}}\n"
        "workload: {name: command, params: {run: 'echo \"{\\\"n\\\": 1}\"'}}\n"
        "axes:\n  i: [1, 2]\nrepetitions: 1\ntimeout: 30\n"
    )
    dask = DaskProcesses(tmp_path)
    try:
        dask.scheduler()
        dask.workers(1, "--preload", str(preload))
        dask.wait_for_workers(1)
        rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds"), "--scheduler", dask.address, "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.count("\n") == 1, err
        from runner import __version__

        assert err.startswith("runner: Dask worker tcp://127.0.0.1:") and f"runs runner 0.0.0+other, this controller {__version__}" in err
        assert not list((tmp_path / "ds").glob("otherversion/**/*.parquet"))  # no trial ran
    finally:
        dask.stop()
