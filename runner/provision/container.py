"""Containers: the only module that runs docker/podman.

Docker is used when its engine answers; otherwise podman with runc and a containers.conf that sets
`default_ulimits = []` (pointed to by CONTAINERS_CONF): on Debian 12's podman 4.3, crun fails on rlimits
and on a hybrid cgroup v1 layout. `container_cli()` returns the whole command prefix as an argv
(`env CONTAINERS_CONF=... podman --runtime /usr/sbin/runc`), so the same argv works through any Host.

Images are imported from a local root filesystem (`tar -C rootfs -c . | podman import - NAME`), never
pulled. Containers run with `--network none` and `--rm`; their names come from `guest.describe_guest`
(env "container") and carry the campaign, so `list_campaign` finds exactly what a campaign started.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

from runner.errors import ProvisionError
from runner.provision.guest import belongs_to, campaign_slug
from runner.provision.topology import format_cpulist

CONF_PATH = Path("/var/lib/runner/containers.conf")
CONF_TEXT = "# written by runner.provision.container, see docs/guests.md\n[containers]\ndefault_ulimits = []\n"
RUNC = "/usr/sbin/runc"
IMAGE_REPO = "rnr-campaign"  # images are IMAGE_REPO:<content digest>-<campaign slug>


@cache
def container_cli(conf_path: Path = CONF_PATH) -> tuple[str, ...]:
    """The command prefix that runs the container engine here (docker if it runs, else podman+runc)."""
    if shutil.which("docker") and _ok(["docker", "info"]):
        return ("docker",)
    if not shutil.which("podman"):
        raise ProvisionError("neither a running docker engine nor podman found; install podman and runc")
    if not Path(RUNC).exists():
        raise ProvisionError(f"podman needs runc at {RUNC} on this host; install runc")
    if not conf_path.exists() or conf_path.read_text() != CONF_TEXT:
        conf_path.parent.mkdir(parents=True, exist_ok=True)
        conf_path.write_text(CONF_TEXT)
    return ("env", f"CONTAINERS_CONF={conf_path}", "podman", "--runtime", RUNC)


def _ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=15, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _cli(*args: str, stdin: bytes | None = None, timeout: float = 120) -> str:
    argv = [*container_cli(), *args]
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"container engine: {args[0]} did not finish within {timeout:.0f} s") from None
    if proc.returncode:
        msg = " ".join(proc.stderr.decode(errors="replace").split()) or f"exit status {proc.returncode}"
        raise ProvisionError(f"container engine: {args[0]} failed: {msg}")
    return proc.stdout.decode(errors="replace")


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
    for guest_path, host_path in files.items():
        if not Path(host_path).is_file():
            raise ProvisionError(f"file {host_path} for container path {guest_path} does not exist")
        target = dest / guest_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host_path, target)


def build_image(name: str, *, rootfs: Path | None = None, files: Mapping[str, Path] | None = None) -> str:
    """Import an image `name` (e.g. "rnr-<campaign>:<tag>") from `rootfs`, or from a `minimal_rootfs` of
    `files` when rootfs is None. Returns the image name."""
    with tempfile.TemporaryDirectory(prefix="rnr-rootfs-") as tmp:
        if rootfs is None:
            rootfs = Path(tmp) / "rootfs"
            minimal_rootfs(rootfs, files or {})
        elif files:
            raise ProvisionError("build_image takes a rootfs or files, not both")
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=False)
        if tar.returncode:
            raise ProvisionError(f"cannot archive container rootfs {rootfs}: {tar.stderr.decode().strip()}")
        _cli("import", "-", name, stdin=tar.stdout)
    return name


def run_argv(
    image: str,
    argv: Sequence[str],
    *,
    name: str,
    cpuset: Iterable[int] = (),
    memory_mib: int | None = None,
    workdir: str | None = None,
) -> list[str]:
    """The argv that runs `argv` in a fresh container `name` of `image` (removed when it exits), with no
    network, limited to host CPUs `cpuset` (empty: all) and `memory_mib` MiB (None: no limit), in the
    container directory `workdir` (None: the image's default)."""
    out = [*container_cli(), "run", "--rm", "--name", name, "--network", "none"]
    if workdir:
        out += ["--workdir", workdir]
    cpus = format_cpulist(cpuset)
    if cpus:
        out += ["--cpuset-cpus", cpus]
    if memory_mib:
        out += ["--memory", f"{memory_mib}m"]
    return [*out, image, *argv]


def remove(name: str) -> None:
    """Remove container `name`, running or not (no-op if it does not exist)."""
    if name in list_containers():
        _cli(*remove_argv(name)[len(container_cli()):])


def remove_argv(name: str) -> list[str]:
    """The argv that removes container `name` at once, running or not."""
    # docker rm -f kills at once; podman waits 10 s for SIGTERM unless told otherwise.
    wait = [] if container_cli() == ("docker",) else ["-t", "0"]
    return [*container_cli(), "rm", "-f", *wait, name]


def image_name(campaign: str, digest: str) -> str:
    """The name of a campaign's image with content `digest` (hex): the campaign is in the tag, which,
    unlike a repository name, may hold upper case."""
    return f"{IMAGE_REPO}:{digest[:12]}-{campaign_slug(campaign)}"


def image_exists(name: str) -> bool:
    return _ok([*container_cli(), "image", "inspect", name])


def remove_image(name: str) -> None:
    """Remove image `name` (no-op if it does not exist)."""
    if image_exists(name):
        _cli("rmi", "-f", name)


def list_campaign_images(campaign: str) -> list[str]:
    """Names of the images `image_name` made for `campaign` (and no other campaign)."""
    tag = re.compile(rf"[0-9a-f]{{12}}-{re.escape(campaign_slug(campaign))}")
    out = []
    for ref in _cli("images", "--format", "{{.Repository}}:{{.Tag}}").split():
        repo, _, t = ref.rpartition(":")
        if repo.rsplit("/", 1)[-1] == IMAGE_REPO and tag.fullmatch(t):
            out.append(f"{IMAGE_REPO}:{t}")
    return sorted(set(out))


def list_containers() -> list[str]:
    return _cli("ps", "-a", "--format", "{{.Names}}").split()


def list_campaign(campaign: str) -> list[str]:
    """Names of the containers (running or stopped) that `campaign` created."""
    return sorted(n for n in list_containers() if belongs_to(n, campaign))
