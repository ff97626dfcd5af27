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

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ProvisionError
from runner.hosts.base import Host
from runner.provision import kernel as kr
from runner.provision.inventory import connect, load_inventory

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
                 jobs: int | None = None, host: Host | None = None) -> Built:
    """The recipe's kernel, built now unless the cache has it. Two processes asking at once: one builds,
    the other waits for the lock and finds it built. `host`: the recipe's build host (None: this machine);
    the kernel lands in this machine's cache either way."""
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
            built = _build(recipe, rd, staging, root, say, jobs or os.cpu_count() or 1, host)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return built


class _Place:
    """Where a build runs: this machine (staging inside the cache) or a build host (a staging directory on it,
    reached through its Host; the files are copied there and the results fetched back)."""

    def __init__(self, base: str, host: Host | None = None) -> None:
        self.base = base
        self.host = host

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def run(self, argv: list[str], cwd: str, log: Any, watch: Callable[[str], None] | None = None) -> int:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        if self.host is None:
            with subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace") as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    log.flush()  # the log is the build's live progress too (tail -f)
                    if watch is not None:
                        watch(line)
            return proc.returncode
        step = self.path("step.log")
        cmd = f"cd {shlex.quote(cwd)} && {shlex.join(argv)} > {shlex.quote(step)} 2>&1"
        res = self.host.run(["sh", "-c", cmd], timeout=REMOTE_STEP_TIMEOUT_S)
        out = self.host.run(["cat", step], timeout=120).stdout
        for line in out.splitlines(keepends=True):
            log.write(line)
            if watch is not None:
                watch(line)
        log.flush()
        return 124 if res.timed_out else res.rc

    def read(self, path: str) -> str:
        if self.host is None:
            return Path(path).read_text()
        res = self.host.run(["cat", path], timeout=120)
        if not res.ok:
            raise ProvisionError(f"{self.host.name}: cannot read {path}: {res.tail()}")
        return res.stdout

    def exists(self, path: str) -> bool:
        return Path(path).is_file() if self.host is None else self.host.run(["test", "-f", path], timeout=60).ok

    def put(self, local: Path, path: str) -> None:
        if self.host is None:
            shutil.copyfile(local, path)
        else:
            self.host.put(local, path)

    def write(self, path: str, text: str, scratch: Path) -> None:
        if self.host is None:
            Path(path).write_text(text)
            return
        tmp = scratch / Path(path).name
        tmp.write_text(text)
        self.put(tmp, path)

    def fetch(self, path: str, local: Path) -> None:
        """Copy a file of the place to this machine (a build host's, as base64 over its connection)."""
        if self.host is None:
            shutil.copyfile(path, local)
            return
        res = self.host.run(["base64", "-w0", path], timeout=600)
        if not res.ok:
            raise ProvisionError(f"{self.host.name}: cannot fetch {path}: {res.tail()}")
        local.write_bytes(base64.b64decode(res.stdout))


REMOTE_STEP_TIMEOUT_S = 6 * 3600.0  # one step on a build host (make bzImage of a big config on a slow host)
REMOTE_STAGING = "/var/tmp/runner-kernels"  # on a build host: .staging-<recipe digest>.<id>/


