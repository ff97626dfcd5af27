"""Remote hosts over SSH (Fabric 3 / paramiko). The only module of the runner that talks SSH.

`SSHHost` keeps one connection per host and reuses it for every `run()` and `put()`; a connection that
dropped between calls is re-opened once. An SSHHost given `via=` another Host connects through a channel
that host opens (`Host.open_channel`, a `direct-tcpip` channel over an SSH host's transport): a guest on a
network only its hypervisor host reaches, exactly like OpenSSH's ProxyJump. No agent is forwarded. Host keys are always checked: the known_hosts file given in the
`HostSpec` (else ~/.ssh/known_hosts) plus /etc/ssh/ssh_known_hosts; an unknown or changed key is refused.

A command does not wait for its session to start: each SSHHost keeps one standby session, started while
the previous command ran, whose shell (the login user's, with its start-up files: 0.2-0.5 s on some hosts)
has already started and waits for one command on its stdin (STANDBY_BOOT); run() sends the command line
there and starts the next standby. RUNNER_SSH_STANDBY=0 turns this off (a new session per command).

Every command is wrapped in the remote `timeout -k KILL_AFTER TIMEOUT argv...` (GNU coreutils or busybox),
so a hung workload cannot outlive its trial even if we lose the connection. Locally, run() gives up at
timeout + kill_after + grace: by then the remote `timeout` must have answered, so silence means the host
or its network is gone and run() raises HostError. TCP_USER_TIMEOUT plus an SSH keepalive make a vanished
peer close the transport instead of hanging a read.
"""

from __future__ import annotations

import binascii
import logging
import math
import os
import re
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fabric import Config, Connection
from paramiko import Channel, RejectPolicy, SSHConfig
from paramiko.ssh_exception import AuthenticationException, BadHostKeyException, SSHException

from runner.errors import HostError, UsageError
from runner.hosts.base import CommandResult, Host
from runner.textfile import read_text
from runner.util import one_line

SYSTEM_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), Path("/etc/ssh/ssh_known_hosts2"))
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
KEEPALIVE_S = 5  # SSH keepalive interval
STANDBY_OPEN_S = 2.0  # the most a standby session's opening may hold up the command it is started beside
DEAD_PEER_S = 15  # TCP_USER_TIMEOUT: unacknowledged data for this long closes the connection
SFTP_TIMEOUT_S = 60.0  # per read on the SFTP channel
# Exit codes of `timeout`: 124 (GNU, TERM sent), 137 (KILL after kill_after), 143 (busybox, TERM sent).
TIMEOUT_RCS = frozenset({124, 137, 143})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _QuietChannelRefusals(logging.Filter):
    """paramiko logs every refused `direct-tcpip` channel as an error; waiting for a booting guest through
    its host refuses many, and `open_channel` already turns each into an exception its caller handles.
    It also logs "Success for unrequested channel!" when a slow host answers a channel open after its
    timeout: that open already failed as a HostError the caller handled. And a transport thread that fails
    (a host that sends no SSH banner in time) logs "Exception (client): ..." and then its traceback line by
    line, before connect() raises the same exception, which the runner reports in one line: none of that
    thread's later errors is shown either."""

    def __init__(self) -> None:
        super().__init__()
        self._failed: set[int | None] = set()  # transport threads that reported their exception

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(("Exception (client)", "Exception (server)")):
            self._failed.add(record.thread)
            return False
        if record.levelno >= logging.ERROR and record.thread in self._failed:  # the traceback's lines
            return False
        refused = message.startswith("Secsh channel") and "open FAILED" in message
        return not (refused or message.startswith("Success for unrequested channel"))


logging.getLogger("paramiko.transport").addFilter(_QuietChannelRefusals())


