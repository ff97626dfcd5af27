"""Probes (runner.probes): parsers on captured output, the window's faults (unavailable, crash, hang), the
matrix key, and the records' probe and side columns (schema 4, older datasets still read)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.errors import MatrixError
from runner.hosts.local import LocalHost
from runner.matrix.load import parse_matrix
from runner.probes import base, cpufreq, kvm_exits, lock_stat, perf_stat, schedstat
from runner.probes.base import Probe, ProbeContext, parse_samples
from runner.probes.session import ProbeWindow, forget_host
from runner.records.schema import SCHEMA_VERSION
from runner.records.store import AttemptRecord, CampaignStore
from runner.records.metric import Metric

DATA = Path(__file__).parent / "data" / "probes"


def values(metrics: list[Metric]) -> dict[tuple[str, int | None], float]:
    return {(m.name, m.thread): m.value for m in metrics}


# ----- parsers ---------------------------------------------------------------------------------------------
def test_perf_stat_without_hardware_counters() -> None:
    counts = perf_stat.parse_perf_csv((DATA / "perf_stat_vm.csv").read_text())
    assert counts == {"context-switches": 1620.0, "cpu-migrations": 70.0}
    got = values(perf_stat.to_metrics(counts))
    assert got == {("perf_stat.context_switches", None): 1620.0, ("perf_stat.cpu_migrations", None): 70.0}


def test_perf_stat_with_hardware_counters_gives_ipc() -> None:
    got = values(perf_stat.to_metrics(perf_stat.parse_perf_csv((DATA / "perf_stat_hw.csv").read_text())))
    assert got[("perf_stat.cycles", None)] == 4123456789
    assert got[("perf_stat.cpu_migrations", None)] == 70  # the ':u' modifier is dropped
    assert got[("perf_stat.ipc", None)] == pytest.approx(2.0)


def test_lock_stat_deltas_and_top_locks() -> None:
    before = lock_stat.parse_lock_stat((DATA / "lock_stat_before.txt").read_text())
    after = lock_stat.parse_lock_stat((DATA / "lock_stat_after.txt").read_text())
    assert before["&mm->mmap_lock-W"] == (84.0, 16371.53, 26582.0)
    assert "&mm->mmap_lock" not in before  # call-site lines are not classes
    got = values(lock_stat.to_metrics(before, after))
    assert got[("lock_stat.contentions", None)] == pytest.approx(20 + 1000 + 2)
    assert got[("lock_stat.wait_us", None)] == pytest.approx(1000 + 4000 + 2)
    # top by wait time: rq lock first, then mmap_lock-W, then the new class; classes without waiting left out
    top = [m.name for m in lock_stat.to_metrics(before, after) if m.name.endswith(".wait_us") and m.name != "lock_stat.wait_us"]
    assert top == ["lock_stat.&rq->__lock.wait_us", "lock_stat.&mm->mmap_lock-W.wait_us", "lock_stat.&new_lock_class.wait_us"]


def test_kvm_exit_deltas() -> None:
    before = kvm_exits.parse_counters((DATA / "kvm_before.txt").read_text())
    after = kvm_exits.parse_counters((DATA / "kvm_after.txt").read_text())
    assert "max_mmu_page_hash_collisions" not in after
    got = values(kvm_exits.deltas(before, after))
    assert got[("kvm_exits.exits", None)] == 4000
    assert got[("kvm_exits.halt_exits", None)] == 800
    assert got[("kvm_exits.directed_yield_attempted", None)] == 400
    assert got[("kvm_exits.io_exits", None)] == 0


def test_schedstat_deltas_per_thread() -> None:
    samples = parse_samples((DATA / "schedstat_samples.txt").read_text())
    deltas = schedstat.thread_deltas({}, samples)
    assert len(deltas) >= 2
    got = values(schedstat.to_metrics(deltas))
    assert got[("schedstat.threads", None)] == len(deltas)
    per_thread = [v for (name, t), v in got.items() if name == "schedstat.run_delay_s" and t is not None]
    assert sum(per_thread) == pytest.approx(got[("schedstat.run_delay_s", None)])
    assert 0 <= got[("schedstat.delay_ratio", None)] <= 1


def test_schedstat_subtracts_threads_that_ran_before() -> None:
    samples = [("@", 1.0, ["S 10 11 5000 700 3"]), ("@end", 2.0, ["S 10 11 9000 1700 5", "S 10 12 100 50 1"])]
    deltas = schedstat.thread_deltas({(10, 11): (4000, 200)}, samples)
    assert deltas == {(10, 11): (5000, 1500), (10, 12): (100, 50)}
    assert values(schedstat.to_metrics({}))[("schedstat.threads", None)] == 0


def test_cpufreq_summary() -> None:
    samples = parse_samples((DATA / "cpufreq_samples.txt").read_text())
    got = values(cpufreq.summarize(samples, None))
    assert got[("cpufreq.mhz_mean", None)] == pytest.approx((3000 + 2900 + 2000 + 2100) / 4)  # the @end sample left out
    assert got[("cpufreq.mhz_min", None)] == 2000
    assert got[("cpufreq.throttle_events", None)] == 4  # cpu0: 5+1 -> 8+2
    only1 = values(cpufreq.summarize(samples, (1,)))
    assert only1[("cpufreq.mhz_max", None)] == 2900 and only1[("cpufreq.throttle_events", None)] == 0


@pytest.mark.parametrize("tools", ["system", "busybox"])
def test_schedstat_finds_the_workload_by_its_directory(tools: str, tmp_path: Path) -> None:
    """GNU find (-lname) on hosts; busybox's find, the only one in the minimal guest image, has no -lname."""
    env = None
    if tools == "busybox":
        busybox = shutil.which("busybox")
        if busybox is None:
            pytest.skip("no busybox here")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for applet in ("sh", "find", "ls", "awk", "sed", "sort", "grep", "cat", "sleep"):
            (bin_dir / applet).symlink_to(busybox)
        env = {**os.environ, "PATH": str(bin_dir)}
    wd = tmp_path / "wd"
    wd.mkdir()
    proc = subprocess.Popen(["sleep", "30"], cwd=wd, env=env)
    try:
        out = subprocess.run(["sh", "-c", schedstat._FIND, "find", str(wd)], capture_output=True, text=True, env=env, timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert out.stdout.split() == [f"/proc/{proc.pid}"], out.stderr


# ----- the window: unavailable, crash, hang ------------------------------------------------------------------
class _Fake(Probe):
    timeout = 1.0
    calls: list[str] = []

    def start(self, host: Any, ctx: ProbeContext) -> Any:
        return time.monotonic()

    def stop(self, host: Any, ctx: ProbeContext, state: Any) -> list[Metric]:
        return [Metric("fake.window_s", time.monotonic() - state, "s", None)]


class _Ok(_Fake):
    pass


class _Missing(_Fake):
    def check(self, host: Any, ctx: ProbeContext) -> str | None:
        type(self).calls.append("check")
        return "not here"


class _Crash(_Fake):
    def stop(self, host: Any, ctx: ProbeContext, state: Any) -> list[Metric]:
        raise RuntimeError("boom")


class _Hang(_Fake):
    timeout = 1.0
    hang_s = 120.0  # far beyond the timeout: only the probe's timeout can end start() early
    released = threading.Event()  # set when the test is over, so the abandoned thread ends too

    def start(self, host: Any, ctx: ProbeContext) -> Any:
        self.released.wait(self.hang_s)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fake probes above, registered for one test."""
    for name, cls in (("test_ok", _Ok), ("test_missing", _Missing), ("test_crash", _Crash), ("test_hang", _Hang)):
        monkeypatch.setattr(cls, "name", name)
        monkeypatch.setitem(base._REGISTRY, name, cls)
    monkeypatch.setattr(_Hang, "released", threading.Event())
    yield
    _Hang.released.set()


def _ctx(tmp: Path, host: str = "probe-test-host") -> ProbeContext:
    return ProbeContext(host=host, side="host", workdir=str(tmp / "wd"), scratch=str(tmp / "wd" / ".probes"), tag="t1")


def test_window_keeps_going_through_unavailable_crashing_and_hanging_probes(tmp_path: Path, fakes: None) -> None:
    forget_host("probe-test-host")
    _Missing.calls.clear()
    names = ["test_ok", "test_missing", "test_crash", "test_hang"]
    t0 = time.monotonic()
    with ProbeWindow(LocalHost("probe-test-host"), names, _ctx(tmp_path)) as probed:
        pass
    assert time.monotonic() - t0 < 60  # bounded by the probe's timeout (1 s), well before the hang's end (120 s)
    assert [(m.name, m.probe, m.side) for m in probed.metrics] == [("fake.window_s", "test_ok", "host")]
    text = "\n".join(probed.notes)
    assert "probe test_missing not available on probe-test-host: not here" in text
    assert "probe test_crash failed on probe-test-host: boom" in text
    assert "probe test_hang failed to start on probe-test-host: no answer within 1 s" in text
    # a second trial on the same host: the unavailable probe is neither checked nor reported again
    with ProbeWindow(LocalHost("probe-test-host"), names, _ctx(tmp_path)) as again:
        pass
    assert _Missing.calls == ["check"]
    assert not any("test_missing" in n for n in again.notes)


def test_the_guests_of_one_configuration_share_one_check(tmp_path: Path, fakes: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guests start their probes at once: the first checks, the others wait for its answer; one note for all."""
    check = _Missing.check
    monkeypatch.setattr(_Missing, "check", lambda self, host, ctx: (time.sleep(0.3), check(self, host, ctx))[1])
    _Missing.calls.clear()
    where = "kvm guests (kernel default, image minimal) of probe-test-hv"
    windows: list[ProbeWindow] = []

    def guest(i: int) -> None:
        ctx = ProbeContext(host=f"g{i}", side="guest", workdir=str(tmp_path / f"g{i}"), scratch=str(tmp_path / f"g{i}" / ".p"), tag="t")
        with ProbeWindow(LocalHost(f"g{i}"), ["test_ok", "test_missing"], ctx, owner="probe-test-hv", where=where) as probed:
            pass
        windows.append(probed)

    threads = [threading.Thread(target=guest, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert _Missing.calls == ["check"] and len(windows) == 4
    notes = [n for w in windows for n in w.notes]
    assert notes == [f"probe test_missing not available on {where}: not here; not recorded there"]
    assert all([(m.probe, m.side) for m in w.metrics] == [("test_ok", "guest")] for w in windows)
    forget_host("probe-test-hv")  # the hypervisor host failed: its guests' probes are checked again
    guest(0)
    assert _Missing.calls == ["check", "check"]


def test_probe_on_a_side_it_cannot_read(tmp_path: Path) -> None:
    ctx = ProbeContext(host="a-guest", side="guest", workdir=str(tmp_path), scratch=str(tmp_path / ".p"), tag="t")
    with ProbeWindow(LocalHost("a-guest"), ["kvm_exits"], ctx) as probed:
        pass
    assert probed.metrics == ()
    assert probed.notes == ("probe kvm_exits not available on a-guest (guest): reads only on the host side; not recorded there",)


def test_builtin_probes_on_this_machine(tmp_path: Path) -> None:
    """schedstat and cpufreq read here; perf_stat where perf is installed; the others say why not."""
    forget_host("localhost")
    wd = tmp_path / "wd"
    wd.mkdir()
    host = LocalHost()
    ctx = ProbeContext(host="localhost", side="host", workdir=str(wd), scratch=str(wd / ".probes"), tag="t1")
    with ProbeWindow(host, base.known(), ctx) as probed:
        # The workload runs until the schedstat sampler has seen its thread (an event, not a count of loop
        # iterations: on a loaded machine a fixed loop ended before the sampler's first look), then a little more.
        seen = f"grep -q \"^S $$ \" {ctx.file('schedstat')} 2>/dev/null"
        res = host.run(["sh", "-c", f"i=0; until {seen}; do i=$((i+1)); done; while [ $i -gt 0 ]; do i=$((i-1)); done"],
                       timeout=600, cwd=str(wd))  # a bound against a hang only
        assert res.ok, res
    names = {m.name for m in probed.metrics}
    assert {"schedstat.run_s", "schedstat.run_delay_s", "cpufreq.mhz_mean"} <= names
    assert {m.probe for m in probed.metrics} >= {"schedstat", "cpufreq"}
    assert all(m.side == "host" for m in probed.metrics)
    for name in ("perf_stat", "lock_stat", "kvm_exits"):
        assert any(m.probe == name for m in probed.metrics) or any(f"probe {name} not available" in n for n in probed.notes)
    assert list((wd / ".probes").iterdir()) == []  # the probes leave no files behind


# ----- matrix ----------------------------------------------------------------------------------------------------
BASE = "campaign: x\nworkload: {name: command, params: {run: 'echo {\"v\": 1}'}}\n"


def test_matrix_probes() -> None:
    assert parse_matrix(BASE + "probes: [perf_stat, schedstat]\n").probes == ("perf_stat", "schedstat")
    assert parse_matrix(BASE).probes == ()
    with pytest.raises(MatrixError) as err:
        parse_matrix(BASE + "probes: [schedstat, perfstat]\n", Path("m.yml"))
    assert str(err.value) == "m.yml: probes[1]: no probe 'perfstat'; known: cpufreq, host_state, kvm_exits, lock_stat, perf_stat, schedstat"
    assert err.value.exit_code == 2


def test_cli_refuses_an_unknown_probe_at_plan_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runner.cli import main

    path = tmp_path / "m.yml"
    path.write_text(BASE + "probes: [lockstat]\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no probe 'lockstat'; known: cpufreq, host_state, kvm_exits, lock_stat, perf_stat, schedstat" in err[0]


# ----- records ---------------------------------------------------------------------------------------------------
def _record(metrics: tuple[Metric, ...]) -> AttemptRecord:
    return AttemptRecord(trial_id="t1", cell_id="c1", repetition=1, attempt=1, host="h", status="ok", error=None,
                         started_at=time.time(), ended_at=time.time(), wall_s=1.0, workload_wall_s=0.5, params={"n": 1},
                         metrics=metrics)


def test_probe_rows_are_stored_with_probe_and_side(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "c")
    store.initialise(campaign="c", workload="command", matrix_text="", matrix_sha256="0" * 64, axis_types={"n": "int"},
                     trial_count=1, seed=0, provenance={})
    rows = (Metric("v", 1.0, "", None), Metric("schedstat.run_delay_s", 0.5, "s", False, probe="schedstat", side="host"))
    store.write_attempt("c", "command", {"n": "int"}, _record(rows))
    m = store.read_table("metrics").to_pandas()
    assert json.loads(store.meta_path.read_text())["schema_version"] == SCHEMA_VERSION == 7
    got = {r["metric"]: (r["probe"], r["side"]) for r in m.astype(object).where(m.notna(), None).to_dict("records")}
    assert got == {"v": (None, None), "schedstat.run_delay_s": ("schedstat", "host")}


def test_a_version_3_dataset_reads_with_probe_and_side_null(tmp_path: Path) -> None:
    root = tmp_path / "old"
    (root / "metrics" / "workload=command").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"schema_version": 3, "campaign": "old", "workload": "command",
                                                    "matrix_sha256": "0" * 64, "axis_types": {"n": "int"}}))
    old = pa.table({"campaign": ["old"], "trial_id": ["t"], "cell_id": ["c"], "repetition": pa.array([1], pa.int32()),
                    "attempt": pa.array([1], pa.int32()), "host": ["h"], "env": ["host"], "accel": ["none"], "metric": ["v"],
                    "value": [2.0], "unit": [""], "higher_is_better": pa.array([None], pa.bool_()),
                    "thread": pa.array([None], pa.int32()), "vm": pa.array([None], pa.int32()), "n": [1]})
    pq.write_table(old, root / "metrics" / "workload=command" / "t.a1.ok.parquet")
    m = CampaignStore(root).read_table("metrics").to_pandas()
    assert len(m) == 1 and m["value"][0] == 2.0
    assert m["probe"].isna().all() and m["side"].isna().all()


def test_analysis_leaves_probe_rows_out_of_the_cells() -> None:
    import pandas as pd

    from runner.analysis.stats import cell_stats, param_columns

    m = pd.DataFrame({"cell_id": ["c", "c", "c", "c"], "repetition": [1, 2, 1, 2], "metric": ["v", "v", "perf_stat.x", "perf_stat.x"],
                      "value": [1.0, 1.1, 5.0, 6.0], "thread": [None] * 4, "vm": [None] * 4,
                      "probe": [None, None, "perf_stat", "perf_stat"], "side": [None, None, "host", "host"], "k": [1] * 4})
    assert param_columns(m) == ["k"]  # probe and side are not axes
    assert list(cell_stats(m)["metric"]) == ["v"]
