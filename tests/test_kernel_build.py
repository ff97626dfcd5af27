"""Guest kernels built from source (issue 22): the build machinery on a stand-in tree (its Makefile plays
make's targets, so the cache, the lock, the staging directory and a kill mid-build are tested in seconds), and
one real build of a small config of Debian's linux-source (minutes), booted under TCG when the machine can."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from runner.provision import kernel as kr
from runner.provision import kernelbuild as kb
from tests.events import wait_for

# A stand-in kernel tree: the targets and the merge script the build calls, nothing compiled. bzImage waits
# for the file named by $GATE when it is set (a build in progress for as long as a test needs).
MAKEFILE = """\
tinyconfig defconfig:
\tprintf 'CONFIG_TINY=y\\n' > .config
olddefconfig:
\t@true
bzImage:
\t@echo '  CC      kernel/fake.o'
\t@if [ -n "$$GATE" ]; then touch building; while [ ! -e "$$GATE" ]; do sleep 0.05; done; fi
\tmkdir -p arch/x86/boot && printf 'kernel' > arch/x86/boot/bzImage
kernelrelease:
\t@echo 6.1.0-fake
"""
MERGE = """#!/bin/sh
# merge_config.sh -m BASE FRAGMENT...: appends the fragments (later wins as in the real script)
shift; base=$1; shift
cat "$@" >> "$base"
"""


def fake_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    (tree / "scripts/kconfig").mkdir(parents=True)
    (tree / "kernel/configs").mkdir(parents=True)
    (tree / "Makefile").write_text(MAKEFILE)
    (tree / "scripts/kconfig/merge_config.sh").write_text(MERGE)
    (tree / "kernel/configs/kvm_guest.config").write_text("CONFIG_KVM_GUEST=y\n")
    (tree / "kernel/locking").mkdir(parents=True)
    (tree / "kernel/locking/spinlock.c").write_text("int a;\nint b;\nint c;\n")
    return tree


def test_a_build_lands_whole_in_the_cache_with_its_log_and_a_warm_cache_builds_nothing(tmp_path: Path) -> None:
    recipe = kr.Recipe("pv", str(fake_tree(tmp_path)), config="tinyconfig", fragments=("kvm_guest.config",), set=(("NR_CPUS", "8"),))
    lines: list[str] = []
    built = kb.ensure_built(recipe, tmp_path / "cache", progress=lines.append)
    assert built.bzimage.read_bytes() == b"kernel" and built.release == "6.1.0-fake"
    assert kr.parse_config(built.config.read_text())["NR_CPUS"] == "8"
    assert "### kernel pv: make -j" in built.log.read_text()
    meta = json.loads((built.dir / "kernel.json").read_text())
    assert meta["digest"] == built.digest == built.dir.name and meta["recipe"]["name"] == "pv" and meta["added"]["XEN_PV"] == "y"
    assert [line.split(":")[1].split()[0] for line in lines] == ["unpacking", "config", "make", "built"]
    assert not list((tmp_path / "cache/kernels").glob(".staging-*"))
    again: list[str] = []
    assert kb.ensure_built(recipe, tmp_path / "cache", progress=again.append) == built and again == []


def test_a_patch_that_does_not_apply_names_the_patch_and_the_file(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    good = tmp_path / "good.patch"
    good.write_text("--- a/kernel/locking/spinlock.c\n+++ b/kernel/locking/spinlock.c\n@@ -1,3 +1,3 @@\n int a;\n-int b;\n+int oticket;\n int c;\n")
    bad = tmp_path / "bad.patch"
    bad.write_text("--- a/kernel/locking/spinlock.c\n+++ b/kernel/locking/spinlock.c\n@@ -1,3 +1,3 @@\n int x;\n-int y;\n+int z;\n int w;\n")
    recipe = kr.Recipe("oticket", str(tree), patches=(str(good), str(bad)), config="tinyconfig")
    with pytest.raises(kb.KernelBuildError) as caught:
        kb.ensure_built(recipe, tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith(f"guest kernel 'oticket': patch {bad} does not apply: kernel/locking/spinlock.c (1 out of 1 hunk FAILED)")
    assert "--- last lines of the build log ---" in message and caught.value.log_tail
    assert kb.lookup(recipe, tmp_path / "cache") is None and not list((tmp_path / "cache/kernels").glob(".staging-*"))
    assert (tree / "kernel/locking/spinlock.c").read_text() == "int a;\nint b;\nint c;\n"  # the source tree is untouched


def test_a_symbol_the_config_does_not_have_is_an_error_naming_it(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    # This tree's "olddefconfig" drops everything but what tinyconfig set: every asked symbol is dropped.
    (tree / "Makefile").write_text(MAKEFILE.replace("olddefconfig:\n\t@true", "olddefconfig:\n\tprintf 'CONFIG_TINY=y\\n' > .config"))
    recipe = kr.Recipe("nopv", str(tree), config="tinyconfig", set=(("PARAVIRT_SPINLOCKS", "n"), ("NR_CPUS", "8")))
    with pytest.raises(kb.KernelBuildError, match=r"guest kernel 'nopv': the final \.config does not have what was asked: .*"
                                                   r"CONFIG_NR_CPUS: asked 8 \(set\), is not set"):
        kb.ensure_built(recipe, tmp_path / "cache")


def test_a_symbol_of_the_trees_own_fragment_this_kernel_does_not_take_is_a_note(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    (tree / "arch/x86/configs").mkdir(parents=True)
    (tree / "kernel/configs/xen.config").write_text("CONFIG_XEN=y\n")
    (tree / "arch/x86/configs/xen.config").write_text("CONFIG_HIGHMEM64G=y\n")  # both are merged, as `make xen.config` does
    (tree / "Makefile").write_text(MAKEFILE.replace("olddefconfig:\n\t@true", "olddefconfig:\n\tgrep -v HIGHMEM64G .config > c; mv c .config"))
    lines: list[str] = []
    built = kb.ensure_built(kr.Recipe("pv", str(tree), config="tinyconfig", fragments=("xen.config",)), tmp_path / "cache", lines.append)
    notes = json.loads((built.dir / "kernel.json").read_text())["fragment_notes"]
    assert notes == ["CONFIG_HIGHMEM64G: asked y (the tree's fragment xen.config), is not set (an unmet dependency, or a symbol this kernel does not have)"]
    assert any("1 symbol(s) of the tree's fragments not taken" in line for line in lines)


def test_two_campaigns_needing_the_same_build_build_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = fake_tree(tmp_path)
    gate = tmp_path / "gate"
    monkeypatch.setenv("GATE", str(gate))
    recipe = kr.Recipe("pv", str(tree), config="tinyconfig")
    lines: list[list[str]] = [[], []]
    results: list[kb.Built | None] = [None, None]

    def build(i: int) -> None:
        results[i] = kb.ensure_built(recipe, tmp_path / "cache", progress=lines[i].append)

    first = threading.Thread(target=build, args=(0,))
    first.start()
    assert wait_for(lambda: any((tmp_path / "cache/kernels").glob(".staging-*/src/building")))
    second = threading.Thread(target=build, args=(1,))
    second.start()
    assert wait_for(lambda: any("another campaign is building it" in line for line in lines[1]))
    gate.touch()
    first.join()
    second.join()
    assert results[0] == results[1] is not None
    assert sum("unpacking" in line for line in lines[0] + lines[1]) == 1


def test_a_build_killed_midway_leaves_no_kernel_and_the_next_launch_builds_again(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    gate = tmp_path / "gate"
    cache = tmp_path / "cache"
    script = ("import sys; from pathlib import Path; from runner.provision import kernel as kr, kernelbuild as kb; "
              f"kb.ensure_built(kr.Recipe('pv', {str(tree)!r}, config='tinyconfig'), Path({str(cache)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "GATE": str(gate)}, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        assert wait_for(lambda: any((cache / "kernels").glob(".staging-*/src/building")))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    recipe = kr.Recipe("pv", str(tree), config="tinyconfig")
    assert kb.lookup(recipe, cache) is None
    assert not [p for p in (cache / "kernels").iterdir() if not p.name.startswith(".")]  # no kernel, no recipe index
    gate.touch()
    built = kb.ensure_built(recipe, cache)
    assert built.bzimage.is_file() and not list((cache / "kernels").glob(".staging-*"))


# ------------------------------------------------------------------------------------------ a real build

REAL = kr.Recipe("tiny-pv", kr.LINUX_SOURCE, config="tinyconfig")


REAL_MATRIX = """\
campaign: {campaign}
hosts: {{group: local, inventory: {inventory}}}
guest_kernels:
  tiny-pv: {{build: {{source: linux-source, config: tinyconfig}}}}
