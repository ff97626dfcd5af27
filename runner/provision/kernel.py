"""Guest kernel recipes: the pure part (issue 22).

A `guest_kernels:` entry of a matrix is either a path (a kernel someone built) or a recipe:

    pv:   {build: {source: linux-source, config: defconfig, fragments: [kvm_guest.config, xen.config]}}
    nopv: {build: {source: linux-source, config: tinyconfig, set: {PARAVIRT_SPINLOCKS: n}}, cmdline: "..."}

This module turns such an entry into a validated `Recipe` (frozen), says which symbols the runner adds so
that the kernel boots as every guest type without modules (`additions`), which symbols the build must check
in the final .config (`wanted`), and names builds by content (`recipe_digest`, `build_digest`). It reads no
files except in `check_files` (plan-time existence checks); runner.provision.kernelbuild does the build.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import MatrixError

# Bump when the build procedure or the additions change: the recipe digest changes, so kernels are rebuilt.
RECIPE_VERSION = 1
LINUX_SOURCE = "linux-source"  # Debian's linux-source package, as the gmake workload uses it
LINUX_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
BUILD_KEYS = ("source", "ref", "patches", "config", "fragments", "set", "build_host")
ENTRY_KEYS = ("build", "cmdline")
SYMBOL = re.compile(r"^[A-Z0-9_]+$")
TARBALL = re.compile(r"\.(tar|tar\.gz|tgz|tar\.xz|txz|tar\.bz2|tbz2|tar\.zst)$")

# What the runner's guests need built in (=y): the initramfs of runner.provision.image (busybox, dropbear)
# and the debian disk image, with no module to load before the root disk and the network are reached.
BASE_SYMBOLS = (
    "64BIT", "SMP", "PRINTK", "TTY", "SERIAL_8250", "SERIAL_8250_CONSOLE", "BLK_DEV_INITRD", "RD_GZIP",
    "BINFMT_ELF", "BINFMT_SCRIPT", "DEVTMPFS", "PROC_FS", "SYSFS", "TMPFS", "UNIX98_PTYS", "MULTIUSER",
    "FUTEX", "EPOLL", "SHMEM", "POSIX_TIMERS", "NET", "UNIX", "INET", "PACKET", "NETDEVICES", "PCI",
    "BLOCK", "BLK_DEV", "EXT4_FS", "ACPI", "HYPERVISOR_GUEST", "PARAVIRT",
)
GUEST_SYMBOLS: dict[str, tuple[str, ...]] = {
    "kvm": ("KVM_GUEST", "PARAVIRT_SPINLOCKS", "VIRTIO_MENU", "VIRTIO", "VIRTIO_PCI", "VIRTIO_NET", "VIRTIO_BLK",
            "VIRTIO_CONSOLE", "NET_CORE"),
    "xen": ("XEN", "XEN_PV", "XEN_PVH", "XEN_PVHVM_GUEST", "XEN_BLKDEV_FRONTEND", "XEN_NETDEV_FRONTEND", "HVC_XEN", "HVC_XEN_FRONTEND",
            "PARAVIRT_SPINLOCKS", "NET_CORE"),
}
# An addition is left out when the recipe turns off what it depends on ("as the recipe allows").
DEPENDS: dict[str, tuple[str, ...]] = {
    "KVM_GUEST": ("PARAVIRT", "HYPERVISOR_GUEST"),
    "PARAVIRT_SPINLOCKS": ("PARAVIRT", "SMP"),
    "XEN": ("PARAVIRT", "HYPERVISOR_GUEST", "PCI"),
    "XEN_PV": ("XEN",), "XEN_PVH": ("XEN", "ACPI"), "XEN_PVHVM_GUEST": ("XEN", "PCI"), "ACPI": ("PCI",), "XEN_BLKDEV_FRONTEND": ("XEN",), "XEN_NETDEV_FRONTEND": ("XEN", "NET"),
    "HVC_XEN": ("XEN",), "HVC_XEN_FRONTEND": ("HVC_XEN", "XEN"),
    "VIRTIO_PCI": ("PCI", "VIRTIO_MENU"), "VIRTIO_NET": ("NET", "VIRTIO"), "VIRTIO_BLK": ("VIRTIO", "BLK_DEV"), "BLK_DEV": ("BLOCK",), "EXT4_FS": ("BLOCK",),
    "PARAVIRT": ("HYPERVISOR_GUEST",), "HYPERVISOR_GUEST": (),
}


@dataclass(frozen=True)
class Recipe:
    """A guest kernel to build. Paths are absolute (relative ones are taken from the matrix file's folder)."""

    name: str
    source: str  # LINUX_SOURCE, a tarball or a source tree
    ref: str | None = None  # a git tree's commit, tag or branch
    patches: tuple[str, ...] = ()
    config: str = "defconfig"  # a make target, or a .config file (absolute path)
    fragments: tuple[str, ...] = ()  # the tree's own (kvm_guest.config) or files (absolute paths)
    set: tuple[tuple[str, str], ...] = ()  # symbol (no CONFIG_) -> value as a .config writes it
    cmdline: str = ""
    build_host: str | None = None

    @property
    def source_kind(self) -> str:
        """linux-source, tarball, or tree."""
        if self.source == LINUX_SOURCE:
            return "linux-source"
        return "tarball" if TARBALL.search(self.source) else "tree"

    @property
    def source_path(self) -> Path:
        return LINUX_SOURCE_TARBALL if self.source == LINUX_SOURCE else Path(self.source)

    @property
    def config_is_file(self) -> bool:
        return self.config.startswith("/")

    def to_json(self) -> dict[str, Any]:
        """The recipe as plain data (kernel.json, plan output)."""
        return {"name": self.name, "source": self.source, "ref": self.ref, "patches": list(self.patches),
                "config": self.config, "fragments": list(self.fragments), "set": dict(self.set),
                "cmdline": self.cmdline, "build_host": self.build_host}


def is_recipe(entry: Mapping[str, Any] | None) -> bool:
    """True for a `guest_kernels` entry (or a trial's guest_kernel_spec) that is built from source."""
    return isinstance(entry, Mapping) and "build" in entry


def config_value(value: Any) -> str | None:
    """A `set:` value as a .config line writes it: y/n/m, a number, a quoted string; None if not one of those."""
    if value is True:  # YAML reads a bare y as a string, but `yes`/`true` as booleans
        return "y"
    if value is False:
        return "n"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if value in ("y", "n", "m"):
            return value
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", value):
            return value
        if "\n" in value or '"' in value:
            return None
        return json.dumps(value)
    return None


def parse_recipe(key: str, entry: Mapping[str, Any], base: Path, where: str) -> Recipe:
    """The `guest_kernels.<key>` entry as a Recipe; a bad one is a MatrixError naming `where` (the matrix
    file) and the key path. Relative file paths are taken from `base` (the matrix file's folder)."""
    path = f"{where}: guest_kernels.{key}"
    if not isinstance(entry, Mapping):
        raise MatrixError(f"{path}: {entry!r} is not a mapping; give {{kernel: PATH}} or {{build: {{...}}}}")
    for k in entry:
        if k not in ENTRY_KEYS:
            raise MatrixError(f"{path}.{k}: unknown key; known: {', '.join(ENTRY_KEYS)} (or kernel, for a kernel built elsewhere)")
    build = entry["build"]
    if not isinstance(build, Mapping):
        raise MatrixError(f"{path}.build: {build!r} is not a mapping; known keys: {', '.join(BUILD_KEYS)}")
    for k in build:
        if k not in BUILD_KEYS:
            raise MatrixError(f"{path}.build.{k}: unknown key; known: {', '.join(BUILD_KEYS)}")
    if "source" not in build:
        raise MatrixError(f"{path}.build.source: missing; give linux-source (Debian's package), a tarball or a source tree")

    def text(k: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise MatrixError(f"{path}.build.{k}: {value!r} is not a non-empty string")
        return value.strip()

    def absolute(p: str) -> str:
        return str(Path(p) if p.startswith("/") else (base / p).resolve())

    source = text("source", build["source"])
    source = source if source == LINUX_SOURCE else absolute(source)
    ref = text("ref", build["ref"]) if build.get("ref") is not None else None
    patches = build.get("patches") or []
    if not isinstance(patches, list):
        raise MatrixError(f"{path}.build.patches: {patches!r} is not a list of patch files")
    patches = tuple(absolute(text(f"patches[{i}]", p)) for i, p in enumerate(patches))
    config = text("config", build.get("config", "defconfig"))
    if "/" in config or config.endswith(".config") or config.startswith("."):
        config = absolute(config)
    elif not re.fullmatch(r"[a-z0-9_.-]*config", config):
        raise MatrixError(f"{path}.build.config: {config!r} is neither a make target (defconfig, tinyconfig, ...) nor a .config file")
    fragments = build.get("fragments") or []
    if not isinstance(fragments, list):
        raise MatrixError(f"{path}.build.fragments: {fragments!r} is not a list")
    frags = []
    for i, f in enumerate(fragments):
        f = text(f"fragments[{i}]", f)
        frags.append(f if re.fullmatch(r"[A-Za-z0-9_.-]+\.config", f) and not (base / f).is_file() else absolute(f))
    settings = build.get("set") or {}
    if not isinstance(settings, Mapping):
        raise MatrixError(f"{path}.build.set: {settings!r} is not a mapping of symbol: value")
    forced = []
    for sym, value in settings.items():
        s = str(sym).removeprefix("CONFIG_")
        if not SYMBOL.fullmatch(s):
            raise MatrixError(f"{path}.build.set.{sym}: not a Kconfig symbol (capitals, digits and _)")
        v = config_value(value)
        if v is None:
            raise MatrixError(f"{path}.build.set.{sym}: {value!r} is not y, n, m, a number or a one-line string")
        forced.append((s, v))
    cmdline = entry.get("cmdline", "")
    if not isinstance(cmdline, str):
        raise MatrixError(f"{path}.cmdline: {cmdline!r} is not a string")
    host = text("build_host", build["build_host"]) if build.get("build_host") is not None else None
    if ref is not None and source == LINUX_SOURCE or ref is not None and TARBALL.search(source):
        raise MatrixError(f"{path}.build.ref: a ref names a commit of a git tree; {source!r} is not a tree")
    return Recipe(key, source, ref, patches, config, tuple(frags), tuple(sorted(forced)), cmdline, host)


def check_files(recipe: Recipe, where: str) -> None:
    """Plan-time: the source, patches, config file and fragment files exist on this machine (a build_host
    gets copies). MatrixError if not."""
    path = f"{where}: guest_kernels.{recipe.name}.build"
    src = recipe.source_path  # on this machine also with a build_host: its digest names the build; copied there
    if recipe.source_kind == "tree" and not src.is_dir():
        raise MatrixError(f"{path}.source: {recipe.source} is not a source tree (no such folder)")
    if recipe.source_kind != "tree" and not src.is_file():
        hint = " (install Debian's linux-source-6.1)" if recipe.source == LINUX_SOURCE else ""
        raise MatrixError(f"{path}.source: {src} does not exist{hint}")
    for i, p in enumerate(recipe.patches):
        if not Path(p).is_file():
            raise MatrixError(f"{path}.patches[{i}]: {p} does not exist")
    if recipe.config_is_file and not Path(recipe.config).is_file():
        raise MatrixError(f"{path}.config: {recipe.config} does not exist")
    for i, f in enumerate(recipe.fragments):
        if f.startswith("/") and not Path(f).is_file():
            raise MatrixError(f"{path}.fragments[{i}]: {f} does not exist")


def additions(recipe: Recipe) -> dict[str, str]:
    """Symbols the runner sets to y so the kernel boots as every guest type with the runner's images and
    no modules: what the recipe's `set:` does not decide itself and does not rule out (an addition whose
    dependency the recipe sets to n is left out)."""
    own = dict(recipe.set)
    off = {s for s, v in own.items() if v == "n"}

    def allowed(sym: str, seen: frozenset[str] = frozenset()) -> bool:
        if sym in off:
            return False
        return all(dep not in seen and allowed(dep, seen | {sym}) for dep in DEPENDS.get(sym, ()))

    out: dict[str, str] = {}
    for sym in (*BASE_SYMBOLS, *GUEST_SYMBOLS["kvm"], *GUEST_SYMBOLS["xen"]):
        if sym not in own and allowed(sym):
            out[sym] = "y"
    return out


def wanted(recipe: Recipe, fragment_texts: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Every symbol the final .config must have as asked: symbol -> (value, who asked). Later wins: the
    fragments in order, the runner's additions, then `set:`."""
    out: dict[str, tuple[str, str]] = {}
    for name, text in fragment_texts.items():
        for sym, value in parse_config(text).items():
            out[sym] = (value, f"fragment {name}" if name.startswith("/") else f"{TREE_FRAGMENT} {name}")
    for sym, value in additions(recipe).items():
        out[sym] = (value, "added by the runner")
    for sym, value in recipe.set:
        out[sym] = (value, "set")
    return out


def fragment_text(recipe: Recipe) -> str:
    """The runner's own fragment, merged last: the additions, then `set:` (a .config's n is a comment)."""
    lines = ["# runner: guest types kvm, xen-pv, xen-pvh, xen-hvm (built in, no modules)"]
    lines += [config_line(s, v) for s, v in additions(recipe).items()]
    lines += ["# runner: the recipe's set:"] + [config_line(s, v) for s, v in recipe.set]
    return "\n".join(lines) + "\n"


def config_line(sym: str, value: str) -> str:
    return f"# CONFIG_{sym} is not set" if value == "n" else f"CONFIG_{sym}={value}"


def parse_config(text: str) -> dict[str, str]:
    """A .config (or fragment) -> symbol (no CONFIG_) -> value; `# CONFIG_X is not set` is n."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"# CONFIG_([A-Za-z0-9_]+) is not set", line):
            out[m[1]] = "n"
        elif m := re.fullmatch(r"CONFIG_([A-Za-z0-9_]+)=(.*)", line):
            out[m[1]] = m[2]
    return out


TREE_FRAGMENT = "the tree's fragment"


def split_mismatches(lines: list[str]) -> tuple[list[str], list[str]]:
    """(errors, notes): a symbol of the tree's own fragments that this kernel does not take is a note (those
    fragments serve every architecture: kvm_guest.config asks for S390_GUEST, xen.config for HIGHMEM64G);
    anything the recipe asked for itself (set:, its fragment files) or the runner added is an error."""
    notes = [line for line in lines if f"({TREE_FRAGMENT} " in line]
    return [line for line in lines if line not in notes], notes


def config_mismatches(asked: Mapping[str, tuple[str, str]], final: Mapping[str, str]) -> list[str]:
    """One line per symbol the final .config does not have as asked (Kconfig dropped or changed it): the
    symbol, what was asked (and by whom) and what it became. A symbol absent from the .config is n
    (unset, or unknown to this kernel version)."""
    out = []
    for sym, (value, who) in asked.items():
        got = final.get(sym, "n")
        if got != value:
            became = f"is {got}" if sym in final else ("is not set (an unmet dependency, or a symbol this kernel does not have)")
            out.append(f"CONFIG_{sym}: asked {value} ({who}), {became}")
    return out


def recipe_digest(recipe: Recipe, source_digest: str, file_digests: Mapping[str, str]) -> str:
    """The inputs of a build by content: the source's digest, every patch, config and fragment file by its
    digest (file_digests: path -> sha256), make targets and tree fragments by name, `set:` and the
    additions. The cache keeps recipe digest -> build digest, so a warm cache builds nothing."""
    doc = {
        "version": RECIPE_VERSION, "source": source_digest, "ref": recipe.ref,
        "patches": [file_digests[p] for p in recipe.patches],
        "config": file_digests[recipe.config] if recipe.config_is_file else recipe.config,
        "fragments": [file_digests[f] if f.startswith("/") else f for f in recipe.fragments],
        "set": list(recipe.set), "additions": sorted(additions(recipe).items()),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def build_digest(source_digest: str, patch_digests: list[str], final_config: str) -> str:
    """What names a build: the source, the patches in order and the final .config (after olddefconfig)."""
    h = hashlib.sha256(f"kernel {RECIPE_VERSION}\nsource {source_digest}\n".encode())
    for d in patch_digests:
        h.update(f"patch {d}\n".encode())
    h.update(hashlib.sha256(final_config.encode()).digest())
    return h.hexdigest()[:16]


def config_digest(final_config: str) -> str:
    return hashlib.sha256(final_config.encode()).hexdigest()[:16]


# Minutes of a build on one core, rough, by config target (a file or an unknown target counts as defconfig);
# tinyconfig with the runner's additions: 1407 files, 897 s of make -j2 on a loaded 2-core machine (docs/kernels.md).
MINUTES_ONE_CORE = {"tinyconfig": 24.0, "allnoconfig": 24.0, "kvm_guest.config": 40.0, "defconfig": 70.0}


def estimate_minutes(recipe: Recipe, cores: int) -> float:
    """A rough estimate of a cold build's minutes on `cores` cores (unpacking the source included)."""
    one = MINUTES_ONE_CORE.get(recipe.config, MINUTES_ONE_CORE["defconfig"])
    return round(2.0 + one / max(1, cores), 1)
