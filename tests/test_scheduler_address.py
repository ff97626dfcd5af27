"""`--scheduler` pointing to nothing or to something that is not a Dask scheduler: one line, exit 2, before
any trial. The servers are tiny TCP servers on 127.0.0.1 started by the tests."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import UsageError
from runner.execution.cluster import check_scheduler
from tests.test_hostile_input import one_line_error

PROJECT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """start(handler) -> tcp://127.0.0.1:PORT where every connection is given to handler(conn)."""
    listeners: list[socket.socket] = []
    conns: list[socket.socket] = []

    def start(handler: Callable[[socket.socket], None]) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        listeners.append(sock)

        def serve() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                conns.append(conn)
                try:
                    handler(conn)
                except OSError:
                    pass

        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for s in listeners + conns:
        s.close()


def http(conn: socket.socket) -> None:
    conn.settimeout(1)
    try:
        conn.recv(1024)
    except OSError:
        pass
    conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    conn.close()


def ssh_banner(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")  # then waits for the client's banner


def silent(conn: socket.socket) -> None:
    pass  # accepts and says nothing


def huge_frame(conn: socket.socket) -> None:
    conn.sendall(struct.pack("<Q", 1 << 40))  # a length no Dask handshake has


def test_nothing_listening() -> None:
    address = f"tcp://127.0.0.1:{closed_port()}"
    with pytest.raises(UsageError, match=f"cannot reach the Dask scheduler at {address}: Connection refused; is `dask scheduler` running there"):
        check_scheduler(address, 2)
    bare = address.removeprefix("tcp://")  # HOST:PORT, as Dask also accepts
    with pytest.raises(UsageError, match="Connection refused"):
        check_scheduler(bare, 2)


@pytest.mark.parametrize("handler", [http, ssh_banner, silent, huge_frame])
def test_a_port_that_speaks_something_else(handler, server) -> None:
    address = server(handler)
    started = time.monotonic()
    with pytest.raises(UsageError, match=f"{address} does not speak Dask's protocol") as info:
        check_scheduler(address, 1.0)
    assert "\n" not in str(info.value)
    # silent and ssh_banner never answer and hold the connection until the test ends: only the check's own 1 s
    # timeout ends it, well inside 60 s however loaded the machine is
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(("address", "expect"), [
    ("nonsense", "--scheduler 'nonsense' is not a scheduler address; allowed: tcp://HOST:PORT or HOST:PORT"),
    ("tcp://127.0.0.1", "is not a scheduler address"),
    ("127.0.0.1:", "is not a scheduler address"),
    ("tcp://:8786", "is not a scheduler address"),
    ("127.0.0.1:99999", "is not a scheduler address"),
    ("127.0.0.1:８７８６", "is not a scheduler address"),  # digits, but not ASCII ones
    ("htp://127.0.0.1:8786", "unknown protocol 'htp'; known: inproc, "),
])
def test_what_is_not_an_address_is_refused_before_connecting(address: str, expect: str) -> None:
    with pytest.raises(UsageError) as info:
        check_scheduler(address, 1.0)
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_other_protocols_are_left_to_dask() -> None:
    check_scheduler("tls://127.0.0.1:1", 0.5)
    check_scheduler("inproc://x", 0.5)


@pytest.mark.parametrize("kind", ["closed", "http"])
def test_launch_with_a_bad_scheduler_is_exit_2_before_any_trial(kind: str, server, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    matrix = tmp_path / "m.yml"
    matrix.write_text(
        f"campaign: sched-bad\nhosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        "workload: {name: command, params: {run: 'echo {}'}}\naxes:\n  n: [1]\nrepetitions: 1\n"
    )
    address = f"tcp://127.0.0.1:{closed_port()}" if kind == "closed" else server(http)
    datasets = tmp_path / "ds"
    assert main(["launch", str(matrix), "--datasets", str(datasets), "--scheduler", address, "--quiet"]) == 2
    line = one_line_error(capsys)
    assert line.startswith("runner: ") and address in line
    assert not datasets.exists()  # no dataset, no hold, no trial
