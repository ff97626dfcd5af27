"""Guest images built from what Debian installed on this machine (no downloads).

An image is a kernel (`/boot/vmlinuz-*`, package linux-image-amd64) and a gzip'd cpio (newc) initramfs
holding busybox-static, dropbear (package dropbear-bin) with the shared libraries `ldd` lists, OpenSSH's
sftp-server (so paramiko/Fabric `put` works), the virtio network modules the kernel does not build in,
a per-image dropbear host key, the campaign's authorized key and any extra files (e.g. a static
lockbench). Its `/init` mounts proc/sys/dev, loads the modules, sets `eth0` to the address given as
`runner.ip=A.B.C.D/NN` (and `runner.gw=` if any) on the kernel command line, starts dropbear on port 22
and prints `INIT_MARKER` then `SSH_MARKER` on the console. With `runner.probe` on the command line it
prints `INIT_MARKER` and powers off at once (used by `libvirt.probe_accel`).

Images are cached by content: the hash of every input names the directory, so an image is built once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ProvisionError
from runner.util import run_checked

# Bump when the layout or the init script changes, so cached images are rebuilt.
BUILDER_VERSION = 1
INIT_MARKER = "RUNNER-GUEST-INIT"
SSH_MARKER = "RUNNER-GUEST-SSH-READY"
# Network modules loaded by /init when the kernel has them as modules (Debian's kernel does).
NET_MODULES = ("virtio_pci", "virtio_net")
# For Xen guests (PV, and HVM with PV drivers): the netfront driver.
XEN_NET_MODULES = ("xen_netfront",)
DEFAULT_CMDLINE = "console=ttyS0 panic=-1 quiet"

# The start of every guest init (this image's and runner.provision.rootfs's): the marker, then the guest's
# address, gateway and probe flag from the kernel command line.
INIT_ARGS = f"""echo {INIT_MARKER}
IP=; GW=; PROBE=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    runner.ip=*) IP="${{arg#runner.ip=}}" ;;
    runner.gw=*) GW="${{arg#runner.gw=}}" ;;
    runner.probe) PROBE=1 ;;
  esac
done
"""

# Every guest init's network, once its modules are loaded: the name, loopback, and eth0 with the address and
# gateway INIT_ARGS read (none: no network but loopback).
INIT_NET = """hostname runner-guest
ip link set lo up
if [ -n "$IP" ]; then
  ip link set eth0 up
  ip addr add "$IP" dev eth0
  [ -n "$GW" ] && ip route add default via "$GW"
fi
"""
INIT_SCRIPT = f"""#!/bin/sh
# /init of a runner guest image (runner.provision.image).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
{INIT_ARGS}[ -n "$PROBE" ] && poweroff -f
for m in $(cat /etc/runner-modules); do insmod "/lib/modules/$m.ko" || echo "runner-guest: insmod $m failed"; done
{INIT_NET}dropbear -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid
echo {SSH_MARKER}
while :; do sleep 3600; done
"""


@dataclass(frozen=True)
class GuestImage:
    """A built image. `host_key` is the guest's SSH host public key line (for known_hosts)."""

    kernel: Path
    initrd: Path
    key_path: Path
    host_key: str
    kernel_release: str
    digest: str

    def catalog_entry(self, cmdline: str = DEFAULT_CMDLINE) -> dict[str, str]:
        """An entry of the guest kernel catalog `guest.describe_guest` takes."""
        return {"kernel": str(self.kernel), "initrd": str(self.initrd), "cmdline": cmdline}


def campaign_keypair(key_dir: Path) -> Path:
    """The campaign's SSH key pair (ed25519, no passphrase) in `key_dir`, generated on first use.

    Returns the private key path; the public key is beside it with `.pub`.
    """
    key = Path(key_dir) / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runner-campaign", "-f", str(key)])
    return key


