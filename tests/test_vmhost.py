"""Hypervisor host VMs for the test bed (runner.testing.vmhost): the pure parts here; booting one is in
tests/test_kvm_host.py (slow)."""

from __future__ import annotations

from pathlib import Path

from runner.provision import rootfs
from runner.testing import vmhost


def test_qemu_argv_emulates_svm_and_forwards_ssh_to_loopback_only() -> None:
    disk = rootfs.DiskImage(Path("/c/disk.qcow2"), Path("/boot/vmlinuz-6.1"), Path("/boot/initrd.img-6.1"), Path("/k"),
                            "ssh-ed25519 AAAA", "6.1", "d", None)
    argv = vmhost.qemu_argv(disk, Path("/t/kvm1.qcow2"), Path("/t/kvm1.console.log"), 40022, cpus=2, memory_mib=3072)
    assert argv[:4] == ["qemu-system-x86_64", "-accel", "tcg", "-cpu"] and argv[4] == "qemu64,+svm,+npt"
    assert argv[argv.index("-initrd") + 1] == "/boot/initrd.img-6.1" and argv.index("-initrd") < argv.index("-append")
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