workload:
  name: command
  params: {{env: kvm, vcpus: 2, run: 'echo "{{\\"cpus\\": $(grep -c ^processor /proc/cpuinfo)}}"'}}
axes: {{guest_kernel: [tiny-pv]}}
repetitions: 1
timeout: 240
"""


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not kr.LINUX_SOURCE_TARBALL.is_file(), reason="needs Debian's linux-source-6.1 (scripts/setup.sh --test)")
def test_a_real_small_kernel_builds_with_every_guest_driver_built_in() -> None:
    # In the runner's own cache (RUNNER_CACHE, as launch uses it): cold the first time on a machine, then the
    # boot test below and later runs find it there. The stand-in tree tests above cover a cold cache.
    cache = None
    lines: list[str] = []
    built = kb.ensure_built(REAL, cache, progress=lines.append)
    final = kr.parse_config(built.config.read_text())
    for sym in ("VIRTIO_BLK", "VIRTIO_NET", "VIRTIO_PCI", "XEN_PV", "XEN_PVH", "XEN_BLKDEV_FRONTEND", "XEN_NETDEV_FRONTEND", "HVC_XEN",
                "PARAVIRT_SPINLOCKS", "KVM_GUEST", "SERIAL_8250_CONSOLE", "BLK_DEV_INITRD", "DEVTMPFS"):
        assert final[sym] == "y", sym
    assert "MODULES" not in final or final["MODULES"] == "n"
    assert built.release.startswith("6.1") and built.bzimage.stat().st_size > 100_000
    cold = len(lines)
    assert kb.ensure_built(REAL, cache, progress=lines.append) == built and lines[cold:] == []  # warm: nothing built


@pytest.mark.integration
@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not kr.LINUX_SOURCE_TARBALL.is_file(), reason="needs Debian's linux-source-6.1 (scripts/setup.sh --test)")
def test_a_campaign_boots_the_recipe_kernel_and_records_what_it_booted(tmp_path: Path) -> None:
    from runner.cli import main
    from runner.hosts.local import LocalHost
    from runner.provision import libvirt
    from runner.records.store import read_campaign

    project = Path(__file__).resolve().parents[1]
    matrix = tmp_path / "tiny.yml"
    matrix.write_text(REAL_MATRIX.format(campaign="tinykernel", inventory=project / "inventory"))
    try:
        assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 0
    finally:
        assert libvirt.list_campaign(LocalHost(), "tinykernel") == []
    built = kb.lookup(REAL)
    assert built is not None
    metrics, trials, _ = read_campaign(tmp_path / "ds" / "tinykernel")
    row = trials.iloc[0]
    assert row["status"] == "ok"
    assert (row["kernel_recipe"], row["kernel_build"], row["kernel_release"], row["kernel_config_digest"]) == (
        "tiny-pv", built.digest, built.release, built.config_digest)
    assert row["guest_uname"] == built.release  # the guest booted the built kernel
    assert (tmp_path / "ds/tinykernel/kernels" / f"{built.digest}.config").read_text() == built.config.read_text()
    assert list(metrics[(metrics["metric"] == "cpus") & (metrics["vm"] == 0)]["value"]) == [2.0]
    if row["accel"] == "kvm":  # a KVM signature: Linux says whether PV spinlocks are on (docs/kernels.md)
        assert "PV spinlocks enabled" in row["guest_pvspin"]
    else:  # TCG shows no hypervisor, so the kernel prints no PV spinlock line
        assert row["accel"] == "tcg" and pd.isna(row["guest_pvspin"])


def test_the_guest_image_of_a_built_kernel_loads_no_module_and_names_its_build(tmp_path: Path) -> None:
    from runner.provision import image

    d = tmp_path / "kernels" / ("b" * 16)
    d.mkdir(parents=True)
    (d / "bzImage").write_bytes(b"kernel")
    (d / "kernel.json").write_text(json.dumps({"digest": "b" * 16, "release": "6.1.0-tiny", "config_digest": "c" * 16,
                                               "recipe": {"name": "pv"}}))
    key = image.campaign_keypair(tmp_path / "keys")
    img = image.build_image(tmp_path / "images", key_path=key, kernel=d / "bzImage", net_modules=image.NET_MODULES + image.XEN_NET_MODULES)
    assert img.kernel_release == "6.1.0-tiny" and img.kernel.read_bytes() == b"kernel"
    listing = subprocess.run(f"gzip -dc {img.initrd} | cpio -t --quiet", shell=True, capture_output=True, text=True, check=True).stdout.split()
    assert not [p for p in listing if p.endswith(".ko")]  # virtio and the Xen front ends are built in
    extract = tmp_path / "x"
    extract.mkdir()
    subprocess.run(f"gzip -dc {img.initrd} | cpio -id --quiet etc/runner-kernel etc/runner-modules", shell=True, cwd=extract, check=True)
    assert (extract / "etc/runner-kernel").read_text() == f"pv {'b' * 16} 6.1.0-tiny {'c' * 16}\n"
    assert (extract / "etc/runner-modules").read_text().strip() == ""  # /init's loop loads nothing


# ------------------------------------------------------------------------------------------ the boot matrix (long)

HOST_VM_MATRIX = """\
campaign: {campaign}
hosts: {{group: vmhosts, inventory: {inventory}}}
guest_kernels:
  tiny-pv: {{build: {{source: linux-source, config: tinyconfig}}}}
  tiny-nopvspin: {{build: {{source: linux-source, config: tinyconfig}}, cmdline: nopvspin}}
