"""Guest images with a full Debian userland (`guest_image: debian`), built from Debian packages.

Two content-addressed stages, each built once per controller and cached under the image cache:

1. **Root filesystem** (`rootfs/<digest>/rootfs.tar`): `mmdebstrap --variant=apt` of the suite with
   DEBIAN_PACKAGES plus the entry's packages, from this machine's apt sources or the entry's mirror. No
   root mounts or loop devices. The digest covers the recipe (builder version, suite, packages, mirror)
   and the archive's state (the Date of every Release file apt has, or the mirror URL), so a changed
   archive gives a new image and an unchanged one is never rebuilt. `packages.json` beside it lists the
   installed packages and versions (for the dataset's provenance).
2. **Disk** (`disks/<digest>/disk.qcow2`): the root filesystem plus what the runner needs in it:
   /sbin/runner-init (the init, given as `init=` on the kernel command line), the image's own sshd host
   key (pinned by the runner, never trusted blindly), the controller's key for root, the guest kernel's
   network modules and the workload's guest files; `mkfs.ext4 -d` fills an ext4 file system without
   mounting it and `qemu-img convert` makes it a qcow2. Guests boot it by direct kernel boot (the
   catalog's kernel and its initrd, `root=/dev/vda`) on virtio-blk, each through its own copy-on-write
   overlay (`overlay_argv`), so guests sharing the image never write into it.

Containers use the stage-1 tarball (`podman import`), so a container trial and a guest trial run the same
userland. Failed builds leave nothing under a final name: every stage is built in a staging directory and
renamed into place; the log of a failed step is kept and named in the error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import ImageBuildError, ProvisionError
from runner.provision import image
from runner.util import run_checked

BUILDER_VERSION = 1
SUITE = "bookworm"
# What the built-in workloads and the runner need inside a guest: sshd (and sftp) for the runner,
# python3 and the kernel build tools and source for gmake, stress-ng for stressng, perf for the probes,
# iproute2 and kmod for init.
DEBIAN_PACKAGES = (
    "openssh-server", "openssh-sftp-server", "python3", "gcc", "make", "bc", "flex", "bison", "libelf-dev",
    "libssl-dev", "libc6-dev", "perl", "xz-utils", "linux-source-6.1", "linux-perf", "iproute2", "procps", "kmod", "mount",
    "stress-ng",
)  # fmt: skip
DISK_SIZE = "8G"  # sparse: the qcow2 holds only what was written; room for a kernel tree and its build
ROOT_CMDLINE = "root=/dev/vda rw init=/sbin/runner-init net.ifnames=0"  # no udev renames: eth0
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
OVERLAY_DIR = "/var/lib/libvirt/images/runner"  # on a hypervisor host: each guest's copy-on-write disk overlay

INIT_SCRIPT = f"""#!/bin/sh
# /sbin/runner-init of a runner Debian guest image (runner.provision.rootfs), booted with init=.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs tmpfs /dev/shm
mountpoint -q /run || mount -t tmpfs tmpfs /run
mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
mount -o remount,rw / 2>/dev/null
{image.INIT_ARGS}[ -n "$PROBE" ] && {{ sync; echo o > /proc/sysrq-trigger; }}
for m in $(cat /etc/runner-modules); do
  insmod "/lib/modules/runner/$m.ko" 2>/dev/null || grep -q "^$m " /proc/modules || echo "runner-guest: insmod $m failed"
