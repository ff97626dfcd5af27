"""Containers: the only module that runs docker/podman.

Docker is used when its engine answers; otherwise podman with runc and a containers.conf that sets
`default_ulimits = []` (pointed to by CONTAINERS_CONF): on Debian 12's podman 4.3, crun fails on rlimits
and on a hybrid cgroup v1 layout. Every function takes the Host the engine runs on (this machine or a lab
host over SSH); `container_cli(host)` returns the whole command prefix there as an argv (`env
CONTAINERS_CONF=... podman --runtime /usr/sbin/runc`).

Images are imported from a root filesystem archived on the controller and copied to the host (`podman
import FILE NAME`), never pulled. A trial's containers start detached with `--network none` and a sleeping
init (`start`), workloads run in them with `exec` (runner.hosts.container.ContainerHost), `oom_kills` reads
how many of their processes the memory cgroup's OOM killer ended, and `remove` ends them; their names come from `guest.describe_guest` (env "container") and carry the campaign, so
`list_campaign` finds exactly what a campaign started.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from runner.errors import ProvisionError
from runner.hosts.base import Host
from runner.provision.guestspec import belongs_to, campaign_slug
from runner.provision.topology import format_cpulist

CONF_PATH = "/var/lib/runner/containers.conf"  # on the host
CONF_TEXT = "# written by runner.provision.container, see docs/guests.md\n[containers]\ndefault_ulimits = []\n"
RUNC = "/usr/sbin/runc"
IMAGE_REPO = "rnr-campaign"  # images are IMAGE_REPO:<content digest>-<campaign slug>


_clis: dict[str, tuple[str, ...]] = {}
_clis_lock = threading.Lock()

# Prints the engine to use on a host: docker (its engine answers), podman (runc present; the
# containers.conf written), or why neither can run.
_PROBE = (
    'if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; exit 0; fi; '
    'command -v podman >/dev/null 2>&1 || { echo "neither a running docker engine nor podman found; install podman and runc"; exit 0; }; '
    '[ -x "$1" ] || { echo "podman needs runc at $1 on this host; install runc"; exit 0; }; '
    'mkdir -p "$(dirname "$2")" && { [ "$(cat "$2" 2>/dev/null)" = "$3" ] || printf "%s\\n" "$3" > "$2"; } && echo podman'
)


def container_cli(host: Host, conf_path: str = CONF_PATH) -> tuple[str, ...]:
    """The command prefix that runs the container engine on the host (docker if it runs, else podman+runc).
    Probed once per host name and process."""
    with _clis_lock:
        if host.name in _clis:
            return _clis[host.name]
    res = host.run(["sh", "-c", _PROBE, "sh", RUNC, conf_path, CONF_TEXT.rstrip("\n")], timeout=60)
    answer = res.stdout.strip()
    if answer == "docker":
        cli: tuple[str, ...] = ("docker",)
    elif answer == "podman":
        cli = ("env", f"CONTAINERS_CONF={conf_path}", "podman", "--runtime", RUNC)
    else:
        raise ProvisionError(f"{host.name}: {answer or res.tail()}")
    with _clis_lock:
        _clis[host.name] = cli
    return cli


def _cli(host: Host, *args: str, timeout: float = 120) -> str:
    argv = [*container_cli(host), *args]
    res = host.run(argv, timeout=timeout)
    if res.timed_out:
        raise ProvisionError(f"{host.name}: container engine: {args[0]} did not finish within {timeout:.0f} s")
    if res.rc:
        msg = " ".join(res.stderr.split()) or f"exit status {res.rc}"
        raise ProvisionError(f"{host.name}: container engine: {args[0]} failed: {msg}")
    return res.stdout


def minimal_rootfs(dest: Path, files: Mapping[str, Path]) -> None:
    """A root filesystem with busybox-static (and its applet links) plus `files` (guest path -> host file)."""
    busybox = shutil.which("busybox", path="/usr/bin:/bin")
    if not busybox:
        raise ProvisionError("busybox is not installed; install busybox-static")
    for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin/busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if not (dest / "bin" / applet).exists():
            (dest / "bin" / applet).symlink_to("busybox")
    _copy_files(dest, files)


def _copy_files(dest: Path, files: Mapping[str, Path]) -> None:
    for guest_path, host_path in files.items():
        if not Path(host_path).is_file():
            raise ProvisionError(f"file {host_path} for container path {guest_path} does not exist")
        target = dest / guest_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host_path, target)


def build_image(host: Host, name: str, *, rootfs: Path | None = None, archive: Path | None = None,
                files: Mapping[str, Path] | None = None) -> str:
    """Import an image `name` (e.g. "rnr-<campaign>:<tag>") on the host from `rootfs` (a local directory),
    from `archive` (a root filesystem tarball, e.g. a Debian guest image's) with `files` added, or from a
    `minimal_rootfs` of `files`. Returns the image name."""
    with tempfile.TemporaryDirectory(prefix="rnr-rootfs-") as tmp:
        if rootfs is not None and (files or archive is not None):
            raise ProvisionError("build_image takes a rootfs directory alone")
        if archive is not None:
            base, archive = archive, Path(tmp) / "rootfs.tar"
            shutil.copyfile(base, archive)
            if files:
                _append_files(archive, files)
        else:
            if rootfs is None:
                rootfs = Path(tmp) / "rootfs"
                minimal_rootfs(rootfs, files or {})
            archive = Path(tmp) / "rootfs.tar"
            _tar(["-C", str(rootfs), "-cf", str(archive), "."], rootfs)
        remote = f"/var/tmp/runner/{archive.name}.{os.getpid()}.{name.replace(':', '-').replace('/', '-')}"
        host.put(archive, remote)
        try:
            _cli(host, "import", remote, name, timeout=import_timeout(archive.stat().st_size))
        finally:
            host.run(["rm", "-f", remote], timeout=30)
    return name


IMPORT_S_PER_MIB = 1.0  # the debian image's rootfs took over 120 s to import on the nested KVM host VM


def import_timeout(size: int) -> float:
    """Seconds an engine may take to import a root filesystem archive of `size` bytes: 120, or a second per MiB
    for a bigger one (pure)."""
    return max(120.0, IMPORT_S_PER_MIB * size / 2**20)


def _append_files(archive: Path, files: Mapping[str, Path]) -> None:
    """Add `files` (and their missing parent directories) to a root filesystem tarball, owned by root. A
    path the tarball already has is replaced by leaving it out of the base: container engines refuse an
    archive that names one path twice."""
    listed = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=False)
    if listed.returncode:
        raise ProvisionError(f"cannot read container rootfs {archive}: {listed.stderr.strip()}")
    have = {n.removeprefix("./").rstrip("/") for n in listed.stdout.splitlines()}
    clash = sorted(p.lstrip("/") for p in files if p.lstrip("/") in have)
    if clash:
        _tar(["--delete", "-f", str(archive), *(f"./{c}" for c in clash)], archive)
        have -= set(clash)
    with tarfile.open(archive, "a") as tar:
        for guest_path, host_path in sorted(files.items()):
            if not Path(host_path).is_file():
                raise ProvisionError(f"file {host_path} for container path {guest_path} does not exist")
            parts = guest_path.strip("/").split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in have:
                    info = tarfile.TarInfo(f"./{parent}")
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    have.add(parent)
            info = tar.gettarinfo(str(host_path), arcname=f"./{'/'.join(parts)}")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(host_path, "rb") as f:
                tar.addfile(info, f)


def _tar(args: Sequence[str], what: Path) -> None:
    tar = subprocess.run(["tar", *args], capture_output=True, check=False)
    if tar.returncode:
        raise ProvisionError(f"cannot archive container rootfs {what}: {tar.stderr.decode().strip()}")


def start_argv(
    cli: Sequence[str],
    image: str,
    *,
    name: str,
    cpuset: Iterable[int] = (),
    memory_mib: int | None = None,
) -> list[str]:
    """The argv that starts container `name` of `image` in the background, kept running (its init sleeps)
    for `ContainerHost` to exec workloads in, with no network, limited to host CPUs `cpuset` (empty: all)
    and `memory_mib` MiB (None: no limit)."""
    out = [*cli, "run", "-d", "--name", name, "--network", "none"]
    cpus = format_cpulist(cpuset)
    if cpus:
        out += ["--cpuset-cpus", cpus]
    if memory_mib:
        out += ["--memory", f"{memory_mib}m"]
    # /dev/shm is where a kernel build's tree goes (gmake's tmpdir): as large as the container's memory and,
    # unlike the engines' default, executable (the build runs scripts from the tree).
    out += ["--tmpfs", "/dev/shm:rw,exec,nosuid,nodev" + (f",size={memory_mib}m" if memory_mib else "")]
    return [*out, image, "sleep", "2147483647"]


def start(host: Host, image: str, *, name: str, cpuset: Iterable[int] = (), memory_mib: int | None = None) -> None:
    """Start container `name` on the host (see start_argv)."""
    argv = start_argv(container_cli(host), image, name=name, cpuset=cpuset, memory_mib=memory_mib)
    _cli(host, *argv[len(container_cli(host)):])


def remove(host: Host, name: str) -> None:
    """Remove container `name` on the host, running or not (no-op if it does not exist)."""
    if name in list_containers(host):
        _cli(host, *remove_argv(container_cli(host), name)[len(container_cli(host)):])


def remove_argv(cli: Sequence[str], name: str) -> list[str]:
    """The argv that removes container `name` at once, running or not."""
    # docker rm -f kills at once; podman waits 10 s for SIGTERM unless told otherwise.
    wait = [] if tuple(cli) == ("docker",) else ["-t", "0"]
    return [*cli, "rm", "-f", *wait, name]


def image_name(campaign: str, digest: str) -> str:
    """The name of a campaign's image with content `digest` (hex): the campaign is in the tag, which,
    unlike a repository name, may hold upper case."""
    return f"{IMAGE_REPO}:{digest[:12]}-{campaign_slug(campaign)}"


def image_exists(host: Host, name: str) -> bool:
    return host.run([*container_cli(host), "image", "inspect", name], timeout=60).ok


def remove_image(host: Host, name: str) -> None:
    """Remove image `name` on the host (no-op if it does not exist)."""
    if image_exists(host, name):
        _cli(host, "rmi", "-f", name)


def list_campaign_images(host: Host, campaign: str) -> list[str]:
    """Names of the images `image_name` made for `campaign` (and no other campaign)."""
    tag = re.compile(rf"[0-9a-f]{{12}}-{re.escape(campaign_slug(campaign))}")
    out = []
    for ref in _cli(host, "images", "--format", "{{.Repository}}:{{.Tag}}").split():
        repo, _, t = ref.rpartition(":")
        if repo.rsplit("/", 1)[-1] == IMAGE_REPO and tag.fullmatch(t):
            out.append(f"{IMAGE_REPO}:{t}")
    return sorted(set(out))


# Prints "<name>\t<oom_kill count>" for each running container named in "$@": the counter of the memory cgroup
# its init is in, read on the host (cgroup v1 memory.oom_control, or v2 memory.events; both say `oom_kill N`),
# in one round trip for all of them. A container that is gone or a counter that cannot be read is left out.
_OOM_KILLS = r"""
m1=$(awk '$3 == "cgroup" && ("," $4 ",") ~ /,memory,/ { print $2; exit }' /proc/mounts)
m2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
for n in "$@"; do
  p=$(CLI inspect --format '{{.State.Pid}}' "$n" 2>/dev/null)
  case "$p" in ''|0|*[!0-9]*) continue ;; esac
  v1=; v2=; f=
  while IFS= read -r l; do
    r=${l#*:}; c=${r%%:*}; path=${r#*:}
    case ",$c," in *,memory,*) v1=$path ;; ,,) v2=$path ;; esac
  done < "/proc/$p/cgroup"
  if [ -n "$m1" ] && [ -n "$v1" ]; then f=$m1$v1/memory.oom_control
  elif [ -n "$m2" ] && [ -n "$v2" ]; then f=${m2%/}$v2/memory.events; fi
  k=$(awk '$1 == "oom_kill" { print $2 }' "$f" 2>/dev/null)
  [ -n "$k" ] && printf '%s\t%s\n' "$n" "$k"
done 2>/dev/null
exit 0
"""


def parse_oom_kills(text: str) -> dict[str, int]:
    """Lines "<container>\t<count>" -> container -> count (other lines are left out)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, count = line.partition("\t")
        if name and count.strip().isdigit():
            out[name] = int(count)
    return out


def oom_kills(host: Host, names: Sequence[str]) -> dict[str, int]:
    """How many processes the OOM killer has ended in each running container's memory cgroup (its `oom_kill`
    counter, which only rises), read on the host before the container and its cgroup are removed. A container
    whose counter cannot be read is left out: the caller then knows nothing about it."""
    if not names:
        return {}
    script = _OOM_KILLS.replace("CLI", shlex.join(container_cli(host)))
    return parse_oom_kills(host.run(["sh", "-c", script, "sh", *names], timeout=30).stdout)


def list_containers(host: Host) -> list[str]:
    return _cli(host, "ps", "-a", "--format", "{{.Names}}").split()


def list_campaign(host: Host, campaign: str) -> list[str]:
    """Names of the containers (running or stopped) on the host that `campaign` created."""
    return sorted(n for n in list_containers(host) if belongs_to(n, campaign))
