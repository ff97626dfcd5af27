"""Worker churn under an external Dask scheduler: real `dask scheduler` and `dask worker` processes on
127.0.0.1 (random port), started by each test; the host is this machine (`command` workload), its hold file
in tmp_path. Every wait is on an event (a marker file the workload writes, a line of the progress output),
never on a clock; trials wait for a `go` file the test writes, bounded so that nothing hangs.

- a worker killed mid-trial and a new one started: the trial left bound to the dead worker is sent again,
  and every trial is recorded once;
- every worker killed, new ones started later: the campaign says so, waits, and completes;
- the scheduler itself restarted: the campaign stops with one line (exit 1), what was recorded stays, and a
  relaunch completes it;
- no progress: the progress output says why (workers busy elsewhere, the host's lease held elsewhere).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.cli import main
from runner.execution import campaign
from runner.execution.campaign import Progress, stall_reason
from runner.execution.worker import lease_name
from runner.matrix.load import load_matrix
from runner.records.store import read_campaign
from tests.events import wait_for
from tests.test_campaign_holds import gated_matrix, local_inventory
from tests.test_scheduler import DaskProcesses

pytestmark = pytest.mark.integration

# The first trial runs at once; every later one waits for the go file (bounded).
FIRST_FREE = (
    'touch "$RUNNER_MARKS/started.$RUNNER_X"; if ! mkdir "$RUNNER_MARKS/first" 2>/dev/null; then i=0; '
    'while [ ! -e "$RUNNER_MARKS/go" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; fi; echo "{\\"n\\": 1}"'
)


@pytest.fixture
def dask(tmp_path: Path) -> Iterator[DaskProcesses]:
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    procs = DaskProcesses(logs)
    try:
        yield procs
    finally:
        procs.stop()


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


class Messages:
    """The campaign's progress lines, and a way to wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen = 0  # lines of the campaign's Progress taken so far
        self.changed = threading.Condition()

    def __call__(self, p: Progress) -> None:
        with self.changed:
            if p.total == 0:  # a note before the campaign starts
                self.lines.extend(p.messages)
            else:
                self.lines.extend(p.messages[self.seen:])
                self.seen = len(p.messages)
            self.changed.notify_all()

    def wait(self, text: str, timeout: float = 60.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(text in line for line in self.lines), timeout)


