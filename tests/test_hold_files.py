"""A hold file is only ever a hold file (issue 20): a `runner_hold_path` that names anything else (a config, a
directory, a link, a large file) is refused with one line and left untouched, by every hold operation and by a
launch; the inventory variable is read and checked by load_inventory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import UsageError
from runner.hosts.local import LocalHost
from runner.lab.reservations import acquire, force_release, hold_hosts, hold_paths, status
from runner.provision.inventory import load_inventory

CONFIG = "# sshd_config\nPermitRootLogin no\nPort 22\n"


def _other_files(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "sshd_config"
    config.write_text(CONFIG)
    old = tmp_path / "old-config"
    os.utime(config, (1, 1))  # older than any TTL: an expired hold, were it one
    old.write_text(CONFIG)
    os.utime(old, (1, 1))
    link = tmp_path / "link.json"
    link.symlink_to(config)
    directory = tmp_path / "dir"
    directory.mkdir()
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"owner": "a", "token": "b", "pad": "x" * 10_000}))
    empty = tmp_path / "empty"
    empty.write_text("")
    return {"config": config, "old": old, "link": link, "directory": directory, "big": big, "empty": empty}


def _snapshot(path: Path) -> tuple:
    st = os.lstat(path)
    return (st.st_mode, st.st_mtime_ns, None if path.is_dir() or path.is_symlink() else path.read_bytes(),
            os.readlink(path) if path.is_symlink() else None)


@pytest.mark.parametrize("kind", ["config", "old", "link", "directory", "big", "empty"])
def test_every_operation_refuses_a_path_that_is_not_a_hold_file(kind: str, tmp_path: Path) -> None:
    path = _other_files(tmp_path)[kind]
    before = _snapshot(path)
    host = LocalHost("h")
    for op in (lambda: acquire(host, "me@ctl", "c", 60, path=str(path)), lambda: status(host, path=str(path)),
               lambda: force_release(host, path=str(path))):
        with pytest.raises(UsageError, match=rf"host h: hold \w+ refused: {path}: .*not a hold file; left untouched"):
            op()
        assert _snapshot(path) == before
    with pytest.raises(UsageError, match="not a hold file"), hold_hosts([host], "me@ctl", "c", paths={"h": str(path)}):
        pass
    assert _snapshot(path) == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_real_hold_still_works_beside_the_checks(tmp_path: Path) -> None:
    path = str(tmp_path / "holds" / "hold.json")
    hold = acquire(LocalHost("h"), "me@ctl", "c", 60, path=path)
    assert status(LocalHost("h"), path=path).token == hold.token
    hold.release()
    assert status(LocalHost("h"), path=path) is None


def _inventory(tmp_path: Path, hold: str) -> Path:
    inv = tmp_path / "inventory.yml"
    inv.write_text(f"all:\n  children:\n    local:\n      hosts:\n        localhost:\n          ansible_connection: local\n"
                   f"          runner_hold_path: {json.dumps(hold)}\n")
    return inv


def test_the_inventory_gives_and_checks_the_hold_path(tmp_path: Path) -> None:
    inv = _inventory(tmp_path, str(tmp_path / "h.json"))
    assert load_inventory(inv).hosts["localhost"].hold_path == str(tmp_path / "h.json")
    assert hold_paths(inv) == {"localhost": str(tmp_path / "h.json")}
    for bad in ("relative/hold.json", "/var/lib/runner/holds/"):
        with pytest.raises(UsageError, match=r"host localhost: runner_hold_path .* is not the full path of a file"):
            load_inventory(_inventory(tmp_path, bad))


def test_a_launch_refuses_a_hold_path_naming_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _other_files(tmp_path)["old"]
    before = _snapshot(config)
    inv = _inventory(tmp_path, str(config))
    matrix = tmp_path / "m.yml"
    matrix.write_text(f"campaign: m\nhosts: {{group: local, inventory: {inv}}}\n"
                      "workload: {name: command, params: {run: 'echo {\\\"v\\\": 1}'}}\naxes: {n: [1]}\nrepetitions: 1\ntimeout: 30\n")
    assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{config}: a file of other content, not a hold file; left untouched" in err
    assert _snapshot(config) == before


def test_the_default_hold_directory_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_HOLD_DIR", str(tmp_path / "mine"))
    hold = acquire(LocalHost("h"), "me@ctl", "c", 60)
    assert Path(hold.path).parent == tmp_path / "mine" and Path(hold.path).is_file()
    hold.release()
    monkeypatch.setenv("RUNNER_HOLD_DIR", "relative/holds")
    with pytest.raises(UsageError, match="RUNNER_HOLD_DIR='relative/holds': not the full path of a directory"):
        acquire(LocalHost("h"), "me@ctl", "c", 60)
