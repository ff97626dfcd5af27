"""SSHHost against real sshds in network namespaces, plus the pure remote command line."""

from __future__ import annotations

import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from runner.errors import HostError, UsageError
from runner.hosts.ssh import HANGUP_WRAPPER, HostSpec, SSHHost, remote_command
from runner.provision.inventory import connect, load_inventory
from runner.testing.testbed import TestBed, TestHost
from tests.events import wait_for

netns = [pytest.mark.netns, pytest.mark.integration]


def spec_of(bed: TestBed, host: TestHost | str = "tb1", **changes) -> HostSpec:
    h = bed.host(host)
    spec = HostSpec(h.name, h.address, h.port, "root", bed.key_path, bed.known_hosts, connect_timeout=3)
    return replace(spec, **changes)


def processes_in(bed: TestBed, host: str, comm: str) -> list[int]:
    pids = subprocess.run(["ip", "netns", "pids", bed.host(host).netns], capture_output=True, text=True).stdout
    found = []
    for pid in pids.split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                found.append(int(pid))
        except OSError:
            pass
    return found


def when_running(bed: TestBed, host: str, comm: str, action) -> threading.Thread:  # noqa: ANN001
    """Run `action` (in a thread; join it) once a process named `comm` runs in `host`'s namespace: the
    command under test has started there, however busy the machine is."""

    def watch() -> None:
        wait_for(lambda: processes_in(bed, host, comm), 60)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def command_running(bed: TestBed, host: str, text: str) -> bool:
    """Whether a process in `host`'s namespace has `text` in its command line."""
    pids = subprocess.run(["ip", "netns", "pids", bed.host(host).netns], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


# ----- the command line (pure) -----------------------------------------------------------------------
def test_remote_command_quotes_argv_cwd_and_env():
    argv = ["echo", "$(touch /x);`id`;|&", "a b", "'q'"]
    line = remote_command(argv, 2.5, 5, cwd="/tmp/a dir", env={"X": "$HOME 'y'"})
    assert shlex.split(line) == [
        "cd", "/tmp/a dir", "&&", "exec", "sh", "-c", HANGUP_WRAPPER, "runner-run",
        "env", "X=$HOME 'y'", "timeout", "-k", "5", "2.5", *argv,
    ]


def test_remote_command_refuses_bad_input():
    with pytest.raises(UsageError, match="empty argv"):
        remote_command([], 1, 5)
    with pytest.raises(UsageError, match="timeout"):
        remote_command(["true"], 0, 5)
    with pytest.raises(UsageError, match="'A;B'"):
        remote_command(["true"], 1, 5, env={"A;B": "x"})


# ----- against the test bed --------------------------------------------------------------------------
@pytest.mark.parametrize("_", [None], ids=["metachars"])
@pytest.mark.netns
@pytest.mark.integration
def test_argv_with_shell_metacharacters_comes_back_verbatim(testbed, tmp_path, _):
    marker = tmp_path / "pwned"
    weird = [f"$(touch {marker});`touch {marker}`;|& >{marker}", "*", "a  b", "'\"", "\\n"]
    with SSHHost(spec_of(testbed)) as host:
        result = host.run(["printf", "%s\\n", *weird], timeout=10)
    assert result.ok, result.stderr
    assert result.stdout == "".join(w + "\n" for w in weird)
    assert not marker.exists()


@pytest.mark.netns
@pytest.mark.integration
def test_exit_code_stderr_cwd_and_env_pass_through(testbed, tmp_path):
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    with SSHHost(spec_of(testbed, "tb2")) as host:
        failed = host.run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=10)
        assert (failed.rc, failed.stdout, failed.stderr, failed.timed_out) == (7, "out\n", "err\n", False)
        here = host.run(["sh", "-c", 'pwd; printf "%s" "$V"'], timeout=10, cwd=str(workdir), env={"V": "$(id) 'x'"})
    assert here.ok and here.stdout == f"{workdir}\n$(id) 'x'"


