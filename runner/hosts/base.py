"""The host contract: a machine that runs commands, takes files and opens TCP channels.

Every place a workload or a provisioner can act on is a Host: this machine (`LocalHost`), a remote machine
over SSH (`SSHHost`), a guest reached over SSH through its hypervisor host (an `SSHHost` whose connection
is a channel of the hypervisor's Host: ProxyJump), a container on a host (`ContainerHost`). Whoever gets a
Host never needs to know which one it got.

Contract for every Host:
- `run(argv, timeout=...)` never raises for a non-zero exit or a timeout: it returns a CommandResult with
  `rc`, `timed_out` set. It raises `HostError` when the host itself cannot be reached.
- argv is a list; it is never passed through a shell unquoted, so matrix values are data, not commands.
- A command that runs past `timeout` is stopped (its whole process group) before run() returns, and a
  command whose caller went away (a killed controller) is stopped too.
- `put(local, remote)` copies a local file onto the host (parents created, mode kept); it is atomic: the
  file appears complete under its name or not at all.
- `open_channel(address, port)` is a socket-like stream (send, recv, close) to a TCP address the host can
  reach, so a client can talk to a guest network that only the host sees.
- `spawn(argv)` starts a command that keeps running while its caller lives: it reads its standard input,
  which closes when the caller's process or connection dies (a dead man's switch).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


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

    def tail(self) -> str:
        """The last line of stderr (else stdout): what a one-line error quotes."""
        return (self.stderr.strip().splitlines() or self.stdout.strip().splitlines() or ["no output"])[-1][:300]


class Spawned(Protocol):
    """A command started by `Host.spawn`: write to its stdin, then close it and wait for it."""

    def finish(self, text: str, timeout: float) -> int | None:
        """Write `text` to the command's stdin, close it, wait up to `timeout` s; its exit status or None."""


class Host(ABC):
    """A machine that runs commands. `name` is its inventory name (or a guest's or container's name)."""

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

    @abstractmethod
    def open_channel(self, address: str, port: int, timeout: float = 10.0) -> Any:
        """A connected, socket-like stream to address:port as seen from this host."""

    @abstractmethod
    def spawn(self, argv: Sequence[str]) -> Spawned:
        """Start argv with its stdin kept open by this process (see the module docstring)."""

    @property
    def is_local(self) -> bool:
        """True when commands run on the controller's own machine (the same filesystem and network)."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


LOCAL_NAMES = frozenset({"localhost", "local", "127.0.0.1"})