@dataclass(frozen=True)
class HostSpec:
    """How to reach one inventory host. local=True means this machine (no SSH)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None  # None: the default keys in ~/.ssh and the agent, like ssh
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    connect_timeout: float = 10.0
    local: bool = False
    guest_bridge: str | None = None  # the host's guest network for kvm/xen guests (None: the default)
    guest_subnet: str | None = None
    hold_path: str | None = None  # the host's hold file (inventory runner_hold_path; None: runner.lab's default)
    envs: tuple[str, ...] | None = None  # the environments it may run (inventory runner_envs; None: whichever it can)
    boot_s: tuple[tuple[str, float], ...] = ()  # (env, seconds one guest takes to boot there): runner_boot_s, for estimates
    trial_s: float | None = None  # seconds a trial costs there beyond its workload (runner_trial_s), for estimates

    def where(self) -> str:
        """'host tb1 (root@10.0.0.2:22)' for messages."""
        return f"host {self.name} ({self.user}@{self.address}:{self.port})"


# A standby session: the login shell starts it ahead of time; it reads one command, up to a line that is
# exactly STANDBY_END, and evaluates it. Its stdin stays the channel: the command's HANGUP_WRAPPER reads the
# rest of it. EOF before the end line (the connection closed) exits without running anything.
STANDBY_END = f"runner-end-{secrets.token_hex(8)}"
STANDBY_BOOT = "exec sh -c " + shlex.quote(
    f'c=""; while :; do IFS= read -r l || exit 0; [ "$l" = {STANDBY_END} ] && break; c="$c$l\n"; done; eval "$c"'
)
EXEC_RETRY_S = 0.2  # pause before starting a command again on a new session when the host refused it (_started)
STANDBY_ENV = "RUNNER_SSH_STANDBY"  # 0: no standby session (a new session per command, to measure the difference)


def standby_enabled() -> bool:
    return os.environ.get(STANDBY_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


# Runs "$@" and stops it (its process group: GNU timeout makes one) when our side of the channel goes away,
# e.g. a controller or Dask worker killed with SIGKILL: the remote shell reads its stdin (the channel) until
# EOF. Asynchronous lists get /dev/null as stdin, hence the copy on fd 3.
HANGUP_WRAPPER = (
    'exec 3<&0; "$@" </dev/null 3<&- & p=$!; '
    '(while read -r _ <&3; do :; done; kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null) >/dev/null 2>&1 & w=$!; '
    "wait $p; rc=$?; kill $w 2>/dev/null; exit $rc"
)


def remote_command(
    argv: Sequence[str],
    timeout: float,
    kill_after: float,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The shell line run remotely: every argv element, cwd and env value quoted; argv under `timeout`,
    stopped when the connection goes away (HANGUP_WRAPPER)."""
    if not argv:
        raise UsageError("cannot run an empty argv")
    if not timeout > 0:
        raise UsageError(f"timeout {timeout!r} must be > 0 seconds")
    parts: list[str] = []
    if cwd is not None:
        parts += ["cd", shlex.quote(cwd), "&&"]
    parts += ["exec", "sh", "-c", shlex.quote(HANGUP_WRAPPER), "runner-run"]
    if env:
        bad = [k for k in env if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise UsageError(f"environment variable name {bad[0]!r} is invalid; allowed: [A-Za-z_][A-Za-z0-9_]*")
        parts += ["env", *(shlex.quote(f"{k}={v}") for k, v in env.items())]
    seconds = f"{timeout:.3f}".rstrip("0").rstrip(".")
    parts += ["timeout", "-k", str(max(1, math.ceil(kill_after))), seconds, shlex.join(argv)]
    return " ".join(parts)


def check_known_hosts_file(path: Path) -> None:
    """A UsageError (one line naming the file) unless `path` is a known_hosts file OpenSSH would read: every
    line blank, a comment, or `[@marker] HOSTS KEYTYPE BASE64-KEY [comment]` with a key that decodes. Key
    types paramiko does not know are allowed (OpenSSH may); an empty file is allowed (every key is then
    unknown, which each host reports when it is reached)."""
    text = read_text(Path(path), "known_hosts file")
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].startswith("@"):
            words = words[1:]
        if len(words) < 3:
            raise UsageError(f"{path}: line {number}: not a known_hosts entry (HOSTS KEYTYPE KEY): {_shorten(line)}")
        try:
            binascii.a2b_base64(words[2].encode("ascii"), strict_mode=True)
        except (ValueError, UnicodeEncodeError):
            raise UsageError(f"{path}: line {number}: the key of {_shorten(words[0])} is not base64: {_shorten(words[2])}") from None


