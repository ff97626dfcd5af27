"""The shared helpers of runner.util: one rule for one-line messages, waiting for an event, a checked local
command, seconds from the environment, whether a process is alive (a zombie is not), YAML with one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.util import alive, answers_ssh, env_seconds, one_line, proc_state, run_checked, wait_until


def test_one_line() -> None:
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(ValueError()) == "ValueError"
    assert one_line("x" * 400) == "x" * 297 + "..."
    assert one_line("x" * 400, limit=10) == "xxxxxxx..."
    assert one_line(3) == "3"


def test_wait_until_returns_the_value_or_none_at_the_deadline() -> None:
    calls: list[int] = []
    assert wait_until(lambda: calls.append(1) or (len(calls) >= 3 and "ready"), 60, interval=0.001) == "ready"
    assert wait_until(lambda: False, 0) is None  # asked once even with no time left
    late = threading.Event()
    threading.Timer(0.05, late.set).start()
    assert wait_until(late.is_set, 60, interval=0.01) is True


def test_run_checked() -> None:
    assert run_checked(["echo", "hi"], timeout=30, what="echo").stdout == "hi\n"
    with pytest.raises(UsageError, match=r"^tool failed: bad$"):
        run_checked(["sh", "-c", "echo ok; echo bad >&2; exit 3"], timeout=30, what="tool", error=UsageError)
    with pytest.raises(RuntimeError, match=r"^sleeper did not finish within 0.2 s$"):
        run_checked(["sleep", "30"], timeout=0.2, what="sleeper")
    with pytest.raises(RuntimeError, match=r"^nothing failed: .*No such file"):
        run_checked(["/nonexistent/tool"], timeout=5, what="nothing")


@pytest.mark.parametrize(("raw", "expect"), [(None, 7.0), ("", 7.0), ("2.5", 2.5), ("300", 300.0)])
def test_env_seconds(raw: str | None, expect: float, monkeypatch: pytest.MonkeyPatch) -> None:
    if raw is None:
        monkeypatch.delenv("RUNNER_TEST_S", raising=False)
    else:
        monkeypatch.setenv("RUNNER_TEST_S", raw)
    assert env_seconds("RUNNER_TEST_S", 7.0) == expect


@pytest.mark.parametrize(("raw", "why"), [("soon", "is not a number of seconds"), ("0", "must be a number of seconds > 0"),
                                          ("-1", "> 0"), ("nan", "> 0"), ("inf", "> 0")])
def test_env_seconds_refuses_with_one_line(raw: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_TEST_S", raw)
    with pytest.raises(UsageError, match=why) as info:
        env_seconds("RUNNER_TEST_S", 7.0)
    assert str(info.value).startswith(f"RUNNER_TEST_S={raw!r}") and "\n" not in str(info.value)


def test_alive_and_a_zombie_is_not() -> None:
    assert alive(os.getpid())
    assert not alive(0) and not alive(-1)
    child = subprocess.Popen(["true"])
    stat = Path(f"/proc/{child.pid}/stat")
    assert wait_until(lambda: proc_state(stat.read_text()) == "Z", 60)  # exited, not reaped: a zombie
    assert not alive(child.pid)
    child.wait()
    assert not alive(child.pid)
    assert proc_state("42 (a (b) c) S 1 2") == "S"


def test_answers_ssh() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def serve(banner: bytes) -> None:
            conn, _ = server.accept()
            conn.sendall(banner)
            conn.close()

        for banner, expect in ((b"SSH-2.0-OpenSSH_9.2\r\n", True), (b"HTTP/1.0 400\r\n", False)):
            t = threading.Thread(target=serve, args=(banner,))
            t.start()
            assert answers_ssh(lambda: socket.create_connection(("127.0.0.1", port), timeout=5)) is expect
            t.join()
    assert answers_ssh(lambda: socket.create_connection(("127.0.0.1", port), timeout=5)) is False  # closed: refused
