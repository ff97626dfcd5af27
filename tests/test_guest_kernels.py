"""The lab's guest kernel catalog (`guest_kernels` in the matrix): validation, planning, and a real boot."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import MatrixError
from runner.execution import images
from runner.hosts.local import LocalHost
from runner.matrix.load import parse_matrix
from runner.provision import libvirt
from runner.provision.image import GuestImage
from runner.records.store import read_campaign
from runner.trials import plan

HERE = LocalHost()

PROJECT = Path(__file__).resolve().parents[1]
BASE = "campaign: c\nworkload: {name: lockbench, params: {env: kvm}}\n"


def test_catalog_entries_reach_the_trials_and_their_identity() -> None:
    text = BASE + "guest_kernels:\n  qspin-4.5: {kernel: /boot/vmlinuz-4.5, cmdline: nopvspin}\naxes: {guest_kernel: [default, qspin-4.5]}\nrepetitions: 1\n"
    trials = plan(parse_matrix(text), {"h": 2})
    specs = {t.param_dict["guest_kernel"]: t.param_dict.get("guest_kernel_spec") for t in trials}
    assert specs == {"default": None, "qspin-4.5": {"kernel": "/boot/vmlinuz-4.5", "cmdline": "nopvspin"}}
    # Another kernel file under the same name is another cell.
    other = plan(parse_matrix(text.replace("vmlinuz-4.5", "vmlinuz-4.5-rebuilt")), {"h": 2})
    assert {t.cell_id for t in trials} != {t.cell_id for t in other}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("axes: {guest_kernel: [default, oticket]}\n", r"axes.guest_kernel\[1\]: no guest kernel 'oticket'; known: default, nopvspin"),
        ("guest_kernels: {default: {kernel: /k}}\n", "guest_kernels.default: 'default' is built in"),
        ("guest_kernels: {x: {kernel: vmlinuz}}\n", "guest_kernels.x.kernel: 'vmlinuz' is not an absolute path"),
        ("guest_kernels: {x: {kernel: /k, initrd: /i}}\n", "guest_kernels.x: unknown key 'initrd'; allowed: build, cmdline, kernel"),
    ],
)
def test_bad_catalogs(extra: str, message: str) -> None:
    with pytest.raises(MatrixError, match=message):
        parse_matrix(BASE + extra)


def test_catalog_of_a_trial_adds_its_kernel_and_command_line() -> None:
    img = GuestImage(Path("/i/vmlinuz-lab"), Path("/i/initrd.img"), Path("/k"), "ssh-ed25519 AAAA", "6.1", "d")
    cat = images.guest_catalog(img, "kvm", {"guest_kernel": "lab", "guest_kernel_spec": {"kernel": "/x", "cmdline": "lab_marker=1"}})
    assert cat["lab"] == {"kernel": "/i/vmlinuz-lab", "initrd": "/i/initrd.img", "cmdline": "console=ttyS0 panic=-1 quiet lab_marker=1"}


@pytest.mark.integration
@pytest.mark.guest
def test_a_lab_kernel_boots_with_its_command_line(tmp_path: Path) -> None:
    # The host's own kernel, named as a lab kernel with a marker on its command line; the guest reports
    # whether the marker reached its /proc/cmdline.
    kernel = sorted(glob.glob("/boot/vmlinuz-*"))[-1]
    matrix = tmp_path / "labkernel.yml"
    matrix.write_text(
        "campaign: labkernel\n"
        f"hosts: {{group: local, inventory: {PROJECT / 'inventory'}}}\n"
        f"guest_kernels:\n  marked: {{kernel: {kernel}, cmdline: runner_lab_marker=1}}\n"
        "workload:\n  name: command\n  params:\n    env: kvm\n    vcpus: 1\n"
        "    run: 'echo \"{\\\"marker\\\": $(grep -c runner_lab_marker=1 /proc/cmdline)}\"'\n"
        "axes: {guest_kernel: [marked]}\nrepetitions: 1\ntimeout: 240\n"
    )
    try:
        assert main(["launch", str(matrix), "--datasets", str(tmp_path / "ds")]) == 0
    finally:
        assert libvirt.list_campaign(HERE, "labkernel") == []
    metrics, trials, _ = read_campaign(tmp_path / "ds" / "labkernel")
    marker = metrics[(metrics["metric"] == "marker") & (metrics["vm"] == 0)]["value"]
    assert list(marker) == [1.0]
    spec = json.loads(trials["guest_json"].iloc[0])
    assert spec["guest_kernel"] == "marked" and "runner_lab_marker=1" in spec["cmdline"]
    assert trials["accel"].iloc[0] in ("tcg", "kvm")
