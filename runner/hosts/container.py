"""A running container on a host as a Host: `podman exec` (or `docker exec`) run on that host.

The container is started elsewhere (runner.provision.container) and kept running (its init sleeps); this
class only runs commands in it. `cli` is the engine's command prefix on the host (e.g. `env
CONTAINERS_CONF=... podman --runtime /usr/sbin/runc`). Commands run under the container's own `timeout`,
so a timed-out workload stops inside the container even if the engine's client is killed first.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.errors import HostError
from runner.hosts.base import CommandResult, Host, Spawned

TIMEOUT_RCS = frozenset({124, 137, 143})  # `timeout` (GNU or busybox): TERM or KILL sent
CLIENT_GRACE_S = 15.0  # the engine's client answers this long after the container's `timeout` fired


class ContainerHost(Host):
    def __init__(self, host: Host, container: str, cli: Sequence[str]) -> None:
        self.name = container
        self.host = host
        self.container = container
        self.cli = tuple(cli)

    def _exec(self, argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None, interactive: bool = False) -> list[str]:
        out = [*self.cli, "exec"]
        if interactive:
            out.append("-i")
        if cwd:
            out += ["-w", cwd]
        for k, v in (env or {}).items():
            out += ["-e", f"{k}={v}"]
        return [*out, self.container, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        seconds = f"{timeout:.3f}".rstrip("0").rstrip(".")
        res = self.host.run(self._exec(["timeout", "-s", "KILL", seconds, *argv], cwd=cwd, env=env), timeout=timeout + CLIENT_GRACE_S)
        timed_out = res.timed_out or (res.rc in TIMEOUT_RCS and res.wall_s >= timeout)
        return CommandResult(tuple(argv), res.rc, res.stdout, res.stderr, res.wall_s, timed_out)

    def put(self, local: Path, remote: str) -> None:
        staged = f"/tmp/.runner-put-{self.container}-{Path(local).name}"
        self.host.put(Path(local), staged)
        parent = str(Path(remote).parent)
        script = f"mkdir -p {shlex.quote(parent)}"
        steps = [
            self._exec(["sh", "-c", script]),
            [*self.cli, "cp", staged, f"{self.container}:{remote}"],
        ]
        try:
            for argv in steps:
                res = self.host.run(argv, timeout=120)
                if not res.ok:
                    raise HostError(f"container {self.container} on {self.host.name}: cannot copy {local} to {remote}: {res.tail()}")
        finally:
            self.host.run(["rm", "-f", staged], timeout=30)

    def open_channel(self, address: str, port: int, timeout: float = 10.0) -> Any:
        raise ConnectionRefusedError(f"container {self.container} has no network (--network none)")

    def spawn(self, argv: Sequence[str]) -> Spawned:
        return self.host.spawn(self._exec(argv, interactive=True))
