"""Guest images with a full userland: the catalog (pure), the Debian image build, and real campaigns that
run the same Debian userland in a TCG guest and in a container.

The Debian image is built once per machine with mmdebstrap from this machine's apt sources (about a minute
and a half) and cached in the runner's cache (~/.cache/runner), never in the repository.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import ImageBuildError, MatrixError
from runner.execution import images, pervm
from runner.workloads import base
from runner.hosts.local import LocalHost
from runner.matrix.load import parse_matrix
from runner.provision import container, libvirt, rootfs
from runner.records.store import read_campaign
from runner.trials import plan

PROJECT = Path(__file__).resolve().parents[1]
HERE = LocalHost()
BASE = "campaign: c\nworkload: {name: lockbench, params: {env: kvm}}\n"


def test_catalog_names_are_checked_at_plan_time() -> None:
    with pytest.raises(MatrixError, match=r"axes.guest_image\[1\]: no guest image 'ubuntu'; known: minimal, debian, lab"):
        parse_matrix(BASE + "guest_images: {lab: {debian: true, packages: [stress-ng]}}\naxes: {guest_image: [debian, ubuntu]}\n")
    with pytest.raises(MatrixError, match="guest_images.debian: 'debian' is built in"):
        parse_matrix(BASE + "guest_images: {debian: {debian: true}}\n")
    with pytest.raises(MatrixError, match="guest_images.mine.file: 'img.qcow2' is not an absolute path"):
        parse_matrix(BASE + "guest_images: {mine: {file: img.qcow2, host_key: ssh-ed25519 AAAAC3Nz}}\n")
    with pytest.raises(MatrixError, match="guest_images.mine"):  # a file needs its host key (pinned, never learnt)
        parse_matrix(BASE + "guest_images: {mine: {file: /srv/img.qcow2}}\n")
    m = parse_matrix(BASE + "guest_images: {lab: {debian: true, packages: [stress-ng], mirror: 'http://mirror.lab/debian'}}\n"
                     "axes: {guest_image: [minimal, lab]}\nrepetitions: 1\n")
    specs = {dict(t.params)["guest_image"]: dict(t.params).get("guest_image_spec") for t in plan(m, {"h": 2})}
    assert specs == {"minimal": None, "lab": {"debian": True, "packages": ["stress-ng"], "mirror": "http://mirror.lab/debian"}}


def test_recipes_are_content_addressed() -> None:
    debian = rootfs.Recipe.from_entry(None)
    assert debian.packages == rootfs.DEBIAN_PACKAGES and debian.mirror is None and debian.suite == "bookworm"
    lab = rootfs.Recipe.from_entry({"debian": True, "packages": ["sysbench", "gcc"], "mirror": "http://m/debian"})
    assert lab.packages == (*rootfs.DEBIAN_PACKAGES, "sysbench") and lab.mirror == "http://m/debian"
    assert "stress-ng" in debian.packages  # the stressng workload runs in the debian image
    state = "InRelease Date: Sat, 28 Nov 2026 09:12:01 UTC"
    assert rootfs.rootfs_digest(debian, state) == rootfs.rootfs_digest(rootfs.Recipe(packages=tuple(reversed(debian.packages))), state)
    assert rootfs.rootfs_digest(debian, state) != rootfs.rootfs_digest(debian, state.replace("28", "29"))  # the archive moved
    assert rootfs.rootfs_digest(debian, state) != rootfs.rootfs_digest(lab, state)
    assert rootfs.archive_state(lab) == "mirror http://m/debian"
    argv = rootfs.mmdebstrap_argv(lab, Path("/x/rootfs.tar"))
    assert argv[:2] == ["mmdebstrap", "--variant=apt"] and argv[-3:] == ["bookworm", "/x/rootfs.tar", "http://m/debian"]
    assert "stress-ng" in argv[2] and "openssh-server" in argv[2]


def test_overlay_names_belong_to_one_campaign() -> None:
    name = rootfs.overlay_name("lab-a", 1, "0123456789ab")
    assert name == "rnr-lab-a-1-0123456789ab.qcow2"
    assert rootfs.overlay_of(name, "lab-a") and not rootfs.overlay_of(name, "lab") and not rootfs.overlay_of("x.qcow2", "lab-a")
    assert rootfs.overlay_argv("/b/disk.qcow2", "/o/x.qcow2") == ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "/b/disk.qcow2", "/o/x.qcow2"]


def test_disk_catalog_boots_the_disk_with_the_kernels_initrd() -> None:
    img = rootfs.DiskImage(Path("/c/disk.qcow2"), Path("/boot/vmlinuz-6.1"), Path("/boot/initrd.img-6.1"), Path("/k"), "ssh-ed25519 A", "6.1", "d", None)
    cat = images.disk_catalog(img, "kvm", {})
    assert cat["default"]["initrd"] == "/boot/initrd.img-6.1"
    assert "root=/dev/vda rw init=/sbin/runner-init" in cat["default"]["cmdline"] and cat["nopvspin"]["cmdline"].endswith(" nopvspin")
    assert "root=/dev/xvda" in images.disk_catalog(img, "xen-pv", {})["default"]["cmdline"]


def test_kernel_builds_add_up_over_guests() -> None:
    from runner.records.metric import Metric

    def vm(bph: float, cores: float) -> list[Metric]:
        return [Metric("builds_per_hour", bph, "builds/h", True), Metric("cores", cores, "cores", None)]

    out = {(m.name, m.vm): m.value for m in pervm.combine([vm(30.0, 2), vm(10.0, 2)], [{}, {}], base.get("gmake"))}
    assert out[("builds_per_hour", None)] == 40.0 and out[("builds_per_hour_per_core", None)] == 10.0
    assert out[("cores", None)] == 4 and out[("builds_per_hour", 1)] == 10.0 and out[("vm_jain", None)] == 0.8


def test_container_archive_gets_the_workload_files_once(tmp_path: Path) -> None:
    """Files added to a root filesystem tarball for `podman import`: parents created, a path the base already
    has replaced, no path named twice (podman refuses duplicates)."""
    import tarfile

    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("old")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tmp_path / "base.tar"), "."], check=True)
    new, binary = tmp_path / "tool", tmp_path / "lockbench"
    new.write_text("new")
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    container._append_files(tmp_path / "base.tar", {"/usr/bin/tool": new, "/opt/runner/lockbench": binary})
    with tarfile.open(tmp_path / "base.tar") as tar:
        names = [n.removeprefix("./").rstrip("/") for n in tar.getnames()]
        assert len(names) == len(set(names)) and {"opt", "opt/runner", "opt/runner/lockbench"} <= set(names)
        assert tar.extractfile("./usr/bin/tool").read() == b"new"
        member = tar.getmember("./opt/runner/lockbench")
        assert (member.uid, member.mode & 0o777) == (0, 0o755)


def test_a_failed_build_names_its_step_and_log_and_leaves_nothing(tmp_path: Path) -> None:
    """An unreachable mirror (a closed port on loopback): one line with the step and the log, no image."""
    recipe = rootfs.Recipe(packages=("openssh-server",), mirror="http://127.0.0.1:9/debian")
    with pytest.raises(ImageBuildError, match=r"guest image build: mmdebstrap failed: .* \(log: .*\.failed\.log\)") as err:
        rootfs.build_rootfs(tmp_path, recipe)
    assert err.value.exit_code == 2
    log = Path(str(err.value).rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and "mmdebstrap" in log.read_text()
    assert [p.name for p in (tmp_path / "rootfs").iterdir()] == [log.name]  # no staging dir, no final dir


def _nothing_left(campaign: str) -> None:
    assert libvirt.list_campaign(HERE, campaign) == [] and container.list_campaign(HERE, campaign) == []
    slug = campaign.replace("/", "_")
    overlays = Path(rootfs.OVERLAY_DIR)
    assert not overlays.exists() or not [p for p in overlays.iterdir() if rootfs.overlay_of(p.name, slug)]


@pytest.mark.integration
@pytest.mark.guest
@pytest.mark.slow
def test_debian_userland_in_a_guest_and_a_container(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One matrix: lockbench with threads "100%" in a 2-vCPU Debian TCG guest and a 2-CPU Debian container.
    Both run 2 threads (the guest's vCPUs, the container's cpuset, not the host's CPUs), and the trials
    record the image; the guest booted the disk through its own overlay, removed afterwards."""
    name = "pytest-debian-image"
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: lockbench, params: {guest_image: debian, lock: ttas, threads: '100%', duration: 0.3, vcpus: 2}}\n"
        "axes: {env: [kvm, container]}\nrepetitions: 2\ntimeout: 120\nretry: {attempts: 1}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    metrics, trials, prov = read_campaign(name, tmp_path / "ds")
    assert sorted(trials["status"]) == ["ok"] * 4
    assert set(trials["guest_image"]) == {"debian"} and trials["guest_image_digest"].notna().all()
    assert {json.loads(p)["threads"] for p in trials["params_json"]} == {2}
    threads = metrics[metrics["metric"] == "thread_ops"].groupby("trial_id")["thread"].nunique()
    assert set(threads) == {2}
    kvm = trials[trials["env"] == "kvm"]
    assert kvm["boot_id"].nunique() == 1 and set(kvm["accel"]) == {"tcg"}  # booted once, reused
    facts = json.loads(kvm["guest_facts_json"].iloc[0])[0]
    assert "root=/dev/vda" in facts["cmdline"] and facts["online_cpus"] == "0-1"
    image = prov["guest_images"]["debian"]
    assert image["disks"]["kvm"] in set(kvm["guest_image_digest"]) and image["packages"]["openssh-server"].startswith("1:9")
    assert {"gcc-12", "make", "python3", "linux-source-6.1", "linux-perf"} <= set(image["packages"])
    _nothing_left(name)