@pytest.mark.netns
@pytest.mark.integration
def test_timeout_kills_the_remote_command(testbed):
    # The local limit (timeout + kill_after + grace = 121 s) and the command's own end (300 s) are far away, so
    # only the remote `timeout` (1 s) can end the command well inside 60 s, however loaded the machine is; the
    # local limit would also raise a HostError ("no answer ..."), not return a result.
    with SSHHost(spec_of(testbed, "tb3"), kill_after=60, grace=60) as host:
        start = time.monotonic()
        result = host.run(["sleep", "300"], timeout=1)
        elapsed = time.monotonic() - start
        assert result.timed_out and result.rc in (124, 137)
        assert elapsed < 60  # ended by the remote `timeout`, not by the local limit
        assert processes_in(testbed, "tb3", "sleep") == []
        assert host.run(["true"], timeout=5).ok  # the connection survives a timed-out command


KILLED_CONTROLLER = """
import sys
from runner.hosts.ssh import HostSpec, SSHHost
from runner.provision.inventory import load_inventory

spec = load_inventory(sys.argv[1]).resolve("tb2")[0]
host = SSHHost(spec)
host.run(["true"], timeout=10)
print("connected", flush=True)
host.run(["sleep", "297"], timeout=600)
"""


@pytest.mark.netns
@pytest.mark.integration
def test_remote_workload_dies_with_its_controller(testbed):
    # A controller killed with SIGKILL mid-command: the remote workload stops within seconds, not when its
    # (here 600 s) timeout would end it, so a relaunch never measures beside a leftover.
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CONTROLLER, str(testbed.inventory_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "connected"
        wait_for(lambda: processes_in(testbed, "tb2", "sleep"), 10)
        assert processes_in(testbed, "tb2", "sleep"), "the remote sleep never started"
    finally:
        proc.kill()
        proc.communicate()
    wait_for(lambda: not processes_in(testbed, "tb2", "sleep"), 10)
    assert processes_in(testbed, "tb2", "sleep") == []


@pytest.mark.netns
@pytest.mark.integration
def test_put_creates_parents_and_keeps_mode(testbed, tmp_path):
    src = tmp_path / "tool.sh"
    src.write_text("#!/bin/sh\necho tool\n")
    src.chmod(0o750)
    dest = tmp_path / "remote" / "a" / "b" / "tool.sh"  # the namespaces share this filesystem
    with SSHHost(spec_of(testbed)) as host:
        host.put(src, str(dest))
        assert host.run([str(dest)], timeout=10).stdout == "tool\n"
        with pytest.raises(UsageError, match="no such local file"):
            host.put(tmp_path / "missing", str(dest))
    assert dest.read_text() == src.read_text()
    assert dest.stat().st_mode & 0o777 == 0o750


@pytest.mark.netns
@pytest.mark.integration
def test_one_connection_is_reused_and_shared_by_threads(testbed):
    with SSHHost(spec_of(testbed)) as host:
        ports = {host.run(["sh", "-c", "echo $SSH_CLIENT"], timeout=10).stdout.split()[1] for _ in range(20)}
        assert len(ports) == 1  # same client port: one TCP connection for all 20 runs
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: host.run(["echo", str(i)], timeout=10), range(8)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]


@pytest.mark.netns
@pytest.mark.integration
def test_round_trip_over_persistent_connection(testbed):
    """50 commands back to back ride the one connection the first opened: no reconnect, no new TCP connection.
    How fast a round trip is, is measured (not asserted) by bench/fanout_bench.py (per-trial overhead over SSH);
    the median is printed here for information only."""
    with SSHHost(spec_of(testbed)) as host:
        first = host.run(["sh", "-c", "echo $SSH_CLIENT"], timeout=10)
        conn = host._conn
        times, ports = [], set()
        for _ in range(50):
            t = time.perf_counter()
            result = host.run(["sh", "-c", "echo $SSH_CLIENT"], timeout=10)
            times.append(time.perf_counter() - t)
            assert result.ok, result.stderr
            ports.add(result.stdout.split()[1])
            assert host._conn is conn  # the same connection object after every run: never dropped and reopened
    print(f"ssh round trip of run() over one connection: median {statistics.median(times) * 1000:.1f} ms of 50")
    assert ports == {first.stdout.split()[1]}  # sshd saw every command come from the first command's client port


