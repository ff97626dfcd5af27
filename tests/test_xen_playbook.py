"""playbooks/guests.yml: the guest_xen role in --check mode (no Xen here), the guest_kvm role for real.

No Xen hypervisor runs on these machines: the Xen tasks are linted (tests/test_ansible_lint.py) and run in
check mode, where the xl commands are skipped; they have never created a real Xen guest. The KVM role
creates and destroys a real transient libvirt domain (TCG) and is checked for idempotence.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from runner.errors import ProvisionError
from runner.execution import environments, guests  # noqa: F401 - registers xen-hvm, xen-pv
from runner.hosts.local import LocalHost
from runner.provision import image, libvirt, xen
from runner.provision.environments import get as get_environment
from runner.provision.ansible import TaskEvent, run_playbook
from runner.provision.guest import describe_guest
from runner.provision.topology import read_topology
from runner.workloads import base
from runner.workloads.base import WorkloadContext

HERE = LocalHost()

pytestmark = pytest.mark.integration
CAMPAIGN = "pytest-playbook"


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    path.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host}}}))
    return path


def _xen_config(tmp_path: Path, env: str) -> tuple[str, Path]:
    catalog = {"default": {"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd.img", "cmdline": "console=hvc0"}}
    spec = describe_guest(env, {"vcpus": 2, "memory": 512, "guest_kernel": "default"}, read_topology(), catalog, CAMPAIGN, 0)
    cfg = tmp_path / f"{spec.name}.cfg"
    cfg.write_text(xen.xl_config(spec, get_environment(env).xl_type))
    return spec.name, cfg


@pytest.mark.skipif(shutil.which("xl") is not None, reason="this host has xl: check mode would list real Xen domains")
@pytest.mark.parametrize("state", ["present", "absent"])
def test_xen_role_in_check_mode(inventory: Path, tmp_path: Path, state: str) -> None:
    hvm, hvm_cfg = _xen_config(tmp_path, "xen-hvm")
    pv, pv_cfg = _xen_config(tmp_path, "xen-pv")
    events: list[TaskEvent] = []
    extravars = {
        "guest_xen_state": state,
        "guest_xen_config_dir": str(tmp_path / "etc-xen"),
        "guest_xen_domains": [{"name": hvm, "config": str(hvm_cfg)}, {"name": pv, "config": str(pv_cfg)}],
    }
    result = run_playbook("guests.yml", inventory=inventory, extravars=extravars, check=True,
                          private_data_root=tmp_path / "runs", on_event=events.append)
    assert result.rc == 0
    done = {(e.task, e.status) for e in events if e.host}
    assert ("Refuse a host that is not a Xen dom0", "skipped") in done
    if state == "present":
        assert ("Copy the xl configuration files", "changed") in done
        assert ("Create the Xen guests that are not running", "skipped") in done  # xl never runs here
    assert not (tmp_path / "etc-xen").exists()  # check mode changed nothing


@pytest.mark.skipif(shutil.which("xl") is not None, reason="this host has xl")
def test_xen_role_refuses_a_host_without_xl(inventory: Path, tmp_path: Path) -> None:
    name, cfg = _xen_config(tmp_path, "xen-pv")
    extravars = {"guest_xen_config_dir": str(tmp_path / "etc-xen"), "guest_xen_domains": [{"name": name, "config": str(cfg)}]}
    with pytest.raises(ProvisionError, match="needs a Xen dom0 with xl; this host has none"):
        run_playbook("guests.yml", inventory=inventory, extravars=extravars, private_data_root=tmp_path / "runs")


def test_xen_role_validates_names(inventory: Path, tmp_path: Path) -> None:
    extravars = {"guest_xen_domains": [{"name": "production-db", "config": "/x.cfg"}]}
    with pytest.raises(ProvisionError, match="guest_xen_domains a list of"):
        run_playbook("guests.yml", inventory=inventory, extravars=extravars, check=True, private_data_root=tmp_path / "runs")


@pytest.mark.skipif(shutil.which("xl") is not None, reason="this host has xl")
@pytest.mark.parametrize("env", ["xen-hvm", "xen-pv"])
def test_xen_environment_needs_xl(env: str) -> None:
    ctx = WorkloadContext(host="localhost", workdir="/nonexistent", cpus=2, extra={"campaign": CAMPAIGN})
    with pytest.raises(ProvisionError, match=f"localhost: {env} needs a Xen dom0 with xl; this host has none"):
        environments.get(env)(LocalHost(), base.get("lockbench"), {"env": env, "lock": "ttas"}, ctx, 10)


@pytest.mark.guest
def test_kvm_role_creates_and_destroys_a_domain_idempotently(inventory: Path, tmp_path: Path) -> None:
    libvirt.ensure_libvirtd(HERE)
    # No initrd, no network: the kernel boots (TCG) until it finds no root and waits; that is enough here.
    catalog = {"default": {"kernel": str(image.newest_kernel()), "cmdline": "console=ttyS0"}}
    spec = describe_guest("kvm", {"vcpus": 1, "memory": 128, "accel": "tcg", "guest_kernel": "default"},
                          read_topology(), catalog, CAMPAIGN, 0)
    xml = tmp_path / "domain.xml"
    xml.write_text(libvirt.domain_xml(spec, network=None, console_log=str(tmp_path / "console.log")))
    domains = [{"name": spec.name, "config": str(xml)}]

    def play(state: str) -> int:
        extravars = {"guest_kvm_state": state, "guest_kvm_domains": domains, "guest_kvm_config_dir": str(tmp_path / "cfg")}
        res = run_playbook("guests.yml", inventory=inventory, extravars=extravars, private_data_root=tmp_path / "runs")
        return res.stats["localhost"].changed

    try:
        assert play("present") == 3  # directory, XML file, virsh create
        assert libvirt.list_campaign(HERE, CAMPAIGN) == [spec.name]
        assert play("present") == 0
        assert play("absent") == 2  # virsh destroy, XML file
        assert libvirt.list_campaign(HERE, CAMPAIGN) == []
        assert play("absent") == 0
    finally:
        libvirt.destroy(HERE, spec.name)
