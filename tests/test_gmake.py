"""gmake workload: parser on captured real output, argv as data, the host-side script on a small synthetic
tree with real make, a real tinyconfig campaign, and the fact collector on LocalHost and over SSH."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from runner.errors import TrialError, UsageError
from runner.hosts.base import CommandResult
from runner.hosts.local import LocalHost
from runner.hosts.ssh import HostSpec, SSHHost
from runner.provision.fingerprint import collect_on, summarize
from runner.workloads import base
from runner.workloads.base import WorkloadContext
from runner.workloads.gmake import hostside, local_missing, parse_output, script_path, to_metrics, trial_argv

DATA = Path(__file__).parent / "data" / "gmake"
PROJECT = Path(__file__).resolve().parents[1]
CTX = WorkloadContext(host="h1", workdir="/var/tmp/runner/c/h1", cpus=4, extra={"campaign": "c1", "trial_id": "t9"})


# ----- parser on real output ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cores", "target"), [("vmlinux_c1", 1, "vmlinux"), ("vmlinux_c2", 2, "vmlinux"), ("init_c2", 2, "init/")])
def test_parse_real_output(name: str, cores: int, target: str) -> None:
    doc = parse_output((DATA / f"{name}.out").read_text())
    assert (doc["cores"], doc["jobs"], doc["target"], doc["config"]) == (cores, 2 * cores, target, "tinyconfig")
    metrics = {m.name: m for m in to_metrics(doc)}
    assert metrics["build_time"].value == doc["build_time"] and metrics["build_time"].higher_is_better is False
    assert metrics["builds_per_hour"].value == pytest.approx(3600 / doc["build_time"])
    assert metrics["builds_per_hour_per_core"].value == pytest.approx(3600 / doc["build_time"] / cores)
    assert metrics["builds_per_hour"].unit == "builds/h" and metrics["cores"].higher_is_better is None


def test_plugin_parse_uses_stdout_only() -> None:
    text = (DATA / "vmlinux_c2.out").read_text()
    result = CommandResult(("python3",), 0, "make noise\n" + text, "warning: x\n", 90.0)
    names = [m.name for m in base.get("gmake").parse(result, {})]
    assert names == ["build_time", "builds_per_hour", "builds_per_hour_per_core", "cores", "jobs"]


@pytest.mark.parametrize(
    ("stdout", "match"),
    [
        ("", "no JSON line"),
        ('{"build_time": 0, "cores": 1, "jobs": 2}', "build_time is 0"),
        ('{"build_time": 12.5, "cores": "2", "jobs": 4}', "cores is '2'"),
        ('{"build_time": 12.5, "cores": 2}', "jobs is None"),
    ],
)
def test_parse_refuses_bad_output(stdout: str, match: str) -> None:
    with pytest.raises(TrialError, match=match):
        parse_output(stdout)


def test_parse_refuses_truncated_real_output() -> None:
    with pytest.raises(TrialError, match="no JSON line"):
        parse_output((DATA / "truncated.out").read_text())


def test_failed_build_output_is_one_line_on_stderr() -> None:
    """Captured from a real run with target no-such-target (exit status 3): one `gmake:` line naming make's error."""
    [line] = (DATA / "bad_target_rc3.err").read_text().splitlines()
    assert line.startswith("gmake: taskset -c 0 make -j2 no-such-target failed (rc 2)")
    assert "No rule to make target 'no-such-target'" in line


# ----- argv and parameters (pure) -------------------------------------------------------------------------
def test_argv_carries_values_as_data() -> None:
    weird = "/src/$(touch x); `id` 'a b'"
    argv = trial_argv({"source": weird, "config": "tinyconfig", "cores": 2, "target": "init/"}, CTX)
    assert argv[:3] == ["python3", f"{CTX.workdir}/{argv[1].rsplit('/', 1)[1]}", "run"]
    opts = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert opts == {
        "--source": weird, "--config": "tinyconfig", "--cores": "2", "--jobs": "4", "--target": "init/",
        "--cache": f"{CTX.workdir}/gmake", "--tmpdir": "/dev/shm", "--name": "c1-gmake-t9",
    }  # fmt: skip