def _build(recipe: kr.Recipe, rd: str, staging: Path, root: Path, say: Progress, jobs: int, host: Host | None = None) -> Built:
    out = staging / "out"
    out.mkdir()
    log_path = out / "build.log"
    t0 = time.monotonic()
    if host is None:
        place = _Place(str(staging))
    else:
        base = f"{REMOTE_STAGING}/.staging-{rd}.{uuid.uuid4().hex[:8]}"
        host.run(["sh", "-c", f"rm -rf {REMOTE_STAGING}/.staging-{rd}.*; mkdir -p {shlex.quote(base)}"], timeout=600)
        place = _Place(base, host)
    try:
        with open(log_path, "w") as log:
            digest, release, final, notes = _steps(recipe, place, staging, root, log, log_path, say, jobs, host)
            seconds = round(time.monotonic() - t0, 1)
            line = f"kernel {recipe.name}: built {release} in {seconds:.0f} s" + (f" on {host.name}" if host else "")
            say(line)
            log.write(f"### {line}\n")
    finally:
        if host is not None:
            with contextlib.suppress(Exception):
                host.run(["rm", "-rf", place.base], timeout=600)
    meta = {"digest": digest, "recipe_digest": rd, "release": release, "config_digest": kr.config_digest(final),
            "recipe": recipe.to_json(), "source_digest": source_digest(recipe), "build_s": seconds, "jobs": jobs,
            "built_on": host.name if host else "controller",
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


def _steps(recipe: kr.Recipe, place: _Place, staging: Path, root: Path, log: Any, log_path: Path, say: Progress, jobs: int,
           host: Host | None) -> tuple[str, str, str, list[str]]:
    """Unpack, patch, configure, check, make bzImage at `place`; the kernel, its .config and the log land in
    staging/out. Returns (build digest, release, final .config, fragment notes)."""
    where = f" on {host.name}" if host else ""

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
        return KernelBuildError(f"guest kernel {recipe.name!r}: {message}{where} (log: {kept / 'build.log'})", _tail(log_path))

    def run(argv: list[str], cwd: str, what: str, watch: Callable[[str], None] | None = None) -> None:
        rc = place.run(argv, cwd, log, watch)
        if rc:
            raise fail(f"{what} failed (exit {rc})")

    src = place.path("src")
    phase(f"unpacking {recipe.source}" + (f" at {recipe.ref}" if recipe.ref else "") + where)
    _unpack(recipe, place, staging, run)
    for i, patch in enumerate(recipe.patches):
        phase(f"applying {patch}")
        there = place.path(f"patch-{i}.patch")
        place.put(Path(patch), there)
        log.flush()
        marker = log_path.stat().st_size
        rc = place.run(["patch", "-p1", "--forward", "--batch", "-i", there], src, log)
        if rc:
            log.flush()
            output = log_path.read_bytes()[marker:].decode(errors="replace")
            raise fail(f"patch {patch} does not apply: {failed_files(output) or 'see the log'}")
    phase(f"config {recipe.config}" + (f" + {', '.join(recipe.fragments)}" if recipe.fragments else ""))
    if recipe.config_is_file:
        place.put(Path(recipe.config), f"{src}/.config")
        run(["make", "olddefconfig"], src, "make olddefconfig")
    else:
        run(["make", recipe.config], src, f"make {recipe.config}")
    frags: dict[str, str] = {}
    paths: list[str] = []
    for i, f in enumerate(recipe.fragments):
        if f.startswith("/"):
            there = place.path(f"fragment-{i}.config")
            place.put(Path(f), there)
            found = [there]
        else:  # the tree's own: kernel/configs/<f> and arch/x86/configs/<f>, both when both exist (as `make f` does)
            found = [f"{src}/{d}/{f}" for d in FRAGMENT_DIRS if place.exists(f"{src}/{d}/{f}")]
        if not found:
            raise fail(f"fragment {f} is not one of this tree's ({', '.join(FRAGMENT_DIRS)})")
        frags[f] = "".join(place.read(p) for p in found)
        paths += found
    own = place.path("runner.config")
    place.write(own, kr.fragment_text(recipe), staging)
    run(["sh", "scripts/kconfig/merge_config.sh", "-m", ".config", *paths, own], src, "merge_config.sh")
    run(["make", "olddefconfig"], src, "make olddefconfig")
    final = place.read(f"{src}/.config")
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
    if host is not None:
        res = host.run(["nproc"], timeout=60)
        jobs = int(res.stdout.strip()) if res.ok and res.stdout.strip().isdigit() else jobs
    phase(f"make -j{jobs} bzImage (build {digest}){where}")
    count = [0]

    def watch(line: str) -> None:
        if line.startswith(("  CC ", "  AS ")):
            count[0] += 1
            if count[0] % 250 == 0:
                say(f"kernel {recipe.name}: {count[0]} files compiled")

    run(["make", f"-j{jobs}", "bzImage"], src, "make bzImage", watch)
    captured = _Capture()
    rel = place.run(["make", "-s", "kernelrelease"], src, captured)
    release = captured.text.strip().splitlines()[-1] if rel == 0 and captured.text.strip() else ""
    place.fetch(f"{src}/arch/x86/boot/bzImage", staging / "out" / "bzImage")
    (staging / "out" / "config").write_text(final)
    return digest, release, final, notes


class _Capture:
    """A log that keeps what a command printed (make kernelrelease)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        if not text.startswith("$ "):
            self.text += text

    def flush(self) -> None:
        pass


def _unpack(recipe: kr.Recipe, place: _Place, staging: Path, run: Callable[..., None]) -> None:
    """The source into place/src: a tarball unpacked there (a build host uses its own copy when it has the
    same file, else gets this machine's); a git tree exported at its ref, another tree copied."""
    src = recipe.source_path
    dest = place.path("src")
    run(["mkdir", "-p", dest], place.base, "mkdir")
    if recipe.source_kind != "tree":
        tarball = str(src)
        if place.host is not None:
            same = place.host.run(["sha256sum", tarball], timeout=600)
            if not (same.ok and same.stdout.split()[0] == file_digest(src)):
                tarball = place.path("source" + "".join(src.suffixes[-2:]))
                place.put(src, tarball)
        run(["tar", "-x", "-f", tarball, "-C", dest, "--strip-components=1"], place.base, f"unpacking {src}")
        return
    local = staging / "src" if place.host is not None else Path(dest)
    local.mkdir(exist_ok=True)
    if (src / ".git").exists():
        with subprocess.Popen(["git", "-C", str(src), "archive", "--format=tar", recipe.ref or "HEAD"], stdout=subprocess.PIPE) as archive:
            rc = subprocess.run(["tar", "-x", "-C", str(local)], stdin=archive.stdout).returncode
        if archive.returncode or rc:
            raise KernelBuildError(f"guest kernel {recipe.name!r}: git archive of {src} at {recipe.ref or 'HEAD'} failed")
        if recipe.ref is None and _git(src, "diff", "HEAD"):  # the tree as it is, uncommitted changes included
            diff = subprocess.run(["git", "-C", str(src), "diff", "HEAD", "--binary"], capture_output=True).stdout
            subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=local, input=diff, check=True)
    else:
        subprocess.run(["cp", "-a", f"{src}/.", str(local)], check=True)
    if place.host is not None:  # the tree, as one tarball, to the build host
        subprocess.run(["tar", "-c", "-f", str(staging / "src.tar"), "-C", str(local), "."], check=True)
        place.put(staging / "src.tar", place.path("src.tar"))
        run(["tar", "-x", "-f", place.path("src.tar"), "-C", dest], place.base, "unpacking the tree")


def failed_files(output: str) -> str:
    """The files `patch` could not patch, from its output: 'FILE (2 of 3 hunks FAILED)', a file not in the
    tree, or a patch already applied."""
    out: list[str] = []
    current, missing = "", False  # missing: the file is not in the tree, or "applied" (already applied)
    for line in output.splitlines():
        if m := re.match(r"patching file '?([^']+)'?$", line):
            current, missing = m[1], False
        elif m := re.match(r"\|?\+\+\+ (?:b/)?(\S+)", line):  # the header patch quotes before "No file to patch"
            current = m[1]
        elif re.search(r"can't find file to patch|No file to patch", line):
            missing = True
        elif m := re.search(r"(\d+ out of \d+ hunks? (FAILED|ignored))", line):
            if missing != "applied":
                out.append(f"{current or 'a file'} (not in the tree)" if missing else f"{current} ({m[1]})")
            missing = False
        elif "Reversed (or previously applied) patch detected" in line:
            out.append(f"{current} (already applied)")
            missing = "applied"
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
                    progress: Progress | None = None, cache: Path | None = None,
                    inventory: Path | None = None, known_hosts: Path | None = None) -> dict[str, dict[str, Any]]:
    """Build (or find in the cache) every recipe kernel the trials boot, before any trial; store each
    final .config once in the dataset (kernels/<build digest>.config). Returns, by recipe name, what the
    provenance records: build digest, release, .config digest. A failed build raises KernelBuildError.
    inventory (and known_hosts): where a recipe's build_host is found."""
    out: dict[str, dict[str, Any]] = {}
    for name, recipe in recipes_of(trials_params).items():
        host = None
        if recipe.build_host is not None and lookup(recipe, cache) is None:
            host = build_host(name, recipe.build_host, inventory, known_hosts)
        try:
            built = ensure_built(recipe, cache, progress, host=host)
        finally:
            if host is not None:
                host.close()
        if dataset is not None:
            kdir = Path(dataset) / "kernels"
            kdir.mkdir(parents=True, exist_ok=True)
            if not (kdir / f"{built.digest}.config").exists():
                shutil.copyfile(built.config, kdir / f".{built.digest}.config.tmp")
                os.replace(kdir / f".{built.digest}.config.tmp", kdir / f"{built.digest}.config")
        out[name] = {"build": built.digest, "release": built.release, "config_digest": built.config_digest}
    return out


def build_host(recipe: str, name: str, inventory: Path | None, known_hosts: Path | None = None) -> Host:
    """The Host of a recipe's build_host, from the campaign's inventory."""
    if inventory is None:
        raise ProvisionError(f"guest kernel {recipe!r}: build_host {name!r} needs an inventory")
    found = load_inventory(inventory, known_hosts).resolve(name)
    if len(found) != 1:
        raise ProvisionError(f"guest kernel {recipe!r}: build_host {name!r} is not one host of {inventory}")
    return connect(found[0])


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
