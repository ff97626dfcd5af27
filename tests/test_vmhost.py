"""Hypervisor host VMs for the test bed (runner.testing.vmhost): the pure parts here; booting one is in
tests/test_kvm_host.py and tests/test_xen_host.py (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import ProvisionError
from runner.provision import rootfs
from runner.testing import vmhost


def test_qemu_argv_emulates_svm_and_forwards_ssh_to_loopback_only() -> None:
    disk = rootfs.DiskImage(Path("/c/disk.qcow2"), Path("/boot/vmlinuz-6.1"), Path("/boot/initrd.img-6.1"), Path("/k"),
                            "ssh-ed25519 AAAA", "6.1", "d", None)
    argv = vmhost.qemu_argv(disk, Path("/t/kvm1.qcow2"), Path("/t/kvm1.console.log"), 40022, cpus=2, memory_mib=3072)
    assert argv[:4] == ["qemu-system-x86_64", "-accel", "tcg", "-cpu"] and argv[4] == "qemu64,+svm,+npt"
    assert argv[argv.index("-initrd") + 1] == "/boot/initrd.img-6.1"
    cmdline = argv[argv.index("-append") + 1]
    assert "root=/dev/vda rw init=/sbin/runner-init" in cmdline and "runner.ip=10.0.2.15/24 runner.gw=10.0.2.2" in cmdline
    net = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in net and "hostfwd=tcp:127.0.0.1:40022-:22" in net  # nothing reachable but loopback
    assert "file=/t/kvm1.qcow2,format=qcow2,if=virtio" in argv
    no_initrd = vmhost.qemu_argv(rootfs.DiskImage(disk.disk, disk.kernel, None, disk.key_path, "k", "6.1", "d", None),
                                     Path("/o"), Path("/c"), 1, cpus=1, memory_mib=512)
    assert "-initrd" not in no_initrd


def test_known_hosts_line_names_the_forwarded_port() -> None:
    vm = vmhost.VMHost("kvm1", "kvm", 40022, 1, Path("/k"), "ssh-ed25519 AAAA", Path("/c"), Path("/o"), 1.0)
    assert vm.known_hosts_line == "[127.0.0.1]:40022 ssh-ed25519 AAAA\n"


def test_xen_host_boots_xen_by_multiboot_with_dom0_as_modules() -> None:
    disk = rootfs.DiskImage(Path("/c/disk.qcow2"), Path("/boot/vmlinuz-6.1"), Path("/boot/initrd.img-6.1"), Path("/k"),
                            "ssh-ed25519 AAAA", "6.1", "d", None)
    argv = vmhost.qemu_argv(disk, Path("/t/xen1.qcow2"), Path("/t/xen1.console.log"), 40023, cpus=2, memory_mib=3072,
                            xen=Path("/c/xen-4.17"), dom0_mib=1024)
    assert argv[4] == "qemu64,+svm,+npt"  # SVM with nested paging: Xen reports virt_caps hvm hap
    assert argv[argv.index("-kernel") + 1] == "/c/xen-4.17"
    xen_cmdline = argv[argv.index("-append") + 1]
    assert "console=com1" in xen_cmdline and "dom0_mem=1024M,max:1024M" in xen_cmdline
    dom0_kernel, dom0_initrd = argv[argv.index("-initrd") + 1].split(",")
    assert dom0_kernel.startswith("/boot/vmlinuz-6.1 console=hvc0 ") and "root=/dev/vda rw init=/sbin/runner-init" in dom0_kernel
    assert dom0_initrd == "/boot/initrd.img-6.1"
    comma = rootfs.DiskImage(disk.disk, Path("/boot/vmlinuz,x"), None, disk.key_path, "k", "6.1", "d", None)
    with pytest.raises(ProvisionError, match="comma"):
        vmhost.qemu_argv(comma, Path("/o"), Path("/c"), 1, cpus=1, memory_mib=512, xen=Path("/x"))


def test_the_inventory_says_what_each_vm_host_runs_and_the_state_reloads(tmp_path: Path) -> None:
    """kvm1 runs the bare host and libvirt guests, xen1's dom0 only Xen guests; both give their own boot and
    trial figures for estimates; the state `down` reads from another process reloads as it was written."""
    from runner.provision.inventory import load_inventory

    vms = [vmhost.VMHost("kvm1", "kvm", 40022, 11, tmp_path / "key", "ssh-ed25519 AAAA", tmp_path / "k.log", tmp_path / "k.qcow2", 50.0),
           vmhost.VMHost("xen1", "xen", 40023, 12, tmp_path / "key", "ssh-ed25519 BBBB", tmp_path / "x.log", tmp_path / "x.qcow2", 90.0)]
    kvm1, xen1 = load_inventory(vmhost.write_inventory(vms, tmp_path)).resolve("vmhosts")
    assert kvm1.envs == ("host", "container", "kvm", "qemu") and xen1.envs == ("xen-pv", "xen-pvh", "xen-hvm")
    assert dict(xen1.boot_s)["xen-hvm"] > dict(kvm1.boot_s)["kvm"] > 0 and kvm1.trial_s and xen1.trial_s
    vmhost.save(vms, tmp_path)
    assert vmhost.load(tmp_path) == vms
    with pytest.raises(ProvisionError, match="no VM hosts recorded there"):
        vmhost.load(tmp_path / "elsewhere")