def test_argv_defaults_and_limits() -> None:
    opts = dict(zip(*[iter(trial_argv({}, CTX)[3:])] * 2, strict=True))
    assert (opts["--source"], opts["--config"], opts["--target"]) == ("linux-source", "x86_64_defconfig", "vmlinux")
    assert (opts["--cores"], opts["--jobs"]) == ("4", "8")
    assert dict(zip(*[iter(trial_argv({"cores": 1, "jobs": 3}, CTX)[3:])] * 2, strict=True))["--jobs"] == "3"
    odd = replace(CTX, extra={"campaign": "a b/c", "trial_id": "x;y"})
    assert trial_argv({}, odd)[-1] == "a_b_c-gmake-x_y"
    with pytest.raises(TrialError, match="cores 5 > the host's 4 CPUs"):
        trial_argv({"cores": 5}, CTX)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"source": "linux.tar.xz"}, "source: 'linux.tar.xz' is not 'linux-source' or an absolute path"),
        ({"config": "rm -rf"}, "config: 'rm -rf'"),
        ({"target": "-j999"}, "target: '-j999'"),
        ({"tmpdir": "shm"}, "tmpdir: 'shm'"),
    ],
)
def test_validate_refuses(params: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        base.get("gmake").validate(params)


def test_validate_accepts_and_estimates() -> None:
    plugin = base.get("gmake")
    for params in ({}, {"source": "/srv/linux.tar.gz", "config": "/srv/my.config", "target": "kernel/sched/", "cores": "50%"}):
        plugin.validate(params)
    tiny2 = plugin.estimate_seconds({"config": "tinyconfig", "cores": 2})
    assert 60 < tiny2 < 120 < plugin.estimate_seconds({"config": "tinyconfig", "cores": 1})
    assert plugin.estimate_seconds({"cores": 2}) > 10 * tiny2


def test_missing_names_the_absent_tools() -> None:
    assert local_missing(lambda tool: None if tool in ("flex", "bison") else f"/usr/bin/{tool}").startswith("needs flex, bison on PATH")
    assert local_missing(lambda tool: f"/usr/bin/{tool}") is None


# ----- host-side helpers (pure) ---------------------------------------------------------------------------
def test_cpu_list_takes_the_first_allowed_cpus() -> None:
    assert hostside.cpu_list({0, 1, 2, 3}, 2) == "0-1"
    assert hostside.cpu_list({3, 0, 1, 2, 5, 8, 9}, 6) == "0-3,5,8"
    with pytest.raises(hostside.Failure, match="cores 3 > the 2 CPUs"):
        hostside.cpu_list({4, 6}, 3)


def test_newest_linux_source_and_cache_keys() -> None:
    names = ["/usr/src/linux-source-6.9.tar.xz", "/usr/src/linux-source-6.10.tar.xz", "/usr/src/linux-source-5.19.tar.xz"]
    assert max(names, key=hostside.version_key).endswith("6.10.tar.xz")
    ident = {"kind": "tarball", "path": "/x.tar.xz", "size": 1, "mtime_ns": 2}
    assert hostside.cache_key(ident, "tinyconfig") == hostside.cache_key(dict(ident), "tinyconfig")
    assert hostside.cache_key(ident, "tinyconfig") != hostside.cache_key(ident, "x86_64_defconfig")


def test_sweep_removes_only_copies_without_a_live_owner(tmp_path: Path) -> None:
    for name in ("dead-gmake-1", "live-gmake-2", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    (tmp_path / "dead-gmake-1.owner").touch()
    with hostside.lock(str(tmp_path / "live-gmake-2.owner")):
        assert hostside.sweep_stale(str(tmp_path)) == [str(tmp_path / "dead-gmake-1")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live-gmake-2", "live-gmake-2.owner", "other"]


# ----- the host-side script on a synthetic tree, with real make --------------------------------------------
MAKEFILE = """\
# A stand-in kernel tree: the targets hostside.py uses, each leaving a trace.
.PHONY: tinyconfig mrproper kernelversion vmlinux broken
tinyconfig:
\techo CONFIG_X=y > .config
init/main.o:
\ttouch init/main.o
kernelversion:
\t@echo 9.9.9
mrproper:
\trm -f .config init/main.o built.o
vmlinux: init/main.o
\ttouch built.o
broken:
\t@echo 'no rule to make broken' >&2; exit 2
"""


def synthetic_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "src"
    (tree / "init").mkdir(parents=True)
    (tree / "Makefile").write_text(MAKEFILE)
    (tree / "init" / "main.o").write_text("stale object that mrproper removes")
    (tree / ".git").mkdir()
    return tree


def hostside_run(tmp_path: Path, tree: Path, target: str, name: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(script_path()), "run", "--source", str(tree), "--config", "tinyconfig", "--cores", "1",
            "--jobs", "2", "--target", target, "--cache", str(tmp_path / "cache"), "--tmpdir", str(tmp_path / "shm"), "--name", name]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_hostside_prepares_once_builds_a_copy_and_removes_it(tmp_path: Path) -> None:
    tree = synthetic_tree(tmp_path)
    first = hostside_run(tmp_path, tree, "vmlinux", "c-gmake-1")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert (doc["kernel_version"], doc["source"], doc["cpus"], doc["cores"], doc["jobs"]) == ("9.9.9", str(tree), "0", 1, 2)
    assert doc["prepare_s"] > 0 and doc["build_time"] > 0
    [cached] = (tmp_path / "cache").glob("*/tree")
    assert (cached / ".config").read_text() == "CONFIG_X=y\n" and not (cached / ".git").exists()
    assert not (cached / "built.o").exists()  # only the copy was built
    assert list((tmp_path / "shm").iterdir()) == []
    second = json.loads(hostside_run(tmp_path, tree, "vmlinux", "c-gmake-2").stdout)
    assert second["prepare_s"] == 0.0


def test_hostside_failed_build_still_removes_the_copy(tmp_path: Path) -> None:
    tree = synthetic_tree(tmp_path)
    failed = hostside_run(tmp_path, tree, "broken", "c-gmake-3")
    assert failed.returncode == 3 and failed.stdout == ""
    assert failed.stderr.startswith("gmake: taskset -c 0 make -j2 broken failed (rc 2)") and "no rule to make broken" in failed.stderr
    assert list((tmp_path / "shm").iterdir()) == []
    missing = hostside_run(tmp_path, tmp_path / "nowhere", "vmlinux", "c-gmake-4")
    assert (missing.returncode, missing.stderr.strip()) == (2, f"gmake: source {tmp_path / 'nowhere'} does not exist here")


# ----- a real campaign ------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_tinyconfig_campaign_end_to_end(tmp_path: Path) -> None:
    """tinyconfig from Debian's linux-source, target init/ (a full tinyconfig vmlinux takes ~1.5-3 min a trial)."""
    from runner.cli import main
    from runner.records.store import read_campaign

    if base.get("gmake").missing() or not list(Path("/usr/src").glob("linux-source-*.tar.xz")):
        pytest.fail("gmake needs linux-source and the build tools (scripts/setup.sh installs them)")
    campaign = f"gmake-it-{uuid.uuid4().hex[:8]}"
    matrix = tmp_path / "gmake.yml"
    matrix.write_text(
        f"campaign: {campaign}\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: gmake, params: {config: tinyconfig, target: init/}}\n"
        "axes:\n  cores: [1, 2]\nrepetitions: 1\ntimeout: 400\n"
    )
    try:
        assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 0
        metrics, trials, _ = read_campaign(campaign, tmp_path / "ds")
    finally:
        shutil.rmtree(Path("/var/tmp/runner") / campaign, ignore_errors=True)
    assert set(trials["status"]) == {"ok"} and len(trials) == 2
    bph = metrics[metrics["metric"] == "builds_per_hour"]
    assert sorted(bph["cores"].astype(int)) == [1, 2] and (bph["value"] > 0).all()
    assert not list(Path("/dev/shm").glob(f"{campaign}-gmake-*"))


# ----- facts on any host ----------------------------------------------------------------------------------
def check_facts(facts: dict) -> None:
    short = summarize(facts)
    assert short["cpu_model"] and short["kernel"] and short["numa_nodes"] >= 1
    assert facts["numa"]["nodes"]


@pytest.mark.integration
def test_collect_on_localhost() -> None:
    check_facts(collect_on(LocalHost()))


@pytest.mark.integration
@pytest.mark.netns
def test_collect_on_ssh_host_and_prepare_there(testbed) -> None:
    h = testbed.host("tb2")
    spec = HostSpec(h.name, h.address, h.port, "root", testbed.key_path, testbed.known_hosts, connect_timeout=5)
    with SSHHost(spec) as host:
        check_facts(collect_on(host))
        workdir = f"/var/tmp/runner-gmake-test-{uuid.uuid4().hex[:8]}"
        try:
            assert host.run(["mkdir", "-p", workdir], timeout=10).ok
            base.get("gmake").prepare(host, WorkloadContext(host=h.name, workdir=workdir, cpus=2))
            assert host.run(["python3", f"{workdir}/{trial_argv({}, CTX)[1].rsplit('/', 1)[1]}", "check"], timeout=30).ok
        finally:
            host.run(["rm", "-rf", workdir], timeout=10)