def _shorten(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _UnknownHostKey(SSHException):
    pass


class _Reject(RejectPolicy):
    """RejectPolicy with an exception we can tell apart from other SSH failures."""

    def missing_host_key(self, client, hostname, key) -> None:  # noqa: ANN001 - paramiko's signature
        raise _UnknownHostKey(f"{key.get_name()} {key.fingerprint}")


class SSHHost(Host):
    """A host reached over SSH with one persistent, host-key-checked connection."""

    def __init__(self, spec: HostSpec, *, kill_after: float = 5.0, grace: float = 5.0, via: Host | None = None) -> None:
        self.name = spec.name
        self.spec = spec
        self.via = via
        self.kill_after = kill_after
        self.grace = grace
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._standby: Channel | None = None  # a started session waiting for its command (see the module doc)
        self.use_standby = standby_enabled()

    # ----- connection --------------------------------------------------------------------------------
    def _known_hosts_files(self) -> list[Path]:
        first = self.spec.known_hosts if self.spec.known_hosts is not None else USER_KNOWN_HOSTS.expanduser()
        return [first, *(p for p in SYSTEM_KNOWN_HOSTS if p.is_file())]

    def _connect(self) -> Connection:
        spec, where = self.spec, self.spec.where()
        if spec.key_file is not None and not Path(spec.key_file).is_file():
            raise HostError(f"{where}: key file {spec.key_file} does not exist")
        if spec.known_hosts is not None and not Path(spec.known_hosts).exists():
            raise HostError(f"{where}: known_hosts file {spec.known_hosts} does not exist")
        t = float(spec.connect_timeout)
        kwargs: dict = {"timeout": t, "banner_timeout": t, "auth_timeout": t, "channel_timeout": t}
        if spec.key_file is not None:
            kwargs |= {"key_filename": str(spec.key_file), "look_for_keys": False, "allow_agent": False}
        if self.via is not None:
            try:
                kwargs["sock"] = self.via.open_channel(spec.address, spec.port, t)
            except OSError as e:
                raise HostError(f"{where}: unreachable through {self.via.name}: {one_line(e)}") from None
        # An empty SSHConfig: ~/.ssh/config must not silently change where or how we connect.
        conn = Connection(
            host=spec.address, user=spec.user, port=spec.port, connect_kwargs=kwargs,
            config=Config(lazy=True, ssh_config=SSHConfig()),
        )
        client = conn.client
        client.set_missing_host_key_policy(_Reject())
        files = self._known_hosts_files()
        # paramiko consults "system" keys first: the file named for this host wins over the others.
        if files[0].is_file():
            client.load_system_host_keys(str(files[0]))
        for extra in files[1:]:
            client.get_host_keys().load(str(extra))
        try:
            conn.open()
        except BadHostKeyException as e:
            client.close()
            raise HostError(
                f"{where}: host key changed: got {e.key.get_name()} {e.key.fingerprint}, "
                f"known_hosts ({', '.join(map(str, files))}) has {e.expected_key.fingerprint}"
            ) from None
        except _UnknownHostKey as e:
            client.close()
            raise HostError(f"{where}: unknown host key {e}; not in {', '.join(map(str, files))}") from None
        except AuthenticationException:
            client.close()
            key = spec.key_file or "the default keys"
            raise HostError(f"{where}: login refused for user {spec.user} with {key}") from None
        except (TimeoutError, socket.timeout):
            client.close()
            raise HostError(f"{where}: unreachable: no answer within {t:g} s") from None
        except (SSHException, OSError, EOFError) as e:
            client.close()
            raise HostError(f"{where}: cannot connect: {one_line(e)}") from None
        transport = conn.transport
        transport.set_keepalive(KEEPALIVE_S)
        if isinstance(transport.sock, socket.socket):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_S * 1000)
            # No Nagle: a command sent right after the last one's channel closed is a second small write, which
            # Nagle held until the host acknowledged the first, and the host delays that acknowledgement up to
            # 40 ms: every command run back to back started ~40 ms late (measured; docs/hosts.md).
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _connection(self) -> Connection:
        """The open connection, (re)connecting if there is none or it dropped."""
        with self._lock:
            if self._conn is None or not self._conn.is_connected:
                self._drop()
                self._conn = self._connect()
            return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._standby = None  # a channel of that connection
        if conn is not None:
            try:
                conn.close()
            finally:
                conn.client.close()

    def _drop_if_dead(self) -> bool:
        """Drop the connection if its transport is gone (True); a live one is kept for the commands (and the
        guests' channels) that use it at the same time."""
        with self._lock:
            conn = self._conn
        if conn is not None and conn.is_connected and conn.transport is not None and conn.transport.is_active():
            return False
        self._drop()
        return True

    def _session(self) -> Channel:
        """A new session channel. A kept connection found dead is replaced once; a fresh one is not retried."""
        fresh = self._conn is None or not self._conn.is_connected
        while True:
            conn = self._connection()
            try:
                return conn.transport.open_session(timeout=self.spec.connect_timeout)
            except (SSHException, OSError, EOFError) as e:
                if conn.transport.is_active():  # refused or slow (a busy guest): the commands running on this
                    # connection, and the guests reached through it, are not ours to end
                    raise HostError(f"{self.spec.where()}: cannot open a session: {one_line(e)}") from None
                self._drop()
                if fresh:
                    raise HostError(f"{self.spec.where()}: cannot open a session: {one_line(e)}") from None
                fresh = True

    def _take_standby(self) -> Channel | None:
        """The standby session if it is still usable (its connection up, its shell waiting), else None."""
        with self._lock:
            chan, self._standby = self._standby, None
            conn = self._conn
        if chan is None:
            return None
        transport = chan.get_transport()
        alive = conn is not None and conn.is_connected and transport is not None and transport.is_active()
        if alive and not chan.closed and not chan.eof_received and not chan.exit_status_ready():
            return chan
        chan.close()
        return None

    def _start_standby(self) -> None:
        """Start the next standby session on the current connection (best effort: a failure here is found,
        and reported, by the command that needs the connection)."""
        with self._lock:
            conn = self._conn
            if not self.use_standby or self._standby is not None or conn is None or not conn.is_connected:
                return
        try:  # briefly: the command that just started is collected after this, and must not wait behind it
            chan = conn.transport.open_session(timeout=min(self.spec.connect_timeout, STANDBY_OPEN_S))
            chan.exec_command(STANDBY_BOOT)
        except (SSHException, OSError, EOFError):
            return
        with self._lock:
            if self._standby is None and self._conn is conn:
                self._standby, chan = chan, None
        if chan is not None:
            chan.close()

    def _started(self, command: str) -> Channel:
        """A channel running `command`: on the standby session if there is one, else on a new session."""
        chan = self._take_standby()
        if chan is not None:
            try:
                chan.sendall(f"{command}\n{STANDBY_END}\n".encode())
                return chan
            except (SSHException, OSError, EOFError):
                chan.close()  # the connection went away while idle: a new session reconnects once
        for attempt in (1, 2):
            chan = self._session()
            try:
                chan.exec_command(command)  # stdin stays open: its end tells the remote side we are gone
                return chan
            except SSHException:
                chan.close()
                transport = chan.get_transport()
                if attempt == 2 or transport is None or not transport.is_active():
                    raise
                # The host closed the session instead of starting the command (seen with a busy emulated
                # guest's dropbear): nothing of it ran; once more on a new session, the connection being up.
                time.sleep(EXEC_RETRY_S)
            except BaseException:
                chan.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._drop()

    def open_channel(self, address: str, port: int, timeout: float = 10.0) -> Channel:
        """A `direct-tcpip` channel to address:port from this host; OSError if the host cannot connect there."""
        transport = self._connection().transport
        try:
            chan = transport.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout)
        except (SSHException, EOFError) as e:
            if not transport.is_active():
                self._drop()
                raise HostError(f"{self.spec.where()}: connection lost opening a channel to {address}:{port}") from None
            raise ConnectionRefusedError(f"{self.name} cannot connect to {address}:{port}: {one_line(e)}") from None
        chan.settimeout(None)
        return chan

    def spawn(self, argv: Sequence[str]) -> _SpawnedChannel:
        """argv on the host with its stdin on an SSH channel: it sees EOF when this connection dies."""
        chan = self._session()
        try:
            chan.exec_command(shlex.join(argv))
        except (SSHException, OSError, EOFError) as e:
            self._drop()
            raise HostError(f"{self.spec.where()}: cannot start {argv[0]}: {one_line(e)}") from None
        return _SpawnedChannel(chan)

    # ----- Host API ----------------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        command = remote_command(argv, timeout, self.kill_after, cwd, env)
        start = time.monotonic()
        limit = timeout + self.kill_after + self.grace
        try:
            chan = self._started(command)
        except (SSHException, OSError, EOFError) as e:
            if not self._drop_if_dead():  # the host refused this one command; other commands on the connection go on
                raise HostError(f"{self.spec.where()}: could not start {argv[0]}: {one_line(e)}") from None
            raise HostError(f"{self.spec.where()}: connection lost while running {argv[0]}: {one_line(e)}") from None
        try:
            self._start_standby()  # the next command's session starts while this one runs
            rc, out, err = self._collect(chan, start + limit, argv, limit)
        except (SSHException, OSError, EOFError) as e:
            self._drop()
            raise HostError(f"{self.spec.where()}: connection lost while running {argv[0]}: {one_line(e)}") from None
        finally:
            chan.close()
        wall = time.monotonic() - start
        timed_out = rc in TIMEOUT_RCS and wall >= timeout
        return CommandResult(tuple(argv), rc, out, err, wall, timed_out)

    def _collect(self, chan: Channel, deadline: float, argv: Sequence[str], limit: float) -> tuple[int, str, str]:
        """rc, stdout, stderr of a running command; rc -1 if it died by a signal (no exit status)."""
        out, err = bytearray(), bytearray()
        while True:
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            done = chan.exit_status_ready() and (chan.eof_received or chan.closed)
            if done and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            transport = chan.get_transport()
            if transport is None or not transport.is_active():
                self._drop()
                raise HostError(f"{self.spec.where()}: connection lost while running {argv[0]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._drop()
                raise HostError(
                    f"{self.spec.where()}: no answer {limit:g} s after starting {argv[0]}; host or network gone"
                )
            if chan.eof_received:
                chan.status_event.wait(min(remaining, 0.5))
            else:
                select.select([chan], [], [], min(remaining, 0.5))
        rc = chan.recv_exit_status()
        if rc == -1 and not chan.get_transport().is_active():
            self._drop()
            raise HostError(f"{self.spec.where()}: connection lost while running {argv[0]}")
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def put(self, local: Path, remote: str) -> None:
        local = Path(local)
        if not local.is_file():
            raise UsageError(f"cannot copy {local} to {self.name}: no such local file")
        where = self.spec.where()
        chan = self._session()
        chan.close()  # proves the connection alive (reconnecting once) before SFTP opens its own channel
        try:
            sftp = self._connection().sftp()
            sftp.get_channel().settimeout(SFTP_TIMEOUT_S)
            parent = PurePosixPath(remote).parent
            for d in reversed([parent, *parent.parents]):
                if str(d) in ("/", "."):
                    continue
                try:
                    sftp.stat(str(d))
                except FileNotFoundError:
                    sftp.mkdir(str(d))
            tmp = f"{parent}/.{PurePosixPath(remote).name}.{id(self)}.tmp"
            sftp.put(str(local), tmp)
            sftp.chmod(tmp, local.stat().st_mode & 0o7777)
            sftp.posix_rename(tmp, remote)
        except (SSHException, OSError, EOFError) as e:
            lost = self._conn is None or not self._conn.is_connected
            if lost:
                self._drop()
            what = "connection lost" if lost else "failed"
            raise HostError(f"{where}: copying {local} to {remote} {what}: {one_line(e)}") from None


class _SpawnedChannel:
    def __init__(self, chan: Channel) -> None:
        self._chan = chan

    def finish(self, text: str, timeout: float) -> int | None:
        try:
            self._chan.sendall(text.encode())
            self._chan.shutdown_write()
            if not self._chan.status_event.wait(timeout):
                return None
            return self._chan.recv_exit_status()
        except (SSHException, OSError, EOFError):
            return None
        finally:
            self._chan.close()
