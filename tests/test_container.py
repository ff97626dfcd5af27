"""Containers with podman (runc, default_ulimits = []) or docker: argv building and one real run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runner.errors import ProvisionError
from runner.hosts.container import ContainerHost
from runner.hosts.local import LocalHost
from runner.provision import container
from runner.provision.guest import describe_guest
from runner.provision.topology import read_topology

HERE = LocalHost()
LOCKBENCH_C = Path(__file__).parents[1] / "runner" / "workloads" / "lockbench" / "lockbench.c"


def test_cli_is_docker_or_podman_with_runc() -> None:
    cli = container.container_cli(HERE)
    assert cli == ("docker",) or cli[2:] == ("podman", "--runtime", "/usr/sbin/runc")
    if cli[0] == "env":
        conf = Path(cli[1].removeprefix("CONTAINERS_CONF="))
        assert "default_ulimits = []" in conf.read_text()


def test_start_and_remove_argv() -> None:
    cli = ("env", "CONTAINERS_CONF=/x", "podman", "--runtime", "/usr/sbin/runc")
    argv = container.start_argv(cli, "rnr-c:1", name="rnr-c-0-0000abcd", cpuset=[3, 0, 1, 2], memory_mib=512)
    assert argv[: len(cli)] == list(cli)
    assert argv[len(cli):] == [
        "run", "-d", "--name", "rnr-c-0-0000abcd", "--network", "none", "--cpuset-cpus", "0-3",
        "--memory", "512m", "--tmpfs", "/dev/shm:rw,exec,nosuid,nodev,size=512m", "rnr-c:1", "sleep", "2147483647",
    ]
    bare = container.start_argv(("docker",), "img", name="n")
    assert "--cpuset-cpus" not in bare and "--memory" not in bare
    assert container.remove_argv(("docker",), "n") == ["docker", "rm", "-f", "n"]
    assert container.remove_argv(cli, "n")[len(cli):] == ["rm", "-f", "-t", "0", "n"]


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
def test_container_host_runs_lockbench_on_cpu_0(tmp_path: Path) -> None:
    campaign = "pytest-container"
    lockbench = tmp_path / "lockbench"
    subprocess.run(["cc", "-O2", "-static", "-pthread", "-o", str(lockbench), str(LOCKBENCH_C)], check=True, timeout=120)
    image = container.build_image(HERE, f"rnr-{campaign}:test", files={"/usr/bin/lockbench": lockbench})
    spec = describe_guest("container", {"vcpus": 1, "memory": 256}, read_topology(), {}, campaign, 0)
    assert spec.host_cpus == (0,)
    try:
        container.start(HERE, image, name=spec.name, cpuset=spec.host_cpus, memory_mib=spec.memory_mib)
        assert container.list_campaign(HERE, campaign) == [spec.name]
        inside = ContainerHost(HERE, spec.name, container.container_cli(HERE))
        res = inside.run(["sh", "-c", "grep Cpus_allowed_list /proc/self/status; lockbench --threads 2 --duration 0.2"], timeout=60)
        assert res.ok, res.stderr
        first, _, rest = res.stdout.partition("\n")
        assert first.split() == ["Cpus_allowed_list:", "0"]
        doc = json.loads(rest)
        assert doc["counter_ok"] is True and doc["threads"] == 2
        # put() lands a file inside the container; a command past its timeout is stopped inside it.
        note = tmp_path / "note.txt"
        note.write_text("hello\n")
        inside.put(note, "/opt/runner/note.txt")
        assert inside.run(["cat", "/opt/runner/note.txt"], timeout=30).stdout == "hello\n"
        slow = inside.run(["sleep", "30"], timeout=1)
        assert slow.timed_out and slow.wall_s < 20
        assert "sleep 30" not in inside.run(["ps"], timeout=30).stdout
    finally:
        container.remove(HERE, spec.name)
        container.remove_image(HERE, image)
    assert container.list_campaign(HERE, campaign) == []
    container.remove(HERE, spec.name)  # no-op


def test_a_big_root_filesystem_gets_longer_to_import() -> None:
    assert container.import_timeout(10 * 2**20) == 120.0
    assert container.import_timeout(650 * 2**20) == 650.0
