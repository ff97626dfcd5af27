"""Guest kernels built from source: the build and its cache (issue 22). The recipe itself is
runner.provision.kernel (pure).

Cache, under the runner's cache (env RUNNER_CACHE, default ~/.cache/runner):

    kernels/<build digest>/      bzImage, config (the final .config), build.log, kernel.json
    kernels/recipes/<recipe digest>   the build digest this recipe produced (so a warm cache builds nothing)
    kernels/.lock-<recipe digest>     flock: two campaigns needing the same build build it once
    kernels/.staging-<recipe digest>.*  a build in progress; renamed into place when complete, so Ctrl-C or
                                 SIGKILL leaves no half-built kernel (the next build removes stale ones)

A build: unpack the source (Debian's linux-source tarball, a tarball, or a tree: `git archive` of its ref, or a
copy), apply the patches in order, make the config (a make target or a .config file), merge the fragments
and the runner's own (kernel.fragment_text) with scripts/kconfig/merge_config.sh, `make olddefconfig`, check
every asked symbol against the final .config, then `make -j<nproc> bzImage`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ProvisionError
from runner.provision import kernel as kr

Progress = Callable[[str], None]
LOG_TAIL_LINES = 25
# Where a tree's own fragments live: kernel/configs/<name>, then arch/x86/configs/<name>.
FRAGMENT_DIRS = ("kernel/configs", "arch/x86/configs")


class KernelBuildError(ProvisionError):
    """A recipe's build failed: a patch, a dropped symbol, make. The message names the recipe; `log_tail`."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message + (f"\n--- last lines of the build log ---\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


@dataclass(frozen=True)
class Built:
    """A kernel in the cache."""

    dir: Path
    digest: str  # build digest
    release: str
    config_digest: str
    recipe: str  # the recipe's name when it was built

    @property
    def bzimage(self) -> Path:
        return self.dir / "bzImage"

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def log(self) -> Path:
        return self.dir / "build.log"


def cache_root(cache: Path | None = None) -> Path:
    base = cache if cache is not None else Path(os.environ.get("RUNNER_CACHE", "~/.cache/runner")).expanduser()
    return Path(base) / "kernels"


# ------------------------------------------------------------------------------------------ digests

_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) for this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _memo[key] = h.hexdigest()
    return _memo[key]


def source_digest(recipe: kr.Recipe) -> str:
    """The source by content: a tarball's sha256; a git tree's tree id at `ref` (HEAD plus its uncommitted
    diff without one); another tree's file names, sizes and modification times."""
    src = recipe.source_path
    if recipe.source_kind != "tree":
        return f"sha256:{file_digest(src)}"
    if (src / ".git").exists():
        ref = recipe.ref or "HEAD"
        tree = _git(src, "rev-parse", f"{ref}^{{tree}}").strip()
        if recipe.ref is None:
            dirty = _git(src, "diff", "HEAD")
            if dirty:
                tree += "+" + hashlib.sha256(dirty.encode()).hexdigest()[:16]
        return f"git:{tree}"
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(src)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return f"files:{h.hexdigest()}"


def input_digests(recipe: kr.Recipe) -> dict[str, str]:
    files = [*recipe.patches, *(f for f in recipe.fragments if f.startswith("/"))]
    if recipe.config_is_file:
        files.append(recipe.config)
    return {f: file_digest(Path(f)) for f in files}


def recipe_digest(recipe: kr.Recipe) -> str:
    return kr.recipe_digest(recipe, source_digest(recipe), input_digests(recipe))


def lookup(recipe: kr.Recipe, cache: Path | None = None) -> Built | None:
    """The cached build of this recipe, or None (not built yet)."""
    root = cache_root(cache)
    index = root / "recipes" / recipe_digest(recipe)
    try:
        digest = index.read_text().strip()
        return _load(root / digest)
    except (OSError, ValueError, KeyError):
        return None


def _load(d: Path) -> Built:
    meta = json.loads((d / "kernel.json").read_text())
    return Built(d, meta["digest"], meta["release"], meta["config_digest"], meta["recipe"]["name"])


# ------------------------------------------------------------------------------------------ the build