@pytest.mark.netns
@pytest.mark.integration
def test_inventory_specs_connect_to_every_host(testbed):
    specs = load_inventory(testbed.inventory_path).resolve("testbed")
    assert [s.known_hosts for s in specs] == [testbed.known_hosts] * 3
    for spec, h in zip(specs, testbed.hosts, strict=True):
        with connect(spec) as host:
            assert host.run(["sh", "-c", "echo $SSH_CONNECTION"], timeout=10).stdout.split()[2] == h.address


@pytest.mark.netns
@pytest.mark.integration
def test_unknown_and_changed_host_keys_are_refused(testbed, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostError, match=r"host tb1 \(.*\): unknown host key") as unknown:
        SSHHost(spec_of(testbed, known_hosts=empty)).run(["true"], timeout=5)
    wrong = tmp_path / "wrong_known_hosts"  # tb1's address with tb2's key
    tb2_key = testbed.known_hosts.read_text().splitlines()[1].split(" ", 1)[1]
    wrong.write_text(f"{testbed.hosts[0].address} {tb2_key}\n")
    with pytest.raises(HostError, match=r"host tb1 \(.*\): host key changed") as changed:
        SSHHost(spec_of(testbed, known_hosts=wrong)).run(["true"], timeout=5)
    assert "\n" not in str(unknown.value) + str(changed.value)