def in_background(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def launch(matrix_path: Path, datasets: Path, dask: DaskProcesses, messages: Callable[[Progress], None]) -> campaign.Summary:
    matrix = load_matrix(matrix_path)
    return campaign.launch(matrix, datasets=datasets, hosts=campaign.resolve_hosts(matrix), scheduler=dask.address, on_progress=messages)


def recorded_once(dataset: Path, n: int) -> None:
    _, trials, _ = read_campaign(dataset)
    assert len(trials) == n and trials["trial_id"].is_unique and set(trials["status"]) == {"ok"}
    assert set(trials["attempt"]) == {1}


def test_stall_reason_is_pure() -> None:
    running = {"k1"}
    assert stall_reason({"k1": "tb1"}, {"w1": ["k1"]}, running, 2) is None  # running its workload: no stall
    assert stall_reason({"k1": "tb1"}, {}, set(), 0) == "no Dask worker is connected to the scheduler"
    leased = {"k1"}  # running, but waiting for the host's lease (worker.leases_waiting)
    assert "every host tb1 held by another campaign" in stall_reason({"k1": "tb1"}, {"w1": ["k1"]}, {"k1"}, 2, leased)
    why = stall_reason({"k1": "tb1", "k2": "tb2"}, {"w1": ["k1", "other"]}, {"k1"}, 1, leased)
    assert why.startswith("host tb1 held by another campaign")
    assert "all Dask workers busy elsewhere: 1 other tasks on the 1 worker threads; trials for tb2 wait" in why
    assert stall_reason({"k1": "tb1"}, {}, set(), 2) == "trials for tb1 not taken by any Dask worker"
    # More hosts than threads, every thread running this campaign's trials: waiting its turn, no stall.
    assert stall_reason({"k1": "tb1", "k2": "tb2"}, {"w1": ["k1", "k2"]}, running, 1) is None


def test_worker_killed_mid_trial_then_a_new_worker(tmp_path: Path, dask: DaskProcesses, marks: Path) -> None:
    inventory, _ = local_inventory(tmp_path)
    dask.scheduler()
    worker = dask.workers(1, "--no-nanny")  # the only worker: its trial is left bound to it (Dask: no-worker)
    dask.wait_for_workers(1)
    killed: list[bool] = []

    def churn() -> None:
        if wait_for(lambda: any(marks.glob("started.*"))):  # mid-trial
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            dask.workers(1, "--no-nanny")
            killed.append(True)
        (marks / "go").touch()

    messages = Messages()
    helper = in_background(churn)
    summary = launch(gated_matrix(tmp_path, inventory, marks, xs=3), tmp_path / "ds", dask, messages)
    helper.join()
    assert killed, "no trial was seen running"
    assert summary.success and summary.ok == 3 and summary.attempts == 3, summary.failures
    recorded_once(summary.dataset, 3)
    assert any("waiting for Dask workers that left; sent again" in line for line in messages.lines), messages.lines


def test_every_worker_killed_then_new_ones_later(tmp_path: Path, dask: DaskProcesses, marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_WORKER_WAIT", "50")
    inventory, _ = local_inventory(tmp_path)
    dask.scheduler()
    workers = dask.workers(2)  # two workers under their nannies, all in one process group
    dask.wait_for_workers(2)
    messages = Messages()
    started: list[bool] = []

    def churn() -> None:
        if wait_for(lambda: any(marks.glob("started.*"))):
            os.killpg(workers.pid, signal.SIGKILL)  # nannies and workers
            workers.wait()
            if messages.wait("every Dask worker left the scheduler"):  # the campaign says so, and waits
                dask.workers(1, "--no-nanny")
                started.append(True)
        (marks / "go").touch()

    helper = in_background(churn)
    summary = launch(gated_matrix(tmp_path, inventory, marks, xs=3), tmp_path / "ds", dask, messages)
    helper.join()
    assert started, messages.lines
    assert summary.success and summary.ok == 3 and summary.attempts == 3, summary.failures
    recorded_once(summary.dataset, 3)
    assert any("Dask workers are back" in line for line in messages.lines), messages.lines


def test_scheduler_restarted_stops_with_one_line_and_a_relaunch_resumes(
    tmp_path: Path, dask: DaskProcesses, marks: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    inventory, _ = local_inventory(tmp_path)
    dask.scheduler()
    dask.workers(1, "--no-nanny")
    dask.wait_for_workers(1)
    matrix = gated_matrix(tmp_path, inventory, marks, xs=4, run=FIRST_FREE)
    datasets = tmp_path / "ds"
    restarted: list[bool] = []

    def restart_scheduler() -> None:
        # The second trial runs, so the first one is recorded (the controller records before it sends the next).
        if wait_for(lambda: len(list(marks.glob("started.*"))) >= 2):
            scheduler = dask.procs[0]
            os.killpg(scheduler.pid, signal.SIGKILL)
            scheduler.wait()
            dask.scheduler()  # the same address
            restarted.append(True)

    helper = in_background(restart_scheduler)
    rc = main(["launch", str(matrix), "--datasets", str(datasets), "--scheduler", dask.address, "--quiet"])
    helper.join()
    out, err = capsys.readouterr()
    assert restarted, "the second trial was never seen running"
    assert rc == 1, out + err
    assert err.count("\n") == 1 and err.startswith(f"runner: lost the connection to the Dask scheduler at {dask.address}"), err
    assert "relaunch to resume" in err
    _, trials, _ = read_campaign(datasets / matrix.stem)
    assert list(trials["status"]) == ["ok"]  # the first trial, measured before the restart, is kept
    first = trials["trial_id"].iloc[0]

    (marks / "go").touch()  # the trial left running on the old worker ends
    dask.workers(1, "--no-nanny")
    dask.wait_for_workers(1)
    rc = main(["launch", str(matrix), "--datasets", str(datasets), "--scheduler", dask.address, "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "1 already recorded, 3 ok now" in out
    _, trials, _ = read_campaign(datasets / matrix.stem)
    assert len(trials) == 4 and trials["trial_id"].is_unique and first in set(trials["trial_id"])


def test_no_progress_says_workers_are_busy_elsewhere(tmp_path: Path, dask: DaskProcesses, marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client

    monkeypatch.setenv("RUNNER_STALL_AFTER", "1")
    inventory, _ = local_inventory(tmp_path)
    dask.scheduler()
    dask.workers(1, "--no-nanny")  # one thread, taken by another client's task
    dask.wait_for_workers(1)
    unblock = tmp_path / "unblock"

    def blocker(path: str) -> int:
        import os
        import time

        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        return 0

    messages = Messages()
    with Client(dask.address, timeout="30s") as other:
        task = other.submit(blocker, str(unblock), pure=False)
        assert wait_for(lambda: any(other.processing().values()))

        def release() -> None:
            messages.wait("no progress for")
            unblock.touch()
            (marks / "go").touch()

        helper = in_background(release)
        summary = launch(gated_matrix(tmp_path, inventory, marks, xs=2), tmp_path / "ds", dask, messages)
        helper.join()
        assert task.result() == 0
    assert summary.success and summary.ok == 2, summary.failures
    said = [line for line in messages.lines if "no progress for" in line]
    assert said and "all Dask workers busy elsewhere: 1 other tasks on the 1 worker threads; trials for localhost wait" in said[0]


def test_no_progress_says_the_host_lease_is_held_elsewhere(
    tmp_path: Path, dask: DaskProcesses, marks: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distributed import Client, Semaphore

    monkeypatch.setenv("RUNNER_STALL_AFTER", "1")
    inventory, _ = local_inventory(tmp_path)
    dask.scheduler()
    dask.workers(1, "--no-nanny")
    dask.wait_for_workers(1)
    matrix_path = gated_matrix(tmp_path, inventory, marks, xs=2)
    spec = campaign.resolve_hosts(load_matrix(matrix_path))[0]
    messages = Messages()
    with Client(dask.address, timeout="30s") as other:
        lease = Semaphore(max_leases=1, name=lease_name(spec), scheduler_rpc=other.scheduler, loop=other.loop)
        assert lease.acquire(timeout=10)  # another campaign on this scheduler measures on the host

        def release() -> None:
            messages.wait("no progress for")
            lease.release()
            (marks / "go").touch()

        helper = in_background(release)
        summary = launch(matrix_path, tmp_path / "ds", dask, messages)
        helper.join()
    assert summary.success and summary.ok == 2, summary.failures
    said = [line for line in messages.lines if "no progress for" in line]
    assert said and "every host localhost held by another campaign on this scheduler (waiting for the host lease)" in said[0], said


def test_stall_after_must_be_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.errors import UsageError
    from runner.execution.cluster import stall_after_s

    monkeypatch.setenv("RUNNER_STALL_AFTER", "soon")
    with pytest.raises(UsageError, match="RUNNER_STALL_AFTER='soon' is not a number of seconds"):
        stall_after_s()
    monkeypatch.setenv("RUNNER_STALL_AFTER", "0")
    with pytest.raises(UsageError, match="must be a number of seconds > 0"):
        stall_after_s()
    monkeypatch.delenv("RUNNER_STALL_AFTER")
    assert stall_after_s() == 60.0