done
{image.INIT_NET}for f in /etc/runner-init.d/*; do [ -x "$f" ] && "$f"; done  # an image's own services (e.g. libvirtd)
mkdir -p /run/sshd
/usr/sbin/sshd -f /etc/ssh/sshd_config
echo {image.SSH_MARKER}
while :; do sleep 3600 & wait $!; done
"""

SSHD_CONFIG = f"""# runner: keys only, one pinned host key, no DNS lookups (runner.provision.rootfs)
HostKey {HOST_KEY}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


@dataclass(frozen=True)
class Recipe:
    """A Debian root filesystem: suite, packages (DEBIAN_PACKAGES plus the entry's), mirror (None: this
    machine's apt sources)."""

    suite: str = SUITE
    packages: tuple[str, ...] = DEBIAN_PACKAGES
    mirror: str | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, object] | None) -> Recipe:
        """The recipe of a `guest_images` entry (None: the built-in debian image)."""
        entry = entry or {}
        extra = [str(p) for p in entry.get("packages", ()) or ()]  # type: ignore[union-attr]
        packages = tuple(dict.fromkeys([*DEBIAN_PACKAGES, *extra]))
        mirror = entry.get("mirror")
        return cls(str(entry.get("suite", SUITE)), packages, str(mirror) if mirror else None)


def archive_state(recipe: Recipe, lists: Path = Path("/var/lib/apt/lists")) -> str:
    """What the archive looked like: the Date of every Release file apt has (this machine's sources), or
    the mirror URL (a lab pins a snapshot by naming it, e.g. snapshot.debian.org/archive/debian/2026...)."""
    if recipe.mirror:
        return f"mirror {recipe.mirror}"
    dates = []
    for path in sorted(lists.glob("*Release")):
        with path.open(errors="replace") as f:
            for line in f:
                if line.startswith("Date:"):
                    dates.append(f"{path.name} {line.strip()}")
                    break
                if not line.strip():
                    break
    return "\n".join(dates) or "no apt lists"


def rootfs_digest(recipe: Recipe, state: str) -> str:
    """The content address of a root filesystem (pure)."""
    doc = {"builder": BUILDER_VERSION, "suite": recipe.suite, "packages": sorted(recipe.packages),
           "mirror": recipe.mirror, "archive": state}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def mmdebstrap_argv(recipe: Recipe, target: Path) -> list[str]:
    """The mmdebstrap command line of a recipe (pure)."""
    argv = ["mmdebstrap", "--variant=apt", f"--include={','.join(recipe.packages)}", recipe.suite, str(target)]
    return argv + ([recipe.mirror] if recipe.mirror else [])


@dataclass(frozen=True)
class RootFS:
    tar: Path
    digest: str
    packages: Mapping[str, str] = field(default_factory=dict)  # name -> version


@dataclass(frozen=True)
class DiskImage:
    """A bootable disk: its qcow2, the kernel and initrd to boot it with, the pinned host key."""

    disk: Path
    kernel: Path
    initrd: Path | None
    key_path: Path
    host_key: str
    kernel_release: str
    digest: str
    rootfs: RootFS | None


Progress = Callable[[str], None]


def build_rootfs(cache: Path, recipe: Recipe, progress: Progress | None = None) -> RootFS:
    """The recipe's root filesystem tarball under `cache/rootfs/<digest>/`, built on first use."""
    digest = rootfs_digest(recipe, archive_state(recipe))
    final = Path(cache) / "rootfs" / digest
    if not (final / "packages.json").exists():
        _need("mmdebstrap", "mmdebstrap")
        say = progress or (lambda _m: None)
        say(f"building Debian {recipe.suite} root filesystem {digest} ({len(recipe.packages)} packages, about a minute)")

        def make(staging: Path) -> None:
            _step(mmdebstrap_argv(recipe, staging / "rootfs.tar"), staging, "mmdebstrap", final)
            (staging / "packages.json").write_text(json.dumps(_tar_packages(staging / "rootfs.tar"), indent=1, sort_keys=True) + "\n")

        _build_into(final, make)
        say(f"root filesystem {digest} ready")
    return RootFS(final / "rootfs.tar", digest, json.loads((final / "packages.json").read_text()))


def build_disk(
    cache: Path,
    rootfs: RootFS,
    *,
    key_path: Path,
    kernel: Path,
    initrd: Path | None,
    extra_files: Mapping[str, Path] | None = None,
    extra_trees: Mapping[str, Path] | None = None,
    net_modules: Iterable[str] = image.NET_MODULES,
    progress: Progress | None = None,
) -> DiskImage:
    """The bootable disk of `rootfs` for this controller key, kernel and workload files (cached by digest).

    extra_files: guest path -> local file (mode kept); an executable /etc/runner-init.d/NAME runs at boot
    before sshd. extra_trees: guest path -> local directory copied whole (e.g. a kernel's modules)."""
    kernel = Path(kernel)
    built = image.built_kernel(kernel)  # a recipe kernel (issue 22): its drivers built in, no module to load
    release = built["release"] if built else kernel.name.removeprefix("vmlinuz-")
    moddir = Path("/lib/modules") / release
    try:
        modules = [] if built else image.module_load_order((moddir / "modules.dep").read_text(), net_modules)
    except OSError as e:
        raise ProvisionError(f"cannot read the modules of kernel {release} in {moddir}: {e.strerror}") from None
    authorized = Path(f"{key_path}.pub").read_text()
    files = {f"/lib/modules/runner/{image.module_name(m)}.ko": moddir / m for m in modules}
    if built:
        files["/etc/runner-kernel"] = image.kernel_note(Path(cache), built)
    for guest_path, host_path in (extra_files or {}).items():
        if not Path(host_path).is_file():
            raise ProvisionError(f"extra file {host_path} for guest path {guest_path} does not exist")
        files[guest_path] = Path(host_path)
    h = hashlib.sha256(f"disk {BUILDER_VERSION}\n{rootfs.digest}\n{INIT_SCRIPT}\n{SSHD_CONFIG}\n{authorized}\n".encode())
    for name, path in sorted(files.items()):
        h.update(f"{name} {oct(path.stat().st_mode & 0o777)}\n".encode() + hashlib.sha256(path.read_bytes()).digest())
    trees = {k: Path(v) for k, v in (extra_trees or {}).items()}
    for name, tree in sorted(trees.items()):
        if not tree.is_dir():
            raise ProvisionError(f"extra tree {tree} for guest path {name} is not a directory")
        h.update(f"tree {name}\n".encode())
        for path in sorted(tree.rglob("*")):  # by name, size and time: a tree of modules is large
            st = path.lstat()
            h.update(f"{path.relative_to(tree)} {st.st_size} {st.st_mtime_ns} {oct(st.st_mode)}\n".encode())
    digest = h.hexdigest()[:16]
    final = Path(cache) / "disks" / digest
    if not (final / "image.json").exists():
        for tool, package in (("mkfs.ext4", "e2fsprogs"), ("qemu-img", "qemu-utils"), ("ssh-keygen", "openssh-client")):
            _need(tool, package)
        say = progress or (lambda _m: None)
        say(f"building guest disk {digest} from root filesystem {rootfs.digest}")

        def make(staging: Path) -> None:
            root = staging / "root"
            root.mkdir()
            _step(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(rootfs.tar)], staging, "tar", final)
            _customize(root, files, authorized, [image.module_name(m) for m in modules])
            for name, tree in trees.items():
                dest = root / name.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                _step(["cp", "-a", str(tree), str(dest)], staging, "cp", final)
            host_key = (root / HOST_KEY.lstrip("/")).with_suffix(".pub").read_text().split()
            raw = staging / "disk.raw"
            _step(["mkfs.ext4", "-q", "-F", "-L", "runner-root", "-d", str(root), str(raw), DISK_SIZE], staging, "mkfs.ext4", final)
            shutil.rmtree(root)
            _step(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(staging / "disk.qcow2")], staging, "qemu-img", final)
            raw.unlink()
            os.chmod(staging / "disk.qcow2", 0o644)
            meta = {"builder_version": BUILDER_VERSION, "host_key": " ".join(host_key[:2]), "rootfs": rootfs.digest}
            (staging / "image.json").write_text(json.dumps(meta) + "\n")

        _build_into(final, make)
    meta = json.loads((final / "image.json").read_text())
    return DiskImage(final / "disk.qcow2", kernel, initrd, Path(key_path), meta["host_key"], release, digest, rootfs)


def overlay_argv(base: str, overlay: str, fmt: str = "qcow2") -> list[str]:
    """The command that makes a guest's copy-on-write overlay of a shared image (`fmt`: qcow2 or raw)."""
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", base, overlay]


def overlay_name(slug: str, index: int, boot_id: str) -> str:
    """The overlay file name of guest `index` of one boot of a campaign (slug: guest.campaign_slug)."""
    return f"rnr-{slug}-{index}-{boot_id}.qcow2"


def overlay_of(filename: str, slug: str) -> bool:
    """True if `filename` is an overlay name made by overlay_name for this campaign slug (and no other)."""
    return re.fullmatch(rf"rnr-{re.escape(slug)}-\d+-[0-9a-f]{{12}}\.qcow2", filename) is not None


def file_image(path: Path, host_key: str, key_path: Path, kernel: Path, initrd: Path | None) -> DiskImage:
    """A lab's own disk image (raw or qcow2) as a DiskImage; it is addressed by its content."""
    if not path.is_file():
        raise ProvisionError(f"guest image file {path} does not exist on this machine")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return DiskImage(path, Path(kernel), initrd, Path(key_path), host_key.strip(), Path(kernel).name.removeprefix("vmlinuz-"),
                     h.hexdigest()[:16], None)


def _customize(root: Path, files: Mapping[str, Path], authorized: str, modules: Sequence[str]) -> None:
    for guest_path, host_path in files.items():
        dest = root / guest_path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        image.copy_file(host_path, dest)
    _write(root / "sbin/runner-init", INIT_SCRIPT, 0o755)
    _write(root / "etc/runner-modules", "".join(f"{m}\n" for m in modules))
    _write(root / "etc/hostname", "runner-guest\n")
    _write(root / "etc/ssh/sshd_config.d/runner.conf", SSHD_CONFIG)
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    key = root / HOST_KEY.lstrip("/")
    _run_ok(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runner-guest", "-f", str(key)], "ssh-keygen")
    ssh = root / "root/.ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh, 0o700)
    _write(ssh / "authorized_keys", authorized, 0o600)
    _write(root / "etc/fstab", "# runner: / is /dev/vda (kernel command line); tmpfs by runner-init\n")


def _tar_packages(tar: Path) -> dict[str, str]:
    """Installed packages and versions from the dpkg status file inside a root filesystem tarball."""
    with tarfile.open(tar) as t:
        member = next((m for m in t.getmembers() if m.name.lstrip("./") == "var/lib/dpkg/status"), None)
        text = t.extractfile(member).read().decode(errors="replace") if member is not None else ""  # type: ignore[union-attr]
    out: dict[str, str] = {}
    for para in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and not line.startswith(" "))
        if "Package" in fields and "Version" in fields and fields.get("Status", "").endswith(" installed"):
            out[fields["Package"]] = fields["Version"]
    return out


def _build_into(final: Path, make: Callable[[Path], None]) -> None:
    """Run `make(staging)` in a fresh staging directory beside `final`, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        make(staging)
        os.chmod(staging, 0o755)
        try:
            os.replace(staging, final)
        except OSError:  # another builder won the race with the same content
            if not final.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _step(argv: Sequence[str], staging: Path, what: str, final: Path) -> None:
    """One build step; on failure its log is kept under `final`.failed-logs and named in the error."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode:
        logs = final.parent / f"{final.name}.failed.log"
        logs.write_text(f"$ {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise ImageBuildError(f"guest image build: {what} failed: {last} (log: {logs})")


def _run_ok(argv: Sequence[str], what: str) -> None:
    run_checked(argv, timeout=600, what=f"guest image build: {what}", error=ImageBuildError)


def _need(tool: str, package: str) -> None:
    if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None:
        raise ImageBuildError(f"guest image build needs {tool}; install {package}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