@pytest.mark.netns
@pytest.mark.integration
def test_wrong_or_missing_client_key_is_a_host_error(testbed, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(HostError, match=r"host tb1 \(.*\): login refused for user root"):
        SSHHost(spec_of(testbed, key_file=other)).run(["true"], timeout=5)
    with pytest.raises(HostError, match=r"host tb1 \(.*\): key file .* does not exist"):
        SSHHost(spec_of(testbed, key_file=tmp_path / "nope")).run(["true"], timeout=5)


@pytest.mark.netns
@pytest.mark.integration
def test_unreachable_host_fails_within_connect_timeout(make_testbed):
    bed = make_testbed(1)
    bed.link_down("tb1")
    start = time.monotonic()
    # The message names the connect timeout handed to paramiko: the given 1 s, not the default (10 s). The clock
    # only shows that the connect timeout ended it, far from TCP's own give-up on SYNs to a dead link (~2 min).
    with pytest.raises(HostError, match=r"host tb1 \(.*\): unreachable: no answer within 1 s"):
        SSHHost(spec_of(bed, connect_timeout=1)).run(["true"], timeout=300)
    assert HostSpec.connect_timeout != 1
    assert time.monotonic() - start < 60


@pytest.mark.netns
@pytest.mark.integration
def test_link_down_mid_command_raises_within_bounds_then_recovers(make_testbed):
    bed = make_testbed(1)
    host = SSHHost(spec_of(bed), kill_after=1, grace=1)
    with host:
        assert host.run(["true"], timeout=5).ok
        cut = when_running(bed, "tb1", "sleep", lambda: bed.link_down("tb1"))
        start = time.monotonic()
        with pytest.raises(HostError, match=r"host tb1 \(.*\): no answer 4 s after starting sleep"):
            host.run(["sleep", "600"], timeout=2)  # the limit: timeout 2 + kill_after 1 + grace 1
        assert 4 <= time.monotonic() - start < 300  # at the limit, not before it nor at the command's own end (600 s)
        cut.join()
        wait_for(lambda: not processes_in(bed, "tb1", "sleep"), 60)  # the remote `timeout` stops the workload without us (at 2 s; waited for)
        assert processes_in(bed, "tb1", "sleep") == []
        bed.link_up("tb1")
        assert host.run(["echo", "back"], timeout=5).stdout == "back\n"  # reconnects by itself


@pytest.mark.netns
@pytest.mark.integration
def test_killed_sshd_is_a_host_error_and_a_restart_reconnects(make_testbed):
    bed = make_testbed(1)
    with SSHHost(spec_of(bed)) as host:
        assert host.run(["true"], timeout=5).ok
        bed.kill_sshd("tb1")
        with pytest.raises(HostError, match=r"host tb1 \(.*\): (cannot connect|cannot open a session)"):
            host.run(["true"], timeout=5)
        bed.start_sshd("tb1")
        assert host.run(["echo", "again"], timeout=5).stdout == "again\n"


@pytest.mark.netns
@pytest.mark.integration
def test_sshd_killed_mid_command_is_a_host_error(make_testbed):
    bed = make_testbed(1)
    # The command's timeout (120 s), its end (600 s) and the no-answer limit (120 + 60 + 60 s) are far away: only
    # the lost connection can end the run well inside 100 s, however loaded the machine is.
    with SSHHost(spec_of(bed), kill_after=60, grace=60) as host:
        kill = when_running(bed, "tb1", "sleep", lambda: bed.kill_sshd("tb1"))
        start = time.monotonic()
        with pytest.raises(HostError, match=r"host tb1 \(.*\): connection lost while running sleep"):
            host.run(["sleep", "600"], timeout=120)  # (a kill after its timeout would give a timed-out result)
        assert time.monotonic() - start < 100  # at once, not at the command's timeout nor at the no-answer limit
        kill.join()


# ----- jumping through a host, and its dead man's switch ----------------------------------------------
@pytest.mark.netns
@pytest.mark.integration
def test_ssh_through_another_host_and_its_spawned_guard(testbed: TestBed, tmp_path: Path) -> None:
    """tb2 reached through tb1's connection (a direct-tcpip channel, like ProxyJump), with tb2's pinned
    host key checked; a wrong key is refused. A command spawned on tb1 runs its cleanup when tb1's
    connection dies, and does nothing when told "done"."""
    hop = SSHHost(spec_of(testbed, "tb1"))
    target = SSHHost(spec_of(testbed, "tb2"), via=hop)
    try:
        assert target.run(["hostname", "-I"], timeout=20).stdout.split()[0] == testbed.host("tb2").address
        chan = hop.open_channel(testbed.host("tb2").address, 22)
        chan.settimeout(10)
        assert chan.recv(64).startswith(b"SSH-")
        chan.close()
        with pytest.raises(ConnectionRefusedError, match="cannot connect"):
            hop.open_channel(testbed.host("tb2").address, 1)  # nothing listens there
        wrong = tmp_path / "known_hosts"
        wrong.write_text(f"{testbed.host('tb2').address} {testbed._host_pubkey(testbed.host('tb1'))}\n")
        with pytest.raises(HostError, match="host key changed"):
            SSHHost(spec_of(testbed, "tb2", known_hosts=wrong), via=hop).run(["true"], timeout=10)
        marker = tmp_path / "guard-ran"
        guard = hop.spawn(["sh", "-c", 'read -r l; [ "$l" = done ] || touch "$1"', "g", str(marker)])
        assert guard.finish("done\n", timeout=10) == 0 and not marker.exists()
        guard = hop.spawn(["sh", "-c", 'read -r l; [ "$l" = done ] || touch "$1"', "g", str(marker)])
        # the guard runs on tb1, reading its stdin
        assert wait_for(lambda: command_running(testbed, "tb1", str(marker)), 30), "the guard never started on tb1"
    finally:
        target.close()
        hop.close()  # the connection goes: the guard's stdin ends and it cleans up
    wait_for(lambda: marker.exists(), 10)
    assert marker.exists()


@pytest.mark.integration
def test_a_host_that_sends_no_banner_is_one_error_without_paramikos_traceback(tmp_path, caplog):
    """A listener on loopback that accepts and never speaks SSH (a dom0 too busy to answer): the connection
    fails as one HostError; paramiko's transport thread, which also logs the exception and then its traceback
    line by line (seen in a campaign's output), is kept quiet: the runner's line says it."""
    import logging
    import socket

    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text("")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        caplog.set_level(logging.DEBUG, logger="paramiko")
        with pytest.raises(HostError, match=r"^host silent \(root@127\.0\.0\.1:\d+\): "):
            SSHHost(HostSpec("silent", "127.0.0.1", port, "root", key, known, connect_timeout=1)).run(["true"], timeout=5)
        # the transport thread gives up on the banner by itself, then logs: wait for it to end
        wait_for(lambda: not [t for t in threading.enumerate() if type(t).__name__ == "Transport"], 60)
    assert any(r.getMessage().startswith("starting thread") for r in caplog.records)  # paramiko's log was captured
    shown = [r.getMessage() for r in caplog.records if r.name.startswith("paramiko") and r.levelno >= logging.ERROR]
    assert shown == []
