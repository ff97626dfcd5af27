#!/usr/bin/env python3
"""The gmake workload's script on the host: prepares the kernel tree and times one build (VBENCH method).

The runner copies this file to each host's campaign work directory and runs it with the host's python3
(standard library only, Python >= 3.6, like the fact collector):

    hostside.py check
        exit 0 when the build tools are on PATH, else exit 2 naming the missing ones.
    hostside.py run --source S --config C --cores N --jobs J --target T --cache DIR --tmpdir DIR --name NAME
        1. Once per (source, config) under DIR (under a lock, so it is idempotent and safe to race):
           unpack or copy the source, `make C` (or copy C to .config and `make olddefconfig` when C is a
           path), `make init/main.o` (the serial start of the build). Marked ready only when all of it worked.
        2. Copy the configured tree to <tmpdir>/<NAME>, read every file once (the tree is in the page
           cache), time `taskset -c <first N allowed CPUs> make -jJ T`, remove the copy (also on failure
           or SIGTERM; copies left by a SIGKILLed run are removed by the next run).
        3. Print one JSON line: build_time (s), cores, jobs and what was built.

Errors are one line `gmake: ...` on stderr; exit status 2 for a setup problem, 3 when the build failed.
"""

import argparse
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

FORMAT_VERSION = 1  # of the JSON line; history: 1 first version
TOOLS = ("make", "gcc", "flex", "bison", "bc", "perl", "tar", "xz", "cp", "taskset")
LINUX_SOURCE_GLOB = "/usr/src/linux-source-*.tar.xz"
OWNER_SUFFIX = ".owner"  # <tmpdir>/<name>.owner is locked while the copy <tmpdir>/<name> is in use
STALE_PATTERN = "*-gmake-*" + OWNER_SUFFIX