def module_load_order(modules_dep: str, wanted: Iterable[str]) -> list[str]:
    """Module paths (relative to /lib/modules/<release>) to insmod, dependencies first.

    `modules_dep` is the text of modules.dep; a wanted module missing from it is taken to be built in.
    """
    deps: dict[str, list[str]] = {}
    for line in modules_dep.splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {_module_name(p): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name in by_name:
            visit(by_name[name])
    return order


def module_name(path: str) -> str:
    """modules.dep path -> module name: 'kernel/drivers/net/virtio_net.ko.xz' -> 'virtio_net'."""
    return _module_name(path)


def copy_file(src: Path, dest: Path) -> None:
    """Copy a file into an image, mode kept; .xz-compressed kernel modules are stored decompressed."""
    if src.suffix == ".xz":
        dest.write_bytes(lzma.decompress(src.read_bytes()))
        os.chmod(dest, 0o644)
    else:
        shutil.copy2(src, dest)


def _module_name(path: str) -> str:
    return re.sub(r"\.ko(\.(xz|zst|gz))?$", "", path.rsplit("/", 1)[-1]).replace("-", "_")


def newest_kernel(boot: Path = Path("/boot")) -> Path:
    """The /boot/vmlinuz-* with the highest version."""
    kernels = sorted(boot.glob("vmlinuz-*"), key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p.name)])
    if not kernels:
        raise ProvisionError(f"no kernel {boot}/vmlinuz-*; install linux-image-amd64")
    return kernels[-1]


def build_image(
    out_dir: Path,
    *,
    key_path: Path,
    extra_files: Mapping[str, Path] | None = None,
    kernel: Path | None = None,
    net_modules: Iterable[str] = NET_MODULES,
) -> GuestImage:
    """Build (or reuse) the image for this campaign key and these extra files under `out_dir/<digest>/`.

    key_path: private key from `campaign_keypair`; its `.pub` is installed as root's authorized_keys.
    extra_files: guest path -> host file (mode kept), e.g. {"/usr/bin/lockbench": Path("lockbench")}.
    net_modules: network drivers loaded by /init (NET_MODULES for KVM, XEN_NET_MODULES for Xen).
    """
    kernel = Path(kernel) if kernel else newest_kernel()
    built = built_kernel(kernel)
    release = built["release"] if built else kernel.name.removeprefix("vmlinuz-")
    moddir = Path("/lib/modules") / release
    try:  # a kernel the runner built (issue 22) has its drivers built in: /init loads no module
        modules = [] if built else module_load_order((moddir / "modules.dep").read_text(), net_modules)
    except OSError as e:
        raise ProvisionError(f"cannot read the modules of kernel {release} in {moddir}: {e.strerror}") from None
    authorized = Path(f"{key_path}.pub").read_text()
    files: dict[str, Path] = {"/bin/busybox": _which("busybox"), "/sbin/dropbear": _which("dropbear")}
    sftp = Path("/usr/lib/openssh/sftp-server")
    if sftp.exists():
        files["/usr/lib/sftp-server"] = sftp  # where Debian's dropbear looks for it
    for binary in list(files.values()):
        for lib in _shared_libs(binary):
            files[str(lib)] = lib
    for mod in modules:
        files[f"/lib/modules/{_module_name(mod)}.ko"] = moddir / mod
    for guest_path, host_path in (extra_files or {}).items():
        if not Path(host_path).is_file():
            raise ProvisionError(f"extra file {host_path} for guest path {guest_path} does not exist")
        files[guest_path] = Path(host_path)

    if built:  # the guest says which build it booted (runner.provision.kernelfacts.FACTS_LINES)
        files["/etc/runner-kernel"] = kernel_note(out_dir, built)
    digest = _digest(kernel, files, authorized, [_module_name(m) for m in modules])
    final = Path(out_dir) / digest
    if not (final / "image.json").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=final.parent))
        try:
            _assemble(staging, kernel, files, authorized, [_module_name(m) for m in modules])
            os.chmod(staging, 0o755)
            try:
                os.replace(staging, final)
            except OSError:  # another builder won the race with the same content
                if not (final / "image.json").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    meta = json.loads((final / "image.json").read_text())
    return GuestImage(final / "vmlinuz", final / "initrd.img", Path(key_path), meta["host_key"], release, digest)