workload: {{name: lockbench, params: {{vcpus: 2, lock: ticket, threads: 1, duration: 1.0}}}}
axes: {{env: {envs}, guest_kernel: [tiny-pv, tiny-nopvspin]}}
repetitions: 1
timeout: 600
retry: {{attempts: 1}}
"""


@pytest.mark.integration
@pytest.mark.guest
@pytest.mark.long
@pytest.mark.timeout(5400)
@pytest.mark.parametrize(("kind", "envs", "enabled", "disabled"), [
    ("kvm", ["kvm"], "PV spinlocks enabled", "PV spinlocks disabled, forced by \"nopvspin\" parameter"),
    ("xen", ["xen-pv", "xen-pvh"], "xen: PV spinlocks enabled", "xen: PV spinlocks disabled"),
])
def test_the_recipe_kernel_boots_on_the_host_vms_and_the_guest_says_its_pv_spinlocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, envs: list[str], enabled: str, disabled: str) -> None:
    """The built kernel (shipped like the guest images) boots as kvm guests with accel=kvm on the KVM host VM,
    and as xen-pv and xen-pvh guests on the Xen host VM, with 2 vCPUs; the guest's own boot line says PV
    spinlocks are enabled, and disabled with nopvspin (the same build: the command line differs)."""
    from runner.cli import main
    from runner.execution import images
    from runner.records.store import read_campaign
    from runner.testing import vmhost

    monkeypatch.setenv("RUNNER_PROBE_TIMEOUT", "240")
    kb.ensure_built(REAL)
    start = vmhost.start_kvm_host if kind == "kvm" else vmhost.start_xen_host
    vm = start(tmp_path / "vm", images.CONTROLLER_CACHE)
    try:
        matrix = tmp_path / "m.yml"
        campaign = f"pytest-kernel-{kind}"
        matrix.write_text(HOST_VM_MATRIX.format(campaign=campaign, inventory=vmhost.write_inventory([vm], tmp_path / "vm"),
                                                envs=json.dumps(envs)))
        assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 0
    finally:
        vmhost.stop(vm)
    _, trials, _ = read_campaign(tmp_path / "ds" / campaign)
    print(trials[["env", "guest_kernel", "accel", "status", "boot_s", "guest_uname", "guest_pvspin", "error"]].to_string())  # -s: the figures
    built = kb.lookup(REAL)
    assert built is not None and (trials["status"] == "ok").all(), trials[["env", "guest_kernel", "error"]]
    assert set(trials["kernel_build"]) == {built.digest} and set(trials["guest_uname"]) == {built.release}
    assert set(trials["accel"]) == {"kvm" if kind == "kvm" else "xen"}
    lines = dict(zip(trials["env"] + "/" + trials["guest_kernel"], trials["guest_pvspin"]))
    for env in envs:
        assert enabled in lines[f"{env}/tiny-pv"] and disabled in lines[f"{env}/tiny-nopvspin"], lines


@pytest.mark.integration
@pytest.mark.netns
def test_a_recipe_with_a_build_host_is_built_there_and_fetched_back(testbed, tmp_path: Path) -> None:  # noqa: ANN001
    """build_host: the tree goes to an inventory host over its SSH connection, the build runs there (the
    stand-in tree's make), and the kernel, its .config and the log land in this machine's cache."""
    tree = fake_tree(tmp_path)
    patch = tmp_path / "p.patch"
    patch.write_text("--- a/kernel/locking/spinlock.c\n+++ b/kernel/locking/spinlock.c\n@@ -1,3 +1,3 @@\n int a;\n-int b;\n+int oticket;\n int c;\n")
    host = testbed.hosts[0].name
    spec = {"build": {"source": str(tree), "patches": [str(patch)], "config": "tinyconfig", "fragments": ["kvm_guest.config"],
                      "build_host": host}}
    lines: list[str] = []
    out = kb.prepare_kernels([{"guest_kernel": "pv", "guest_kernel_spec": spec}], tmp_path / "ds", lines.append,
                             cache=tmp_path / "cache", inventory=testbed.inventory_path)
    built = kb.lookup(kb.recipe_from_spec("pv", spec), tmp_path / "cache")
    assert built is not None and out["pv"]["build"] == built.digest and built.release == "6.1.0-fake"
    assert built.bzimage.read_bytes() == b"kernel"
    assert json.loads((built.dir / "kernel.json").read_text())["built_on"] == host
    assert any(line.endswith(f"on {host}") and "unpacking" in line for line in lines), lines
    assert "patching file kernel/locking/spinlock.c" in built.log.read_text()
    assert kr.parse_config(built.config.read_text())["KVM_GUEST"] == "y"


@pytest.mark.integration
def test_a_failed_build_stops_the_launch_before_any_trial_with_the_recipe_and_the_log_tail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.cli import main

    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    tree = fake_tree(tmp_path)
    bad = tmp_path / "oticket.patch"
    bad.write_text("--- a/kernel/locking/qspinlock.c\n+++ b/kernel/locking/qspinlock.c\n@@ -1,1 +1,1 @@\n-int x;\n+int y;\n")
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: badkernel\nhosts: {{group: local, inventory: {Path(__file__).resolve().parents[1] / 'inventory'}}}\n"
        f"guest_kernels:\n  oticket: {{build: {{source: {tree}, patches: [{bad.name}], config: tinyconfig}}}}\n"
        "workload: {name: command, params: {env: kvm, vcpus: 1, run: 'echo {}'}}\naxes: {guest_kernel: [oticket]}\nrepetitions: 1\n")
    assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) != 0
    err = capsys.readouterr().err
    assert f"guest kernel 'oticket': patch {bad} does not apply: kernel/locking/qspinlock.c (not in the tree)" in err
    assert "--- last lines of the build log ---" in err and "can't find file to patch" in err
    assert not list((tmp_path / "ds").rglob("*.parquet"))  # no trial ran


LOCK_STAT_MATRIX = """\
campaign: {campaign}
hosts: {{group: here, inventory: {inventory}}}
guest_kernels:
  lockstat: {{build: {{source: linux-source, config: tinyconfig, set: {{DEBUG_KERNEL: y, LOCK_STAT: y}}, build_host: {build_host}}}}}
workload:
  name: command
  params:
    env: kvm
    vcpus: 2
    run: 'for w in 1 2; do (i=0; while [ $i -lt 3000 ]; do : > /tmp/f$w.$i; rm /tmp/f$w.$i; i=$((i+1)); done) & done; wait; echo "{{\\"files\\": 6000}}"'
axes: {{guest_kernel: [lockstat]}}
probes: [lock_stat]
repetitions: 1
timeout: 600
"""


@pytest.mark.integration
@pytest.mark.netns
@pytest.mark.guest
@pytest.mark.long
@pytest.mark.timeout(5400)
@pytest.mark.skipif(not kr.LINUX_SOURCE_TARBALL.is_file(), reason="needs Debian's linux-source-6.1 (scripts/setup.sh --test)")
def test_a_lock_stat_kernel_built_on_a_build_host_gives_the_lock_stat_probe_inside_the_guest(
        testbed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    """A real build of Debian's linux-source (tinyconfig with DEBUG_KERNEL and LOCK_STAT: lockdep's lock
    statistics) on a build_host reached over SSH (a namespace test-bed host: its own sshd, this machine's
    CPUs; cold about 23 min on 2 cores, hence `long`), fetched back and booted as a kvm guest here (TCG); the
    lock_stat probe reads /proc/lock_stat inside the guest around two shells creating and removing files."""
    import yaml

    from runner.cli import main
    from runner.records.store import read_campaign

    host = testbed.hosts[0].name
    doc = yaml.safe_load(testbed.inventory_path.read_text())
    doc["all"]["children"]["here"] = {"hosts": {"here": {"ansible_connection": "local"}}}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    matrix = tmp_path / "lockstat.yml"
    matrix.write_text(LOCK_STAT_MATRIX.format(campaign="pytest-lockstat", inventory=inventory, build_host=host))
    assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 0
    capsys.readouterr()
    metrics, trials, _ = read_campaign(tmp_path / "ds" / "pytest-lockstat")
    row = trials.iloc[0]
    assert row["status"] == "ok" and row["kernel_recipe"] == "lockstat"
    built = next((tmp_path / "ds/pytest-lockstat/kernels").glob("*.config")).read_text()
    assert "CONFIG_LOCK_STAT=y" in built.splitlines()
    probe = metrics[(metrics["probe"] == "lock_stat") & (metrics["side"] == "guest")]
    values = dict(zip(probe["metric"], probe["value"]))
    assert values["lock_stat.acquisitions"] > 0 and values["lock_stat.contentions"] >= 0
    assert [m for m in values if m.endswith(".wait_us") and m != "lock_stat.wait_us"]  # the top classes by wait