class Failure(Exception):
    """A problem worth one line on stderr; `status` is the exit code."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


# ----- pure helpers -------------------------------------------------------------------------------------
def missing_tools(which=shutil.which):
    """The build tools not found on PATH."""
    return [tool for tool in TOOLS if which(tool) is None]


def version_key(path):
    """Sort key of '/usr/src/linux-source-6.10.tar.xz': (6, 10), so 6.10 sorts after 6.9."""
    return tuple(int(n) for n in re.findall(r"\d+", os.path.basename(path)))


def cpu_list(allowed, cores):
    """The first `cores` CPUs of `allowed`, compact: ({0, 1, 2, 5}, 4) -> '0-2,5'."""
    chosen = sorted(allowed)[:cores]
    if len(chosen) < cores:
        raise Failure("cores {} > the {} CPUs this process may use ({})".format(cores, len(allowed), compact(sorted(allowed))))
    return compact(chosen)


def compact(cpus):
    parts, start = [], None
    for i, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else "{}-{}".format(start, cpu))
            start = None
    return ",".join(parts)


def cache_key(identity, config):
    """A short stable name for one configured tree."""
    text = json.dumps({"source": identity, "config": config}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tail(text, lines=3):
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "no output"


# ----- the source ---------------------------------------------------------------------------------------
def resolve_source(source):
    """(kind, absolute path) of a source parameter: linux-source, a tarball or a directory tree."""
    if source == "linux-source":
        found = sorted(glob.glob(LINUX_SOURCE_GLOB), key=version_key)
        if not found:
            raise Failure("no {} here: install Debian's linux-source package or give source: a tarball or tree".format(LINUX_SOURCE_GLOB))
        return "tarball", found[-1]
    path = os.path.realpath(source)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "Makefile")):
            raise Failure("source {}: a directory without a Makefile is not a kernel tree".format(source))
        return "tree", path
    if os.path.isfile(path):
        return "tarball", path
    raise Failure("source {} does not exist here".format(source))


def identity_of(kind, path):
    """What makes two sources the same for the cache: the file's size and mtime, or the tree's git HEAD."""
    if kind == "tarball":
        st = os.stat(path)
        return {"kind": kind, "path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    head = None
    if shutil.which("git") and os.path.exists(os.path.join(path, ".git")):
        proc = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
        head = proc.stdout.strip() or None
    return {"kind": kind, "path": path, "git_head": head}


def run(argv, cwd=None, what=None, status=2):
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0:
        raise Failure("{} failed (rc {}): {}".format(what or " ".join(argv), proc.returncode, tail(proc.stderr)), status)


def unpack(kind, path, tree):
    os.makedirs(tree)
    if kind == "tarball":
        run(["tar", "-xf", path, "--strip-components=1", "-C", tree], what="unpacking " + path)
    else:
        pack = subprocess.Popen(["tar", "-C", path, "--exclude=./.git", "-cf", "-", "."], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        unpacked = subprocess.run(["tar", "-C", tree, "-xf", "-"], stdin=pack.stdout, stderr=subprocess.PIPE, universal_newlines=True)
        pack.stdout.close()
        err = pack.stderr.read().decode(errors="replace")
        pack.wait()
        if pack.returncode != 0 or unpacked.returncode != 0:
            raise Failure("copying {} failed: {}".format(path, tail(err + unpacked.stderr)))
        run(["make", "mrproper"], cwd=tree, what="make mrproper in the copy of " + path)
    if not os.path.isfile(os.path.join(tree, "Makefile")):
        raise Failure("{} holds no kernel tree (no Makefile under its top directory)".format(path))


def configure(tree, config, jobs):
    if config.startswith("/"):
        if not os.path.isfile(config):
            raise Failure("config file {} does not exist here".format(config))
        shutil.copyfile(config, os.path.join(tree, ".config"))
        run(["make", "olddefconfig"], cwd=tree)
    else:
        run(["make", config], cwd=tree)
    run(["make", "-j{}".format(jobs), "init/main.o"], cwd=tree)


def kernel_version(tree):
    proc = subprocess.run(["make", "-s", "kernelversion"], cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    return proc.stdout.strip() or None


def lock(path):
    """An exclusive flock on `path` (created if needed), held until the returned file is closed.

    Retries when the file was unlinked by someone else between open and lock, so the lock held is always
    on the file currently at `path`."""
    while True:
        handle = open(path, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


def prepared_tree(source, config, cache):
    """The configured tree for (source, config) under `cache`, made once. Returns (tree, info, seconds spent)."""
    kind, path = resolve_source(source)
    base = os.path.join(cache, cache_key(identity_of(kind, path), config))
    tree, ready = os.path.join(base, "tree"), os.path.join(base, "ready.json")
    os.makedirs(base, exist_ok=True)
    with lock(os.path.join(base, "lock")):
        if os.path.isfile(ready):
            with open(ready) as f:
                return tree, json.load(f), 0.0
        start = time.monotonic()
        shutil.rmtree(tree, ignore_errors=True)  # a partial tree from an interrupted preparation
        unpack(kind, path, tree)
        configure(tree, config, len(os.sched_getaffinity(0)))
        info = {"source": path, "config": config, "kernel_version": kernel_version(tree)}
        with open(ready + ".tmp", "w") as f:
            json.dump(info, f)
        os.replace(ready + ".tmp", ready)
        return tree, info, time.monotonic() - start


# ----- one trial ----------------------------------------------------------------------------------------
def sweep_stale(tmpdir):
    """Remove copies whose owner is gone (their lock is free). Returns the removed paths."""
    removed = []
    for owner in glob.glob(os.path.join(tmpdir, STALE_PATTERN)):
        try:
            handle = open(owner, "a")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    continue  # a live run
                raise
            try:
                if os.fstat(handle.fileno()).st_ino != os.stat(owner).st_ino:
                    continue  # its run ended and a new one took the name meanwhile
                copy = owner[: -len(OWNER_SUFFIX)]
                shutil.rmtree(copy, ignore_errors=True)
                os.unlink(owner)
            except FileNotFoundError:
                continue  # its run ended while we looked
            removed.append(copy)
    return removed


def preread(tree):
    """Read every file once, as VBENCH does, so the timed build does not wait on first reads."""
    for root, _dirs, files in os.walk(tree):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    while f.read(1 << 20):
                        pass
            except OSError:
                pass  # dangling symlinks and the like


def build(args):
    tree, info, prepare_s = prepared_tree(args.source, args.config, args.cache)
    cpus = cpu_list(os.sched_getaffinity(0), args.cores)
    os.makedirs(args.tmpdir, exist_ok=True)
    sweep_stale(args.tmpdir)
    copy = os.path.join(args.tmpdir, args.name)
    owner = lock(copy + OWNER_SUFFIX)
    try:
        shutil.rmtree(copy, ignore_errors=True)  # an earlier attempt of this trial
        start = time.monotonic()
        run(["cp", "-a", tree, copy], what="copying the tree to " + args.tmpdir)
        copied = time.monotonic()
        preread(copy)
        read = time.monotonic()
        argv = ["taskset", "-c", cpus, "make", "-j{}".format(args.jobs), args.target]
        proc = subprocess.run(argv, cwd=copy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
        build_time = time.monotonic() - read
        if proc.returncode != 0:
            raise Failure("{} failed (rc {}) after {:.1f} s: {}".format(" ".join(argv), proc.returncode, build_time, tail(proc.stderr)), 3)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        os.unlink(owner.name)
        owner.close()
    return {
        "version": FORMAT_VERSION,
        "build_time": round(build_time, 3),
        "cores": args.cores,
        "jobs": args.jobs,
        "cpus": cpus,
        "target": args.target,
        "config": args.config,
        "source": info["source"],
        "kernel_version": info["kernel_version"],
        "prepare_s": round(prepare_s, 3),
        "copy_s": round(copied - start, 3),
        "preread_s": round(read - copied, 3),
    }


def _terminated(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that remove the copy


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gmake-hostside")
    sub = parser.add_subparsers(dest="action")
    sub.add_parser("check")
    p = sub.add_parser("run")
    for flag in ("--source", "--config", "--target", "--cache", "--tmpdir", "--name"):
        p.add_argument(flag, required=True)
    p.add_argument("--cores", type=int, required=True)
    p.add_argument("--jobs", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        if args.action == "check":
            missing = missing_tools()
            if missing:
                raise Failure("missing build tools: " + ", ".join(missing))
            return 0
        if args.action != "run":
            parser.error("give an action: check or run")
        print(json.dumps(build(args), sort_keys=True), flush=True)
        return 0
    except Failure as exc:
        print("gmake: {}".format(exc), file=sys.stderr, flush=True)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