@pytest.mark.integration
@pytest.mark.guest
@pytest.mark.slow
def test_gmake_in_a_debian_container(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel build (tinyconfig, target init/, Debian's linux-source inside the image) in a container of
    the Debian image, prepared once per container and timed like on the host."""
    name = "pytest-debian-gmake"
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: gmake, params: {env: container, guest_image: debian, config: tinyconfig, target: init/, "
        "vcpus: 2, memory: 3072}}\nrepetitions: 1\ntimeout: 900\nretry: {attempts: 1}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    row = trials.iloc[0]
    assert (row.status, row.env, row.accel, row.guest_image) == ("ok", "container", "none", "debian")
    bph = metrics[(metrics["metric"] == "builds_per_hour") & metrics["vm"].isna()]["value"].item()
    cores = metrics[(metrics["metric"] == "cores") & metrics["vm"].isna()]["value"].item()
    assert bph > 0 and cores == 2  # all of the container's CPUs
    _nothing_left(name)


@pytest.mark.integration
@pytest.mark.guest
@pytest.mark.long
@pytest.mark.timeout(7200)
def test_gmake_in_a_debian_tcg_guest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel build in a 2-vCPU TCG guest of the Debian image (unpacking and configuring the tree in the
    guest alone takes minutes under TCG: `long`, not in CI)."""
    name = "pytest-debian-gmake-guest"
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: {name}\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: gmake, params: {env: kvm, guest_image: debian, config: tinyconfig, target: init/, "
        "vcpus: 2, memory: 4096}}\nrepetitions: 1\ntimeout: 7200\nretry: {attempts: 1}\n"
    )
    rc = main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    metrics, trials, _ = read_campaign(name, tmp_path / "ds")
    assert (trials.iloc[0].env, trials.iloc[0].accel, trials.iloc[0].guest_image) == ("kvm", "tcg", "debian")
    assert metrics[(metrics["metric"] == "builds_per_hour") & metrics["vm"].isna()]["value"].item() > 0
    _nothing_left(name)

