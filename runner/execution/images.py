"""Guest images, built once on this machine and copied once to each hypervisor host.

A kernel + initramfs image (guest_image minimal: the campaign's SSH key and the workload's `guest_files`),
a disk image (guest_image debian, a lab's recipe or file) with its kernel, or a container image; each is
built once, cached by content in CONTROLLER_CACHE, and copied by digest into IMAGE_CACHE on a remote host
(nothing is copied when the host already has it). `Shop` hands them to the environments
(runner.provision.environments.Images).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from runner import defaults
from runner.errors import HostError, ProvisionError
from runner.hosts.base import Host
from runner.provision import container, environments, image, kernelbuild, rootfs
from runner.provision.environments import Environment
from runner.provision.topology import TOPOLOGY_SCRIPT, Topology, parse_topology_dump
from runner.workloads.base import Workload

IMAGE_CACHE = "/var/cache/runner/images"  # on a remote hypervisor host: <digest>/{vmlinuz,initrd.img,disk.qcow2}
# This machine's guest builds (images, the guest key, workload payloads), per user and content-addressed,
# so campaigns share them: env RUNNER_CACHE, default ~/.cache/runner.
CONTROLLER_CACHE = Path(os.environ.get("RUNNER_CACHE", "~/.cache/runner")).expanduser()


def image_choice(params: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    """The trial's guest image: its catalog name (default minimal) and the matrix's entry for it (None:
    built in)."""
    return str(params.get("guest_image", "minimal")), params.get("guest_image_spec")


def guest_catalog(img: image.GuestImage, env: str, params: Mapping[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """The guest kernel catalog: `default` = the image's kernel (this machine's), `nopvspin` = the same
    kernel with `nopvspin` (no paravirtual spinlocks) on its command line, and the trial's kernel from the
    matrix's `guest_kernels` (its image is `img` then), with its extra command line."""
    base = image.DEFAULT_CMDLINE.replace("console=ttyS0", environments.get(env).console)
    catalog = {"default": img.catalog_entry(base), "nopvspin": img.catalog_entry(f"{base} nopvspin")}
    spec = (params or {}).get("guest_kernel_spec")
    if spec:
        catalog[str(params["guest_kernel"])] = img.catalog_entry(f"{base} {spec.get('cmdline', '')}".strip())
    return catalog


# ------------------------------------------------------------------------------ images, on any host


_memo: dict[tuple[Any, ...], Any] = {}
_memo_lock = threading.Lock()