def ensure_built(recipe: kr.Recipe, cache: Path | None = None, progress: Progress | None = None,
                 jobs: int | None = None) -> Built:
    """The recipe's kernel, built now unless the cache has it. Two processes asking at once: one builds,
    the other waits for the lock and finds it built."""
    say = progress or (lambda line: None)
    root = cache_root(cache)
    root.mkdir(parents=True, exist_ok=True)
    rd = recipe_digest(recipe)
    if (built := lookup(recipe, cache)) is not None:
        return built
    with open(root / f".lock-{rd}", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"kernel {recipe.name}: another campaign is building it; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (built := lookup(recipe, cache)) is not None:
            return built
        for stale in root.glob(f".staging-{rd}.*"):  # a killed build's leftovers (we hold its lock)
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{rd}.", dir=root))
        try:
            built = _build(recipe, rd, staging, root, say, jobs or os.cpu_count() or 1)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return built


def _build(recipe: kr.Recipe, rd: str, staging: Path, root: Path, say: Progress, jobs: int) -> Built:
    out = staging / "out"
    out.mkdir()
    log_path = out / "build.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        def phase(what: str) -> None:
            line = f"kernel {recipe.name}: {what}"
            say(line)
            log.write(f"### {line}\n")
            log.flush()

        def fail(message: str) -> KernelBuildError:
            log.flush()
            kept = root / "failed" / recipe.name
            kept.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_path, kept / "build.log")
            return KernelBuildError(f"guest kernel {recipe.name!r}: {message} (log: {kept / 'build.log'})", _tail(log_path))

        def run(argv: list[str], cwd: Path, what: str, watch: Callable[[str], None] | None = None) -> None:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            with subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace") as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    log.flush()  # the log is the build's live progress too (tail -f)
                    if watch is not None:
                        watch(line)
            rc = proc.returncode
            if rc:
                raise fail(f"{what} failed (exit {rc})")

        src = staging / "src"
        phase(f"unpacking {recipe.source}" + (f" at {recipe.ref}" if recipe.ref else ""))
        _unpack(recipe, src, run)
        for patch in recipe.patches:
            phase(f"applying {patch}")
            _apply(recipe, patch, src, log, fail)
        phase(f"config {recipe.config}" + (f" + {', '.join(recipe.fragments)}" if recipe.fragments else ""))
        if recipe.config_is_file:
            shutil.copyfile(recipe.config, src / ".config")
            run(["make", "olddefconfig"], src, "make olddefconfig")
        else:
            run(["make", recipe.config], src, f"make {recipe.config}")
        frags: dict[str, str] = {}
        paths: list[str] = []
        for f in recipe.fragments:
            # The tree's own: kernel/configs/<f> and arch/x86/configs/<f>, both when both exist (as `make f` does).
            found = [Path(f)] if f.startswith("/") else [src / d / f for d in FRAGMENT_DIRS if (src / d / f).is_file()]
            if not found:
                raise fail(f"fragment {f} is not one of this tree's ({', '.join(FRAGMENT_DIRS)})")
            frags[f] = "".join(p.read_text() for p in found)
            paths += [str(p) for p in found]
        own = staging / "runner.config"
        own.write_text(kr.fragment_text(recipe))
        run(["sh", "scripts/kconfig/merge_config.sh", "-m", ".config", *paths, str(own)], src, "merge_config.sh")
        run(["make", "olddefconfig"], src, "make olddefconfig")
        final = (src / ".config").read_text()
        wrong, notes = kr.split_mismatches(kr.config_mismatches(kr.wanted(recipe, frags), kr.parse_config(final)))
        for line in notes:
            log.write(f"runner: note: {line}\n")
        if notes:
            say(f"kernel {recipe.name}: {len(notes)} symbol(s) of the tree's fragments not taken by this kernel (kernel.json: fragment_notes)")
        if wrong:
            for line in wrong:
                log.write(f"runner: {line}\n")
            raise fail("the final .config does not have what was asked: " + "; ".join(wrong))
        digest = kr.build_digest(source_digest(recipe), [file_digest(Path(p)) for p in recipe.patches], final)
        phase(f"make -j{jobs} bzImage (build {digest})")
        count = [0]

        def watch(line: str) -> None:
            if line.startswith("  CC ") or line.startswith("  AS "):
                count[0] += 1
                if count[0] % 250 == 0:
                    say(f"kernel {recipe.name}: {count[0]} files compiled")

        run(["make", f"-j{jobs}", "bzImage"], src, "make bzImage", watch)
        release = subprocess.run(["make", "-s", "kernelrelease"], cwd=src, capture_output=True, text=True).stdout.strip()
        shutil.copyfile(src / "arch/x86/boot/bzImage", out / "bzImage")
        (out / "config").write_text(final)
        seconds = round(time.monotonic() - t0, 1)
        phase(f"built {release} in {seconds:.0f} s")
    meta = {"digest": digest, "recipe_digest": rd, "release": release, "config_digest": kr.config_digest(final),
            "recipe": recipe.to_json(), "source_digest": source_digest(recipe), "build_s": seconds, "jobs": jobs,
            "added": kr.additions(recipe), "fragment_notes": notes, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "kernel.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    final_dir = root / digest
    if not (final_dir / "kernel.json").exists():
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(final_dir)  # an incomplete directory cannot be there (renamed whole), but be safe
        os.replace(out, final_dir)
    (root / "recipes").mkdir(exist_ok=True)
    tmp = root / "recipes" / f".{rd}.tmp"
    tmp.write_text(digest + "\n")
    os.replace(tmp, root / "recipes" / rd)
    return _load(final_dir)


def _unpack(recipe: kr.Recipe, dest: Path, run: Callable[..., None]) -> None:
    src = recipe.source_path
    dest.mkdir()
    if recipe.source_kind != "tree":
        run(["tar", "-x", "-f", str(src), "-C", str(dest), "--strip-components=1"], dest, f"unpacking {src}")
    elif (src / ".git").exists():
        with subprocess.Popen(["git", "-C", str(src), "archive", "--format=tar", recipe.ref or "HEAD"], stdout=subprocess.PIPE) as archive:
            rc = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout).returncode
        if archive.returncode or rc:
            raise KernelBuildError(f"guest kernel {recipe.name!r}: git archive of {src} at {recipe.ref or 'HEAD'} failed")
        if recipe.ref is None and _git(src, "diff", "HEAD"):  # the tree as it is, uncommitted changes included
            diff = subprocess.run(["git", "-C", str(src), "diff", "HEAD", "--binary"], capture_output=True).stdout
            subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=dest, input=diff, check=True)
    else:
        run(["cp", "-a", f"{src}/.", str(dest)], dest, f"copying {src}")


