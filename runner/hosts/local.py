"""This machine as a Host: commands run as child processes in their own process group."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.hosts.base import CommandResult, Host

_running: set[int] = set()


def running_groups() -> frozenset[int]:
    """Process groups of local workloads still running in this process (so Ctrl-C can stop them)."""
    return frozenset(_running)


class LocalHost(Host):
    """This machine. Commands run as child processes in their own process group."""

    def __init__(self, name: str = "localhost") -> None:
        self.name = name

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        start = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _running.add(proc.pid)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
        except BaseException:
            # Ctrl-C or a cancelled task: never leave the workload running behind us.
            _kill_group(proc)
            proc.communicate()
            raise
        finally:
            _running.discard(proc.pid)
        return CommandResult(tuple(argv), proc.returncode, out, err, time.monotonic() - start, timed_out)

    @property
    def is_local(self) -> bool:
        return True

    def put(self, local: Path, remote: str) -> None:
        dest = Path(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).resolve() != dest.resolve():
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copy2(local, tmp)
            os.replace(tmp, dest)

    def open_channel(self, address: str, port: int, timeout: float = 10.0) -> Any:
        return socket.create_connection((address, port), timeout=timeout)

    def spawn(self, argv: Sequence[str]) -> _Spawned:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )
        return _Spawned(proc)


class _Spawned:
    def __init__(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def finish(self, text: str, timeout: float) -> int | None:
        try:
            self._proc.communicate(text, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            return None
        return self._proc.returncode


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the process that started us dies (a killed Dask worker)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
