"""Containers with podman (runc, default_ulimits = []) or docker: argv building and one real run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runner.errors import ProvisionError
from runner.provision import container
from runner.provision.guest import describe_guest
from runner.provision.topology import read_topology

LOCKBENCH_C = Path(__file__).parents[1] / "runner" / "workloads" / "lockbench" / "lockbench.c"


def test_cli_is_docker_or_podman_with_runc() -> None:
    cli = container.container_cli()
    assert cli == ("docker",) or cli[2:] == ("podman", "--runtime", "/usr/sbin/runc")
    if cli[0] == "env":
        conf = Path(cli[1].removeprefix("CONTAINERS_CONF="))
        assert "default_ulimits = []" in conf.read_text()


def test_run_argv() -> None:
    argv = container.run_argv("rnr-c:1", ["lockbench", "--threads", "4"], name="rnr-c-0-0000abcd", cpuset=[3, 0, 1, 2],
                              memory_mib=512)
    cli = list(container.container_cli())
    assert argv[: len(cli)] == cli
    rest = argv[len(cli) :]
    assert rest == [
        "run", "--rm", "--name", "rnr-c-0-0000abcd", "--network", "none", "--cpuset-cpus", "0-3",
        "--memory", "512m", "rnr-c:1", "lockbench", "--threads", "4",
    ]
    bare = container.run_argv("img", ["true"], name="n")
    assert "--cpuset-cpus" not in bare and "--memory" not in bare


def test_minimal_rootfs(tmp_path: Path) -> None:
    extra = tmp_path / "tool"
    extra.write_text("#!/bin/sh\necho tool\n")
    extra.chmod(0o755)
    container.minimal_rootfs(tmp_path / "root", {"/usr/bin/tool": extra})
    assert (tmp_path / "root/bin/busybox").is_file()
    assert (tmp_path / "root/bin/sh").readlink() == Path("busybox")
    assert (tmp_path / "root/usr/bin/tool").stat().st_mode & 0o111
    with pytest.raises(ProvisionError, match="does not exist"):
        container.minimal_rootfs(tmp_path / "r2", {"/x": tmp_path / "missing"})


@pytest.mark.integration
@pytest.mark.guest
def test_container_runs_lockbench_on_cpu_0(tmp_path: Path) -> None:
    campaign = "pytest-container"
    lockbench = tmp_path / "lockbench"
    subprocess.run(["cc", "-O2", "-static", "-pthread", "-o", str(lockbench), str(LOCKBENCH_C)], check=True, timeout=120)
    image = container.build_image(f"rnr-{campaign}:test", files={"/usr/bin/lockbench": lockbench})
    spec = describe_guest("container", {"vcpus": 1, "memory": 256}, read_topology(), {}, campaign, 0)
    assert spec.host_cpus == (0,)
    try:
        script = "grep Cpus_allowed_list /proc/self/status; lockbench --threads 2 --duration 0.2"
        argv = container.run_argv(image, ["sh", "-c", script], name=spec.name, cpuset=spec.host_cpus, memory_mib=spec.memory_mib)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        first, _, rest = proc.stdout.partition("\n")
        assert first.split() == ["Cpus_allowed_list:", "0"]
        doc = json.loads(rest)
        assert doc["counter_ok"] is True and doc["threads"] == 2
        assert container.list_campaign(campaign) == []  # --rm removed it
        # A container left behind (e.g. a killed trial) is found by campaign and removed.
        detached = [*container.container_cli(), "run", "-d", "--name", spec.name, image, "sleep", "30"]
        subprocess.run(detached, check=True, capture_output=True, timeout=60)
        assert container.list_campaign(campaign) == [spec.name]
    finally:
        container.remove(spec.name)
        container.remove_image(image)
    assert container.list_campaign(campaign) == []
    container.remove(spec.name)  # no-op
