"""The roles as an Ansible collection (issue 23): runner.lab builds from playbooks/ and installs offline with
ansible-galaxy; its roles run from a plain ansible-playbook, with a Python path on which `import runner`
fails, against test-bed hosts over SSH; check mode writes nothing, neither the role nor `runner provision`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from runner.cli import main
from tests.test_ansible_playbooks import THP, check_mode_knobs

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((PROJECT / "playbooks" / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"


def outside_env(where: Path) -> dict[str, str]:
    """ansible-galaxy as on a machine without this repository: no ansible.cfg of the project (whose
    collections_path already holds runner.lab, through its link), run from `where`."""
    cfg = where / "galaxy.cfg"
    cfg.write_text(f"[defaults]\ncollections_path = {where / 'none'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**env, "ANSIBLE_CONFIG": str(cfg)}


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(PROJECT / "playbooks"), "--output-path", str(out)],
                   check=True, capture_output=True, text=True, timeout=300, cwd=out, env=outside_env(out))
    (tarball,) = out.glob("*.tar.gz")
    return tarball


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection built from the repository and installed, offline, into a directory of its own."""
    root = tmp_path_factory.mktemp("collection")
    tarball = build(root / "dist")
    done = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", str(tarball), "-p", str(root / "collections")],
                          capture_output=True, text=True, timeout=300, cwd=root, env=outside_env(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "collections" / "ansible_collections" / "runner" / "lab" / "MANIFEST.json").is_file(), done.stdout
    return root / "collections"


def test_the_archive_holds_the_roles_and_nothing_of_runner(tmp_path: Path) -> None:
    with tarfile.open(build(tmp_path)) as tar:
        names = set(tar.getnames())
    for role in ("host_facts", "host_tuning", "lockbench", "gmake_prep", "guest_kvm", "guest_xen"):
        assert f"roles/{role}/tasks/main.yml" in names
    assert {"plugins/filter/host_tuning.py", "plugins/modules/sysfs_value.py", "meta/runtime.yml"} <= names
    assert not [n for n in names if n.startswith("runner/") or "__pycache__" in n or n.endswith(".pyc")]


def test_the_filter_plugin_imports_nothing_of_runner() -> None:
    source = (PROJECT / "playbooks" / "plugins" / "filter" / "host_tuning.py").read_text()
    assert "import runner" not in source and "from runner" not in source and "sys.path" not in source


def plain_ansible(tmp_path: Path, collections: Path) -> dict[str, str]:
    """The environment of a user's ansible-playbook: the venv's Ansible, no project ansible.cfg or roles path,
    and a Python path on which `import runner` fails (a package of that name that refuses to load)."""
    poison = tmp_path / "poison" / "runner"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text('raise ImportError("runner is not installed here")\n')
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text(f"[defaults]\ncollections_path = {collections}\nroles_path = {tmp_path / 'no-roles'}\n"
                   "host_key_checking = True\ngathering = explicit\ninterpreter_python = auto_silent\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "RUNNER_", "PYTHON"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(tmp_path / "poison"), ANSIBLE_CONFIG=str(cfg))
    probe = subprocess.run([sys.executable, "-c", "import runner"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "runner is not installed here" in probe.stderr  # the controller cannot import runner
    return env


def playbook(tmp_path: Path, name: str, plays: list[dict]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


@pytest.mark.integration
@pytest.mark.netns
def test_host_facts_from_the_installed_collection_over_ssh(installed: Path, testbed, tmp_path: Path) -> None:  # noqa: ANN001
    env = plain_ansible(tmp_path, installed)
    dest = tmp_path / "facts"
    play = playbook(tmp_path, "facts.yml", [{"name": "Fingerprint", "hosts": "testbed", "gather_facts": False,
                                             "roles": [{"role": f"{FQCN}.host_facts", "vars": {"host_facts_dest": str(dest)}}]}])
    done = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(testbed.inventory_path), str(play)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(h.name for h in testbed.hosts)
    assert sorted(p.stem for p in dest.glob("*.json")) == names
    for name in names:
        assert json.loads((dest / f"{name}.json").read_text())["cpu"]["threads"] >= 1

    # check mode: the fingerprint is read, nothing is written on the controller
    again = tmp_path / "facts-check"
    play = playbook(tmp_path, "facts-check.yml", [{"name": "Fingerprint", "hosts": "testbed", "gather_facts": False,
                                                   "roles": [{"role": f"{FQCN}.host_facts", "vars": {"host_facts_dest": str(again)}}]}])
    done = subprocess.run([str(BIN / "ansible-playbook"), "--check", "-i", str(testbed.inventory_path), str(play)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not again.exists()


@pytest.mark.integration
@pytest.mark.netns
def test_host_tuning_filter_runs_without_runner_in_check_mode(installed: Path, testbed, tmp_path: Path) -> None:  # noqa: ANN001
    """host_tuning decides through its filter plugin on the controller: it loads without runner; check mode
    changes nothing (the test-bed hosts share this machine's /sys)."""
    env = plain_ansible(tmp_path, installed)
    before = THP.read_text()
    knobs = check_mode_knobs(tmp_path / "state")
    play = playbook(tmp_path, "tune.yml", [{"name": "Tune", "hosts": "tb1", "gather_facts": False,
                                            "roles": [{"role": f"{FQCN}.host_tuning"}]}])
    done = subprocess.run([str(BIN / "ansible-playbook"), "--check", "-i", str(testbed.inventory_path), str(play),
                           "-e", json.dumps(knobs)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert THP.read_text() == before and not (tmp_path / "state").exists()
    assert "changed=" in done.stdout and "failed=0" in done.stdout


@pytest.mark.integration
def test_provision_check_writes_nothing(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(yaml.safe_dump({"all": {"children": {"local": {"hosts": {"localhost": host}}}}}))
    tune = tmp_path / "tune.yml"
    knobs = {k.removeprefix("host_tuning_"): v for k, v in check_mode_knobs(tmp_path / "state").items() if k != "host_tuning_state_file"}
    tune.write_text(yaml.safe_dump(knobs))
    before = THP.read_text()
    datasets = tmp_path / "datasets"
    assert main(["provision", "--inventory", str(inventory), "--limit", "local", "--tune", str(tune), "--check",
                 "--datasets", str(datasets), "-q"]) == 0
    assert not datasets.exists()  # neither the fingerprints nor Ansible's run directories
    assert THP.read_text() == before
