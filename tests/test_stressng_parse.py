"""The stressng parser (pure) on real output of the runner's stress-ng command, captured in tests/data/stressng/
(stress-ng 0.15.06, Debian 12, 2 CPUs: <stressor>.yaml is the command's stdout, <stressor>.stderr its stderr),
and the plugin's pure parts: argv, validation, stressor check, stop command."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner.errors import MatrixError, TrialError, UsageError
from runner.matrix.load import parse_matrix
from runner.records.metric import Metric
from runner.workloads import base
from runner.workloads.base import WorkloadContext
from runner.workloads.stressng import KERNEL_LOCK_STRESSORS, StressNG, _known, check_stressor, settings, trial_argv
from runner.workloads.stressng.parse import exit_status, own_message, parse_run, stressor_list, unknown_stressor, workers_of

DATA = Path(__file__).parent / "data" / "stressng"
GOOD = {"futex": 2, "flock": 2, "lockofd": 2, "pipe": 2, "mmap": 1, "fault": 2, "sem-sysv": 2}


def _out(name: str) -> tuple[str, str]:
    return (DATA / f"{name}.yaml").read_text(), (DATA / f"{name}.stderr").read_text()


@pytest.mark.parametrize(("stressor", "workers"), GOOD.items())
def test_real_output_gives_total_and_per_worker_throughput(stressor: str, workers: int) -> None:
    stdout, stderr = _out(stressor)
    metrics = {m.name: m for m in parse_run(stdout, stderr, stressor)}
    assert metrics["throughput"].unit == "bogo-ops/s" and metrics["throughput"].higher_is_better is True
    assert metrics["throughput"].value > 0
    assert metrics["bogo_ops"].value >= 1
    assert metrics["workers"].value == workers
    assert metrics["throughput_per_worker"].value == pytest.approx(metrics["throughput"].value / workers)
    # bogo-ops / wall time is stress-ng's real-time rate (it prints 6 decimals)
    assert metrics["bogo_ops"].value / metrics["duration_s"].value == pytest.approx(metrics["throughput"].value, rel=1e-4)
    assert all(m.thread is None and m.vm is None for m in metrics.values())


def test_stressor_extras_keep_their_units() -> None:
    flock = {m.name: m for m in parse_run(*_out("flock"), "flock")}
    assert flock["nanosecs_per_flock_lock_call"].unit == "ns"
    assert flock["nanosecs_per_flock_lock_call"].higher_is_better is False
    fault = {m.name: m for m in parse_run(*_out("fault"), "fault")}
    assert fault["minor_page_faults_per_sec"].unit == "/s"
    pipe = {m.name: m for m in parse_run(*_out("pipe"), "pipe")}
    assert pipe["mb_per_sec_pipe_write_rate"].unit == "MB/s"


def test_a_run_stopped_early_reports_over_the_time_it_ran() -> None:
    """SIGINT through stop_argv (the over-commit window) ended a 30 s run after about 2 s: stress-ng still
    writes its YAML, over the time it ran, and exits 0."""
    stdout, stderr = _out("futex-stopped")
    metrics = {m.name: m.value for m in parse_run(stdout, stderr, "futex")}
    assert metrics["duration_s"] < 30
    assert metrics["throughput"] > 0
    assert exit_status(stderr) == 0


def _starved() -> tuple[str, str]:
    """futex-stopped with no operation done: what a guest starved by the others of an over-commit trial
    printed in the study (exit 0, no word from stress-ng, bogo-ops 0; the YAML's counts set to 0 here)."""
    stdout, stderr = _out("futex-stopped")
    for key in ("bogo-ops", "bogo-ops-per-second-usr-sys-time", "bogo-ops-per-second-real-time"):
        stdout = re.sub(rf"^(\s+{key}): .*$", r"\1: 0", stdout, flags=re.M)
    return stdout, stderr.replace("122109", "     0")


def test_a_guest_starved_in_the_common_window_measured_zero() -> None:
    """One of k > 1 guests stopped at one instant (the over-commit window) whose workers finished no operation:
    throughput 0 is the measurement (Jain's index then shows the unfairness), not a failed trial that a retry
    would replace with a luckier run. Alone (k = 1) the same output fails, as any run without bogo-ops."""
    stdout, stderr = _starved()
    metrics = {m.name: m.value for m in parse_run(stdout, stderr, "futex", windowed=True)}
    assert metrics["throughput"] == 0 and metrics["bogo_ops"] == 0 and metrics["duration_s"] > 2
    with pytest.raises(TrialError, match=r"^stress-ng futex: no bogo-ops: stress-ng said nothing about it$"):
        parse_run(stdout, stderr, "futex")
    plugin = StressNG()
    result = SimpleNamespace(stdout=stdout, stderr=stderr)
    assert plugin.parse(result, {"stressor": "futex", "vms": 2})[0].value == 0  # type: ignore[arg-type]
    with pytest.raises(TrialError):
        plugin.parse(result, {"stressor": "futex", "vms": 1})  # type: ignore[arg-type]
    # exit status 2 (its workers ended by the stop before they started), still without a word: starved too
    two = stderr.replace("runner-stressng: exit 0", "runner-stressng: exit 2")
    assert parse_run(stdout, two, "futex", windowed=True)[0].value == 0
    with pytest.raises(TrialError, match=r"^stress-ng futex: no bogo-ops \(exit status 2\): stress-ng said nothing about it$"):
        parse_run(stdout, two, "futex")
    with pytest.raises(TrialError, match=r"exit status 3"):  # out of resources is no starvation
        parse_run(stdout, stderr.replace("runner-stressng: exit 0", "runner-stressng: exit 3"), "futex", windowed=True)
    # a stressor that says why it did nothing fails also in a window
    with pytest.raises(TrialError, match="binderfs not supported"):
        parse_run(*_out("binderfs"), "binderfs", windowed=True)


@pytest.mark.parametrize(("stressor", "said"), [
    ("binderfs", "binderfs: binderfs not supported, errno=19 (No such device), skipping stress test"),
    ("efivar", "efivar: cannot read EFI vars in /sys/firmware/efi/efivars or /sys/firmware/efi/vars"),
])
def test_no_bogo_ops_fails_with_stress_ngs_own_message(stressor: str, said: str) -> None:
    with pytest.raises(TrialError) as err:
        parse_run(*_out(stressor), stressor)
    msg = str(err.value)
    assert msg.startswith(f"stress-ng {stressor}: no bogo-ops (exit status 3): {said}")
    assert "aborted early, out of system resources" in msg
    assert msg.count(said) == 1  # both instances said it: once is enough
    assert "\n" not in msg
    assert "successful run completed" not in msg


def test_a_usage_error_of_stress_ng_is_its_own_line() -> None:
    with pytest.raises(TrialError, match=r"^stress-ng nosuch: exited with status 1: stress-ng: unrecognized option '--nosuch'$"):
        parse_run(*_out("nosuch"), "nosuch")


def test_bad_output_is_one_line() -> None:
    stdout, stderr = _out("futex")
    with pytest.raises(TrialError, match="no YAML output"):
        parse_run("", stderr, "futex")
    with pytest.raises(TrialError, match="not valid YAML at line"):
        parse_run("metrics: [\n  - {", stderr, "futex")
    with pytest.raises(TrialError, match="no metrics for this stressor"):
        parse_run(stdout, stderr, "flock")
    with pytest.raises(TrialError, match="bogo-ops-per-second-real-time is missing"):
        parse_run(stdout.replace("bogo-ops-per-second-real-time", "renamed"), stderr, "futex")
    with pytest.raises(TrialError, match="bogo-ops: 'many' is not a number"):
        parse_run(stdout.replace("bogo-ops: ", "bogo-ops: many #"), stderr, "futex")
    with pytest.raises(TrialError, match="workers"):
        parse_run(stdout, stderr.replace("runner-stressng: workers 2\n", ""), "futex")
    with pytest.raises(TrialError, match="exited with status 2"):
        parse_run(stdout, stderr.replace("exit 0", "exit 2"), "futex")


def test_runner_lines() -> None:
    _, stderr = _out("futex")
    assert exit_status(stderr) == 0 and workers_of(stderr) == 2
    assert exit_status("stress-ng: info: [1] dispatching hogs: 2 futex\n") is None
    assert own_message("") == "stress-ng said nothing about it"


def test_stressor_list_and_unknown_stressor_message() -> None:
    names = stressor_list("access af-alg futex flock lockofd pipe\n")
    assert names == sorted(["access", "af-alg", "futex", "flock", "lockofd", "pipe"])
    assert unknown_stressor("futex", names, "h1") is None
    msg = unknown_stressor("futx", names, "h1")
    assert msg == "h1: stress-ng there has no stressor 'futx'; it knows: access, af-alg, flock, futex, lockofd, pipe"


def test_command_checks_the_stressor_against_what_prepare_read() -> None:
    ctx = WorkloadContext(host="hostA", workdir="/w/unit-test", cpus=4)
    check_stressor("anything", ctx)  # nothing read for this host: nothing to check here
    _known[("hostA", "/w/unit-test")] = ("flock", "futex")
    try:
        check_stressor("futex", ctx)
        with pytest.raises(TrialError, match=r"^hostA: stress-ng there has no stressor 'futx'; it knows: flock, futex$"):
            StressNG().command({"stressor": "futx"}, ctx)
    finally:
        del _known[("hostA", "/w/unit-test")]


def test_argv_values_are_separate_elements_and_defaults_follow_the_cpus() -> None:
    ctx = WorkloadContext(host="h", workdir="/w/c", cpus=3)
    assert settings({}, 3) == ("futex", 3, 10)
    assert settings({"duration": 12.5}, 3)[2] == 13  # the over-commit window hands fractions; stress-ng runs whole seconds
    argv = trial_argv({"stressor": "flock", "workers": 2, "duration": 5}, ctx)
    assert argv[:2] == ["sh", "-c"]
    assert argv[3:] == ["stressng", "/w/c", "", "2", "stress-ng", "--flock", "2", "--timeout", "5s", "--metrics"]
    with_run = trial_argv({}, WorkloadContext(host="h", workdir="/w/c", cpus=3, extra={"run_id": "abc"}))
    assert with_run[5] == "/w/c/stressng.abc.pid"
    stop = StressNG().stop_argv(WorkloadContext(host="h", workdir="/w/c", cpus=3, extra={"run_id": "abc"}))
    assert stop is not None and stop[-2:] == ["/w/c/stressng.abc.pid", "stress-ng"]
    assert StressNG().stop_argv(ctx) is None


def test_registered_with_its_contract() -> None:
    plugin = base.get("stressng")
    assert isinstance(plugin, StressNG)
    assert "throughput" in plugin.scaling_metrics
    a = [Metric("throughput", 3.0, "bogo-ops/s", True), Metric("bogo_ops", 9.0, "bogo-ops", True)]
    b = [Metric("throughput", 1.0, "bogo-ops/s", True), Metric("bogo_ops", 3.0, "bogo-ops", True)]
    totals = {m.name: m.value for m in plugin.combine_vms([a, b])}  # throughput adds up across guests, with Jain's
    assert totals["throughput"] == totals["aggregate_throughput"] == 4.0 and 0.5 < totals["vm_jain"] < 1
    assert plugin.window_param == "duration"
    assert {"futex", "flock", "lockofd", "pipe", "mmap", "fault"} <= set(KERNEL_LOCK_STRESSORS)
    assert "stressng" in base.known()


def _matrix(extra: str) -> str:
    return f"campaign: sng\nworkload:\n  name: stressng\n  params: {{stressor: futex, duration: 1}}\n{extra}"


def test_the_minimal_image_is_one_line_at_plan_time() -> None:
    with pytest.raises(UsageError):
        StressNG().validate({"env": "kvm"})
    StressNG().validate({"env": "kvm", "guest_image": "debian"})
    StressNG().validate({})  # the bare host needs no image
    # every cell is checked, not only the first values of the axes
    text = _matrix("axes:\n  env: [host, container]\n  workers: [1, 2]\n")
    with pytest.raises(MatrixError) as err:
        parse_matrix(text)
    assert str(err.value).startswith("matrix.yml: guest_image: the stressng workload needs stress-ng in the guest; env 'container'")
    assert "\n" not in str(err.value)
    parse_matrix(_matrix("axes:\n  env: [host, container, kvm]\n  workers: [1, '100%']\n  guest_image: [debian]\n"))


def test_bad_parameters_name_the_key() -> None:
    with pytest.raises(MatrixError, match=r"workload.params.stressor: .--all. is not allowed; it must match"):
        parse_matrix("campaign: sng\nworkload:\n  name: stressng\n  params: {stressor: '--all'}\n")
    with pytest.raises(MatrixError, match=r"axes.workers\[0\]: 'x' is not a CPU count"):
        parse_matrix(_matrix("axes:\n  workers: [x]\n"))
    with pytest.raises(MatrixError, match=r"workload.params.threads: unknown parameter of workload 'stressng'"):
        parse_matrix("campaign: sng\nworkload:\n  name: stressng\n  params: {threads: 2}\n")
