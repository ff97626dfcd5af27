"""Known hosts the usual ways: --known-hosts FILE > RUNNER_KNOWN_HOSTS > the inventory's UserKnownHostsFile,
and a known_hosts file that is missing or not one is refused in one line (exit 2) before anything runs.
No host is contacted: the inventories name addresses nobody connects to."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from runner.cli import build_parser, main
from runner.errors import UsageError
from runner.execution.campaign import resolve_hosts
from runner.hosts.ssh import check_known_hosts_file
from runner.matrix.load import load_matrix
from runner.provision.ansible import ssh_args_with
from runner.provision.inventory import check_known_hosts, load_inventory
from tests.test_hostile_input import one_line_error

KEY = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(32)).decode()
GOOD = f"""\
# lab hosts
192.0.2.1 ssh-ed25519 {KEY}
[192.0.2.2]:2222,n2 ssh-ed25519 {KEY} a comment
|1|c2FsdA==|aGFzaA== ssh-ed25519 {KEY}
@cert-authority *.lab.example ssh-ed25519 {KEY}
192.0.2.3 sk-ssh-ed25519@openssh.com {KEY}

"""


def inventory(tmp_path: Path, known_hosts: Path | None) -> Path:
    args = f"\n        ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts}" if known_hosts else ""
    path = tmp_path / "inv" / "hosts.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        "all:\n  children:\n    lab:\n      hosts:\n        n1: {ansible_host: 192.0.2.1}\n        n2: {ansible_host: 192.0.2.2}\n"
        f"      vars:\n        ansible_user: bench{args}\n"
        "    local:\n      hosts:\n        localhost: {ansible_connection: local}\n"
    )
    return path


def matrix(tmp_path: Path, inv: Path, group: str = "lab") -> Path:
    path = tmp_path / "m.yml"
    path.write_text(
        f"campaign: kh\nhosts: {{group: {group}, inventory: {inv}}}\n"
        "workload: {name: command, params: {run: 'echo {}'}}\naxes:\n  n: [1]\nrepetitions: 1\n"
    )
    return path


def test_a_known_hosts_file_parses(tmp_path: Path) -> None:
    good = tmp_path / "known_hosts"
    good.write_text(GOOD)
    check_known_hosts_file(good)
    (tmp_path / "empty").write_text("")
    check_known_hosts_file(tmp_path / "empty")  # every key unknown: each host says so when reached


@pytest.mark.parametrize(("data", "expect"), [
    (None, "no such known_hosts file"),
    (b"\x00\x01binary", "a binary file, not a known_hosts file"),
    (b"192.0.2.1 ssh-ed25519\n", "line 1: not a known_hosts entry"),
    (f"# c\n192.0.2.1 ssh-ed25519 {KEY}\nhost ssh-rsa not*base64!\n".encode(), "line 3: the key of host is not base64"),
    (b"\xff\xfe junk\n", "not UTF-8 text"),
])
def test_a_bad_known_hosts_file_is_one_usage_error_naming_it(data: bytes | None, expect: str, tmp_path: Path) -> None:
    path = tmp_path / "kh"
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(UsageError, match=expect) as info:
        check_known_hosts_file(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_known_hosts_given_wins_over_the_inventory(tmp_path: Path) -> None:
    from_inventory, given = tmp_path / "inv_known_hosts", tmp_path / "given_known_hosts"
    from_inventory.write_text(GOOD)
    given.write_text(GOOD)
    inv = inventory(tmp_path, from_inventory)
    assert {s.known_hosts for s in load_inventory(inv).resolve("lab")} == {from_inventory}
    specs = load_inventory(inv, given).resolve("all")
    assert {s.name: s.known_hosts for s in specs} == {"n1": given, "n2": given, "localhost": None}  # local: no SSH
    assert load_inventory(inventory(tmp_path, None)).resolve("lab")[0].known_hosts is None  # ~/.ssh/known_hosts


def test_inventory_known_hosts_is_checked_before_anything_connects(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "known_hosts"
    inv = inventory(tmp_path, missing)
    specs = load_inventory(inv).resolve("lab")  # loading alone does not read it
    with pytest.raises(UsageError, match=f"{missing}: no such known_hosts file .the known_hosts file of host n1."):
        check_known_hosts(specs)
    with pytest.raises(UsageError, match="no such known_hosts file"):
        resolve_hosts(load_matrix(matrix(tmp_path, inv)))
    good = tmp_path / "kh"
    good.write_text(GOOD)
    assert {s.known_hosts for s in resolve_hosts(load_matrix(matrix(tmp_path, inv)), known_hosts=good)} == {good}


def test_option_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNNER_KNOWN_HOSTS", raising=False)
    for command in (["launch", "m.yml"], ["plan", "m.yml"], ["hosts"], ["cleanup", "c"], ["provision"]):
        assert build_parser().parse_args(command).known_hosts is None
        monkeypatch.setenv("RUNNER_KNOWN_HOSTS", "/from/env")
        assert build_parser().parse_args(command).known_hosts == Path("/from/env")
        assert build_parser().parse_args([*command, "--known-hosts", "/given"]).known_hosts == Path("/given")
        monkeypatch.delenv("RUNNER_KNOWN_HOSTS")


@pytest.mark.parametrize("command", ["launch", "plan", "hosts", "cleanup", "provision"])
def test_missing_known_hosts_is_exit_2_before_anything_runs(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "missing_known_hosts"
    inv = inventory(tmp_path, None)
    datasets = tmp_path / "ds"
    argv = {
        "launch": ["launch", str(matrix(tmp_path, inv)), "--datasets", str(datasets)],
        "plan": ["plan", str(matrix(tmp_path, inv))],
        "hosts": ["hosts", "lab", "--inventory", str(inv)],
        "cleanup": ["cleanup", "kh", "--datasets", str(datasets), "--inventory", str(inv)],
        "provision": ["provision", "--inventory", str(inv), "--limit", "lab", "--datasets", str(datasets)],
    }[command]
    (datasets / "kh" / "hosts").mkdir(parents=True)  # cleanup: the campaign ran on n1
    (datasets / "kh" / "hosts" / "n1.json").write_text("{}")
    assert main([*argv, "--known-hosts", str(missing)]) == 2
    assert one_line_error(capsys) == f"runner: {missing}: no such known_hosts file"
    monkeypatch.setenv("RUNNER_KNOWN_HOSTS", str(missing))  # the same through the environment
    assert main(argv) == 2
    assert one_line_error(capsys) == f"runner: {missing}: no such known_hosts file"
    assert sorted(p.name for p in datasets.iterdir()) == ["kh"]
    if command == "launch":  # refused before the campaign's lock, dataset or any trial
        assert sorted(p.name for p in (datasets / "kh").iterdir()) == ["hosts"]


def test_ansible_gets_the_file_before_the_inventory_args() -> None:
    args = ssh_args_with("-o ControlMaster=auto", Path("/etc/lab/known_hosts"))
    assert args == "-o ControlMaster=auto -o UserKnownHostsFile=/etc/lab/known_hosts"
    assert ssh_args_with("", Path("/my files/kh")) == "-o 'UserKnownHostsFile=\"/my files/kh\"'"