def _apply(recipe: kr.Recipe, patch: str, src: Path, log: Any, fail: Callable[[str], KernelBuildError]) -> None:
    proc = subprocess.run(["patch", "-p1", "--forward", "--batch", "-i", patch], cwd=src, capture_output=True, text=True)
    log.write(proc.stdout + proc.stderr)
    if proc.returncode:
        raise fail(f"patch {patch} does not apply: {failed_files(proc.stdout + proc.stderr) or 'see the log'}")


def failed_files(output: str) -> str:
    """The files `patch` could not patch, from its output: 'FILE (2 of 3 hunks FAILED)', or a missing file."""
    out, current = [], ""
    for line in output.splitlines():
        if m := re.match(r"patching file '?([^']+)'?", line):
            current = m[1]
        elif m := re.search(r"(\d+ out of \d+ hunks? (FAILED|ignored))", line):
            out.append(f"{current} ({m[1]})")
        elif m := re.search(r"can't find file to patch|No file to patch", line):
            out.append(f"{current or 'a file'} (not in the tree)")
        elif "Reversed (or previously applied) patch detected" in line:
            out.append(f"{current} (already applied)")
    return ", ".join(dict.fromkeys(out))


def _git(tree: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
    if proc.returncode:
        raise ProvisionError(f"git {' '.join(args)} in {tree}: {proc.stderr.strip()}")
    return proc.stdout


def _tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------ the campaign's side


def recipes_of(trials_params: Iterable[Mapping[str, Any]]) -> dict[str, kr.Recipe]:
    """The recipes the trials boot, by name (each once)."""
    out: dict[str, kr.Recipe] = {}
    for params in trials_params:
        spec = params.get("guest_kernel_spec")
        if kr.is_recipe(spec):
            name = str(params.get("guest_kernel"))
            out.setdefault(name, recipe_from_spec(name, spec))
    return out


def recipe_from_spec(name: str, spec: Mapping[str, Any]) -> kr.Recipe:
    """A trial's guest_kernel_spec (the matrix entry as load_matrix resolved it) back as a Recipe."""
    b = spec["build"]
    return kr.Recipe(name, b["source"], b.get("ref"), tuple(b.get("patches") or ()), b.get("config", "defconfig"),
                     tuple(b.get("fragments") or ()), tuple(sorted((k, str(v)) for k, v in (b.get("set") or {}).items())),
                     spec.get("cmdline", ""), b.get("build_host"))


def prepare_kernels(trials_params: Iterable[Mapping[str, Any]], dataset: Path | None = None,
                    progress: Progress | None = None, cache: Path | None = None) -> dict[str, dict[str, Any]]:
    """Build (or find in the cache) every recipe kernel the trials boot, before any trial; store each
    final .config once in the dataset (kernels/<build digest>.config). Returns, by recipe name, what the
    provenance records: build digest, release, .config digest. A failed build raises KernelBuildError."""
    out: dict[str, dict[str, Any]] = {}
    for name, recipe in recipes_of(trials_params).items():
        if recipe.build_host is not None:
            raise ProvisionError(f"guest kernel {name!r}: build_host is not supported yet; build on the controller (remove build_host)")
        built = ensure_built(recipe, cache, progress)
        if dataset is not None:
            kdir = Path(dataset) / "kernels"
            kdir.mkdir(parents=True, exist_ok=True)
            if not (kdir / f"{built.digest}.config").exists():
                shutil.copyfile(built.config, kdir / f".{built.digest}.config.tmp")
                os.replace(kdir / f".{built.digest}.config.tmp", kdir / f"{built.digest}.config")
        out[name] = {"build": built.digest, "release": built.release, "config_digest": built.config_digest}
    return out


def kernel_of(params: Mapping[str, Any], cache: Path | None = None) -> Path | None:
    """The kernel image a trial's guests boot: its guest_kernels path, its recipe's bzImage, or None (the
    image's default kernel). `cache` is the runner's cache (its kernels/ folder holds the builds)."""
    spec = params.get("guest_kernel_spec") or {}
    if spec.get("kernel"):
        return Path(spec["kernel"])
    if kr.is_recipe(spec):
        return kernel_image(str(params.get("guest_kernel")), spec, cache)
    return None


def kernel_image(name: str, spec: Mapping[str, Any], cache: Path | None = None) -> Path:
    """The bzImage of a recipe kernel, which prepare_kernels built before the trials."""
    built = lookup(recipe_from_spec(name, spec), cache)
    if built is None:
        raise ProvisionError(f"guest kernel {name!r} is not built (the launch builds it before the first trial)")
    return built.bzimage


def plan_lines(recipes: Mapping[str, kr.Recipe], cache: Path | None = None, cores: int | None = None) -> list[str]:
    """What `runner plan` says of the recipe kernels: cached or to build (with an estimate) and what the
    runner adds to each."""
    cores = cores or os.cpu_count() or 1
    lines = []
    for name, recipe in recipes.items():
        try:
            built = lookup(recipe, cache)
        except (OSError, ProvisionError) as exc:
            built, why = None, str(exc)
        else:
            why = ""
        if built is not None:
            state = f"cached (build {built.digest}, {built.release})"
        else:
            state = f"to build, about {kr.estimate_minutes(recipe, cores):g} min on {cores} cores" + (f" ({why})" if why else "")
        lines.append(f"kernel {name}: {recipe.source} {recipe.config}" + (f" + {len(recipe.patches)} patch(es)" if recipe.patches else "")
                     + f": {state}")
        added = kr.additions(recipe)
        lines.append(f"  added for kvm/xen guests (=y): {' '.join(sorted(added))}")
    return lines


# ------------------------------------------------------------------------------------------ what the guest says


# Appended to the guest facts script: the recipe build the initramfs was made for, and the kernel's own
# boot line about paravirtual spinlocks (KVM: "PV spinlocks enabled" / "PV spinlocks disabled, ..."; Xen:
# "xen: PV spinlocks enabled/disabled").
FACTS_LINES = (
    'echo "kernel_build $(cat /etc/runner-kernel 2>/dev/null)"; '
    'echo "pvspin_line $(dmesg 2>/dev/null | grep -o "\\(xen: \\)\\?PV spinlocks.*" | head -n 1)"; '
)
GUEST_KERNEL_FILE = "/etc/runner-kernel"  # in the initramfs: "<recipe> <build digest> <release> <config digest>"


def trial_columns(facts: Mapping[str, Any], guest_kernel: str = "") -> dict[str, Any]:
    """The trial's kernel columns from the first guest's facts: the recipe (the trial's guest_kernel, when
    the guest booted a recipe build), the build the guest's initramfs names, what the guest itself said."""
    parts = str(facts.get("kernel_build") or "").split()
    build = dict(zip(("kernel_recipe", "kernel_build", "kernel_release", "kernel_config_digest"), parts)) if len(parts) == 4 else {}
    recipe = (guest_kernel or build.get("kernel_recipe")) if build else None
    return {"kernel_recipe": recipe, "kernel_build": build.get("kernel_build"),
            "kernel_release": build.get("kernel_release"), "kernel_config_digest": build.get("kernel_config_digest"),
            "guest_uname": facts.get("kernel_release") or None, "guest_pvspin": facts.get("pvspin_line") or None}
