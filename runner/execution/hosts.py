"""Where commands run. A Host runs an argv with a timeout and copies files to itself.

`LocalHost` is this machine (subprocess). `runner.execution.ssh.SSHHost` is a remote host reached with
Fabric/paramiko; it is the only module that talks SSH. Guests reached over SSH are SSHHosts too.

Contract for every Host:
- `run(argv, timeout=...)` never raises for a non-zero exit or a timeout: it returns a CommandResult with
  `rc`, `timed_out` set. It raises `HostError` when the host itself cannot be reached.
- argv is a list; it is never passed through a shell unquoted, so matrix values are data, not commands.
- A command that runs past `timeout` is stopped (its whole process group) before run() returns.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out


class Host(ABC):
    """A machine that runs commands. `name` is its inventory name."""

    name: str

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult: ...

    @abstractmethod
    def put(self, local: Path, remote: str) -> None:
        """Copy a local file to `remote` (a path on the host), creating parent directories."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


LOCAL_NAMES = frozenset({"localhost", "local", "127.0.0.1"})

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

    def put(self, local: Path, remote: str) -> None:
        dest = Path(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).resolve() != dest.resolve():
            shutil.copyfile(local, dest)


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the process that started us dies (a killed Dask worker)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