def _memoized(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    with _memo_lock:
        if key not in _memo:
            _memo[key] = make()
        return _memo[key]


def _cache_dir() -> Path:
    """Where this process builds guest images, keys and payloads (CONTROLLER_CACHE)."""
    return CONTROLLER_CACHE


def _guest_files(plugin: Workload, cache: Path) -> dict[str, Path]:
    return _memoized(("files", plugin.name, str(cache)), lambda: {k: Path(v) for k, v in plugin.guest_files(cache / "payload").items()})


def _guest_image(cache: Path, files: Mapping[str, Path], env: str, params: Mapping[str, Any] | None = None) -> image.GuestImage:
    """The guest image (kernel + initramfs) for the trial: the host's kernel, or the matrix's guest_kernels entry."""
    nets = environments.get(env).net_modules
    key = image.campaign_keypair(cache / "keys")
    kernel = kernelbuild.kernel_of(params or {}, cache)  # a path entry's kernel, a recipe's build, or None
    if kernel is not None and not kernel.is_file():
        raise ProvisionError(f"guest kernel {params['guest_kernel']!r}: {kernel} does not exist on this machine")
    return _memoized(("image", str(cache), tuple(sorted(files.items())), nets, str(kernel)),
                     lambda: image.build_image(cache / "images", key_path=key, extra_files=files, net_modules=nets, kernel=kernel))


def _ship(host: Host, digest: str, files: Mapping[str, Path], what: str) -> dict[str, Path]:
    """Copy `files` (name -> local file) once into IMAGE_CACHE/<digest>/ on a remote host (kept there: a
    later campaign with the same image copies nothing); their paths there, by name."""
    where = f"{IMAGE_CACHE}/{digest}"
    have = host.run(["sh", "-c", " && ".join(f"test -s {shlex.quote(f'{where}/{n}')}" for n in files)], timeout=30)
    if not have.ok:
        for name, local in files.items():
            try:
                host.put(local, f"{where}/{name}")
            except HostError as exc:
                raise ProvisionError(f"{host.name}: cannot copy the {what} {digest[:12]} there: {exc}") from None
    return {n: Path(f"{where}/{n}") for n in files}


def ship_image(host: Host, img: image.GuestImage) -> image.GuestImage:
    """The image as the host sees it: a local host uses the built files; a remote host gets them once (_ship)."""
    if host.is_local:
        return img

    def ship() -> image.GuestImage:
        there = _ship(host, img.digest, {"vmlinuz": img.kernel, "initrd.img": img.initrd}, "guest image")
        return replace(img, kernel=there["vmlinuz"], initrd=there["initrd.img"])

    return _memoized(("shipped", host.name, img.digest), ship)


def _kernel_of(params: Mapping[str, Any]) -> tuple[Path, Path | None]:
    """The guest kernel of a disk-image trial and its initrd (/boot/initrd.img-<release> if there is one:
    Debian's has virtio_blk and ext4; a kernel without one must have them built in)."""
    kernel = kernelbuild.kernel_of(params, _cache_dir()) or image.newest_kernel()
    if not kernel.is_file():
        raise ProvisionError(f"guest kernel {params.get('guest_kernel')!r}: {kernel} does not exist on this machine")
    initrd = kernel.parent / kernel.name.replace("vmlinuz", "initrd.img", 1)
    return kernel, initrd if initrd.is_file() and initrd != kernel else None


def _rootfs(cache: Path, entry: Mapping[str, Any] | None, progress: rootfs.Progress | None = None) -> rootfs.RootFS:
    recipe = rootfs.Recipe.from_entry(entry)
    return _memoized(("rootfs", str(cache), recipe), lambda: rootfs.build_rootfs(cache / "images", recipe, progress))


def disk_image(cache: Path, files: Mapping[str, Path], env: str, params: Mapping[str, Any],
               progress: rootfs.Progress | None = None) -> rootfs.DiskImage:
    """The trial's disk image (guest_image debian, a lab's recipe or a lab's own file), built once."""
    _name, entry = image_choice(params)
    kernel, initrd = _kernel_of(params)
    key = image.campaign_keypair(cache / "keys")
    if entry and "file" in entry:
        return _memoized(("file", entry["file"]), lambda: rootfs.file_image(Path(entry["file"]), entry["host_key"], key, kernel, initrd))
    base = _rootfs(cache, entry, progress)
    nets = environments.get(env).net_modules
    return _memoized(("disk", str(cache), base.digest, tuple(sorted(files.items())), nets, str(kernel)),
                     lambda: rootfs.build_disk(cache / "images", base, key_path=key, kernel=kernel, initrd=initrd,
                                               extra_files=files, net_modules=nets, progress=progress))


def prepare_images(plugin: Workload, trials_params: Sequence[Mapping[str, Any]],
                   progress: rootfs.Progress | None = None) -> dict[str, dict[str, Any]]:
    """Build, on this machine and before any trial, every disk image the trials use (each once, with
    progress messages); returns what the dataset's provenance records of each: image name -> digests,
    recipe and installed package versions."""
    cache = _cache_dir()
    envs = [environments.get(str(p.get("env", defaults.ENV))) for p in trials_params]
    files = _guest_files(plugin, cache) if any(e.starts_guests for e in envs) else {}
    out: dict[str, dict[str, Any]] = {}
    for params, environment in zip(trials_params, envs, strict=True):
        env = environment.name
        name, entry = image_choice(params)
        if not environment.starts_guests or name == "minimal" or name in out and not environment.boots_kernel:
            continue
        if not environment.boots_kernel:  # a container: the recipe's root filesystem, no disk
            if entry and "file" in entry:
                raise ProvisionError(f"guest image {name!r} is a disk image file: containers need a Debian recipe image")
            base = _rootfs(cache, entry, progress)
            out[name] = {"rootfs": base.digest, "packages": dict(base.packages), **_recipe_doc(entry)}
            continue
        disk = disk_image(cache, files, env, params, progress)
        doc = out.setdefault(name, {"disks": {}, **_recipe_doc(entry)})
        doc.setdefault("disks", {})[env] = disk.digest
        if disk.rootfs is not None:
            doc |= {"rootfs": disk.rootfs.digest, "packages": dict(disk.rootfs.packages)}
    return out


def _recipe_doc(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    if entry and "file" in entry:
        return {"file": entry["file"]}
    recipe = rootfs.Recipe.from_entry(entry)
    return {"suite": recipe.suite, "mirror": recipe.mirror, "recipe_packages": list(recipe.packages)}


def ship_disk(host: Host, img: rootfs.DiskImage) -> rootfs.DiskImage:
    """The disk image as the host sees it (like ship_image: copied once by digest to a remote host)."""
    if host.is_local:
        return img

    def ship() -> rootfs.DiskImage:
        disk = f"disk{''.join(img.disk.suffixes) or '.raw'}"
        files = {disk: img.disk, "vmlinuz": img.kernel, **({"initrd.img": img.initrd} if img.initrd is not None else {})}
        there = _ship(host, img.digest, files, "guest disk image")
        return replace(img, disk=there[disk], kernel=there["vmlinuz"], initrd=there.get("initrd.img"))

    return _memoized(("shipped-disk", host.name, img.digest), ship)


def disk_catalog(img: rootfs.DiskImage, env: str, params: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The guest kernel catalog of a disk-image trial: like guest_catalog, each entry booting the disk."""
    environment = environments.get(env)
    base = f"{image.DEFAULT_CMDLINE.replace('console=ttyS0', environment.console)} {rootfs.ROOT_CMDLINE.replace('/dev/vda', environment.root_device)}"
    entry = {"kernel": str(img.kernel), "initrd": str(img.initrd or "")}
    catalog = {"default": {**entry, "cmdline": base}, "nopvspin": {**entry, "cmdline": f"{base} nopvspin"}}
    spec = params.get("guest_kernel_spec")
    if spec:
        catalog[str(params["guest_kernel"])] = {**entry, "cmdline": f"{base} {spec.get('cmdline', '')}".strip()}
    return catalog


def _container_image(host: Host, campaign: str, files: Mapping[str, Path], base: rootfs.RootFS | None = None) -> str:
    h = hashlib.sha256(b"container busybox\n" if base is None else f"container rootfs {base.digest}\n".encode())
    for guest_path, local in sorted(files.items()):
        h.update(f"{guest_path}\n".encode() + hashlib.sha256(Path(local).read_bytes()).digest())
    name = container.image_name(campaign, h.hexdigest())

    def build() -> str:
        if container.image_exists(host, name):
            return name
        if base is None:
            return container.build_image(host, name, files=files)
        return container.build_image(host, name, archive=base.tar, files=files)

    return _memoized(("container", host.name, name), build)


def host_topology(host: Host) -> Topology:
    """The host's CPU topology, read through its Host once per process."""
    def read() -> Topology:
        return parse_topology_dump(host.run(["sh", "-c", TOPOLOGY_SCRIPT], timeout=30).stdout, host.name)

    return _memoized(("topology", host.name), read)


class Shop:
    """The images of one workload's guests (runner.provision.environments.Images)."""

    def __init__(self, plugin: Workload) -> None:
        self.cache = _cache_dir()
        self.files = _guest_files(plugin, self.cache)

    def kernel_image(self, env: Environment, params: Mapping[str, Any]) -> image.GuestImage:
        return _guest_image(self.cache, self.files, env.name, params)

    def disk_image(self, env: Environment, params: Mapping[str, Any]) -> rootfs.DiskImage:
        return disk_image(self.cache, self.files, env.name, params)

    def ship_image(self, host: Host, img: image.GuestImage) -> image.GuestImage:
        return ship_image(host, img)

    def ship_disk(self, host: Host, img: rootfs.DiskImage) -> rootfs.DiskImage:
        return ship_disk(host, img)

    def guest_catalog(self, img: image.GuestImage, env: Environment, params: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        return guest_catalog(img, env.name, params)

    def disk_catalog(self, img: rootfs.DiskImage, env: Environment, params: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        return disk_catalog(img, env.name, params)

    def container_image(self, host: Host, campaign: str, params: Mapping[str, Any]) -> str:
        name, entry = image_choice(params)
        base = None if name == "minimal" else _rootfs(self.cache, entry)
        return _container_image(host, campaign, self.files, base)

    def memoized(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        return _memoized(key, make)