def built_kernel(kernel: Path) -> dict[str, Any] | None:
    """The kernel.json beside a kernel the runner built (runner.provision.kernelbuild), else None."""
    try:
        return json.loads((kernel.parent / "kernel.json").read_text())
    except (OSError, ValueError):
        return None


def kernel_note(out_dir: Path, built: Mapping[str, Any]) -> Path:
    """A file for the initramfs's /etc/runner-kernel: recipe, build digest, release, .config digest."""
    note = Path(out_dir) / "kernel-notes" / f"{built['digest']}.txt"
    if not note.exists():
        note.parent.mkdir(parents=True, exist_ok=True)
        tmp = note.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(f"{built['recipe']['name']} {built['digest']} {built['release']} {built['config_digest']}\n")
        os.replace(tmp, note)
    return note


def _assemble(out: Path, kernel: Path, files: Mapping[str, Path], authorized: str, modules: list[str]) -> None:
    root = out / "root"
    for d in ("bin", "sbin", "etc/dropbear", "proc", "sys", "dev", "tmp", "run", "root/.ssh", "usr/bin", "usr/sbin", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/run").symlink_to("../run")
    for guest_path, host_path in files.items():
        dest = root / guest_path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if host_path.suffix == ".xz":
            dest.write_bytes(lzma.decompress(host_path.read_bytes()))
        else:
            shutil.copy2(host_path, dest)
    applets = _run([str(root / "bin/busybox"), "--list"]).split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    _write(root / "init", INIT_SCRIPT, 0o755)
    _write(root / "etc/runner-modules", "\n".join(modules) + "\n")
    # Blank password field, but dropbear runs with -s (no password logins): keys only.
    _write(root / "etc/passwd", "root::0:0:root:/root:/bin/sh\n")
    _write(root / "etc/group", "root:x:0:\n")
    _write(root / "etc/shells", "/bin/sh\n")
    os.chmod(root / "root", 0o700)
    os.chmod(root / "root/.ssh", 0o700)
    _write(root / "root/.ssh/authorized_keys", authorized, 0o600)
    host_key = root / "etc/dropbear/dropbear_ed25519_host_key"
    _run(["dropbearkey", "-t", "ed25519", "-f", str(host_key)])
    public = next(line for line in _run(["dropbearkey", "-y", "-f", str(host_key)]).splitlines() if line.startswith("ssh-"))
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    cpio = subprocess.run(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", "+0:+0"],
        cwd=root,
        input=("\n".join(["."] + names) + "\n").encode(),
        capture_output=True,
        check=False,
    )
    if cpio.returncode:
        raise ProvisionError(f"cpio failed building the guest initramfs: {cpio.stderr.decode().strip()}")
    (out / "initrd.img").write_bytes(gzip.compress(cpio.stdout, compresslevel=6, mtime=0))
    shutil.copyfile(kernel, out / "vmlinuz")
    shutil.rmtree(root)
    for f in ("initrd.img", "vmlinuz"):
        os.chmod(out / f, 0o644)
    _write(out / "image.json", json.dumps({"builder_version": BUILDER_VERSION, "host_key": public, "kernel": str(kernel)}) + "\n")


def _digest(kernel: Path, files: Mapping[str, Path], authorized: str, modules: list[str]) -> str:
    h = hashlib.sha256(f"builder {BUILDER_VERSION}\n{INIT_SCRIPT}\n{authorized}\n{modules}\n".encode())
    for name, path in sorted({"/vmlinuz": kernel, **files}.items()):
        h.update(f"{name} {oct(path.stat().st_mode & 0o777)}\n".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _shared_libs(binary: Path) -> list[Path]:
    """Shared libraries of a dynamic binary (with the loader), as ldd resolves them; [] if static."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    libs = []
    for line in proc.stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def _which(name: str) -> Path:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise ProvisionError(f"{name} is not installed; install busybox-static and dropbear-bin")
    return Path(found)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def _run(argv: list[str]) -> str:
    return run_checked(argv, timeout=LOCAL_TOOL_TIMEOUT_S, what=argv[0], error=ProvisionError).stdout


LOCAL_TOOL_TIMEOUT_S = 600  # a key, a list of applets: seconds; more means the tool hangs
