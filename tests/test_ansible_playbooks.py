"""The playbooks, run for real by ansible-playbook (through run_playbook) against this machine.

Tuning runs only in --check mode here: this machine's /sys is never changed. Restore runs for real, but
on a state file that names files under tmp_path.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from runner.cli import main
from runner.errors import ProvisionError
from runner.provision.ansible import KEEP_RUNS, TaskEvent, provision, run_playbook
from runner.provision.fingerprint import load_facts

pytestmark = pytest.mark.integration
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
LOCKBENCH_C = Path(__file__).resolve().parents[1] / "runner" / "workloads" / "lockbench" / "lockbench.c"


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    path.write_text(yaml.safe_dump({"all": {"children": {"local": {"hosts": {"localhost": host}}}}}))
    return path


def test_provision_stores_facts_builds_lockbench_and_is_idempotent(inventory, tmp_path):
    lb_dir = tmp_path / "lockbench"
    events: list[TaskEvent] = []
    kwargs = {"prepare_vars": {"lockbench_dir": str(lb_dir)}, "private_data_root": tmp_path / "runs"}
    first = provision("local", inventory, tmp_path / "out", on_event=events.append, **kwargs)
    assert first.hosts == ("localhost",)
    facts = load_facts(tmp_path / "out" / "hosts" / "localhost.json")
    assert facts["cpu"]["threads"] >= 1
    assert first.summaries["localhost"]["cores"] == facts["cpu"]["cores"]
    assert (lb_dir / "lockbench").stat().st_mode & 0o111
    assert (lb_dir / "lockbench.c").read_bytes() == LOCKBENCH_C.read_bytes()
    assert any(e.status == "changed" and e.task == "Build lockbench" for e in events)

    second = provision("local", inventory, tmp_path / "out", **kwargs)
    assert [r.changed for r in second.results] == [0, 0]
    assert second.tuning_changes == {"localhost": ()}
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) <= KEEP_RUNS
    assert not [p for p in (tmp_path / "runs").rglob("job_events/*")]


def check_mode_knobs(state_dir: Path) -> dict:
    """Knobs that would change this machine (THP at least), for check-mode runs that must change nothing."""
    return {"host_tuning_governor": "performance", "host_tuning_turbo": False, "host_tuning_smt": "off",
            "host_tuning_thp": "never" if "[never]" not in THP.read_text() else "always",
            "host_tuning_state_file": str(state_dir / "state.json")}


def test_tuning_in_check_mode_changes_nothing(inventory, tmp_path):
    before = THP.read_text()
    knobs = check_mode_knobs(tmp_path / "state")
    result = run_playbook("tune.yml", inventory=inventory, extravars=knobs, check=True,
                          private_data_root=tmp_path / "runs")
    assert THP.read_text() == before
    assert not (tmp_path / "state").exists()
    report = result.data["host_tuning"]["localhost"]
    assert report["changes"] >= 1 and result.stats["localhost"].changed >= 1  # THP would change
    assert report["blocked"] == [] and report["reboot_required"] is False


def test_bad_knob_fails_with_one_line_naming_playbook_and_host(inventory, tmp_path):
    with pytest.raises(ProvisionError) as err:
        run_playbook("tune.yml", inventory=inventory, extravars={"host_tuning_smt": "maybe"},
                     private_data_root=tmp_path / "runs")
    message = str(err.value)
    assert message.startswith("playbook tune.yml failed (rc 2) on localhost: localhost: Validate the requested knobs")
    assert "\n" not in message


def test_restore_writes_back_saved_values_once(inventory, tmp_path):
    knob = tmp_path / "fake_sysfs_knob"
    knob.write_text("performance\n")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"version": 1, "sysfs": {str(knob): "powersave"}, "services": [], "modules": {},
                                 "cmdline_add": []}))
    extravars = {"host_tuning_state_file": str(state), "host_tuning_grub_file": str(tmp_path / "grub.cfg"),
                 "host_tuning_modprobe_file": str(tmp_path / "modprobe.conf")}
    first = run_playbook("restore.yml", inventory=inventory, extravars=extravars, private_data_root=tmp_path / "r")
    assert knob.read_text() == "powersave"
    assert not state.exists() and first.changed == 2  # the value and the removed state file
    second = run_playbook("restore.yml", inventory=inventory, extravars=extravars, private_data_root=tmp_path / "r")
    assert second.changed == 0


def test_gmake_prep_unpacks_a_tarball_once(inventory, tmp_path):
    tree = tmp_path / "linux-9.9"
    tree.mkdir()
    (tree / "Makefile").write_text("vmlinux:\n\ttrue\n")
    tarball = tmp_path / "linux-9.9.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tree, arcname="linux-9.9")
    extravars = {"runner_prepare_gmake": True, "gmake_prep_source": "tarball", "gmake_prep_tarball": str(tarball),
                 "gmake_prep_cache_dir": str(tmp_path / "cache"), "gmake_prep_packages": ["make", "gcc"],
                 "lockbench_dir": str(tmp_path / "lb")}
    run_playbook("prepare.yml", inventory=inventory, extravars=extravars, private_data_root=tmp_path / "runs")
    assert (tmp_path / "cache" / "linux-9.9" / "Makefile").is_file()
    again = run_playbook("prepare.yml", inventory=inventory, extravars=extravars, private_data_root=tmp_path / "runs")
    assert again.changed == 0


def test_cli_refuses_a_bad_tune_file_before_running_ansible(inventory, tmp_path, capsys):
    tune = tmp_path / "tune.yml"
    tune.write_text("govenor: performance\n")
    rc = main(["provision", "--inventory", str(inventory), "--tune", str(tune), "--datasets", str(tmp_path / "out")])
    assert rc == 2
    assert f"runner: {tune}: unknown knob 'govenor'; known: governor" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["provision", "--help"])
    assert "runner provision --limit lab --tune tune.yml --check" in capsys.readouterr().out
