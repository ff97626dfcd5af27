"""examples/study.yml, the lab's three findings in one matrix: its shape (which cells, which boots) planned without
touching a host. Its `pv` and `nopv` kernels are build recipes (guest_kernels: build, issue 22); the miniature
also plans the same matrix with both names as path entries of Debian's kernel (nopv with nopvspin on its
command line): only the catalog differs, the cells are the same."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import yaml

from runner.cli import main
from runner.matrix.load import load_matrix, parse_matrix
from runner.trials import boots_needed, plan

STUDY = Path(__file__).resolve().parents[1] / "examples" / "study.yml"
DEBIAN_KERNEL = "/boot/vmlinuz-6.1.0-57-amd64"  # planning only: the path is not opened


def _today(tmp_path: Path) -> Path:
    """study.yml with the recipes replaced by path entries of Debian's kernel (text substitution: the
    comments and everything else stay as written)."""
    text = STUDY.read_text()
    doc = yaml.safe_load(text)
    start = text.index("guest_kernels:\n")
    end = text.index("axes:\n")
    catalog = (f"guest_kernels:\n  pv: {{kernel: {DEBIAN_KERNEL}}}\n"
               f"  nopv: {{kernel: {DEBIAN_KERNEL}, cmdline: nopvspin}}\n")
    path = tmp_path / "study.yml"
    path.write_text(text[:start] + catalog + text[end:])
    assert {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "guest_kernels"} == \
        {k: v for k, v in doc.items() if k != "guest_kernels"}
    return path


def test_the_study_names_its_kernels_as_recipes() -> None:
    doc = yaml.safe_load(STUDY.read_text())
    kernels = doc["guest_kernels"]
    assert set(kernels) == {"pv", "nopv"}
    assert kernels["pv"]["build"]["fragments"] == ["kvm_guest.config", "xen.config"]
    assert kernels["nopv"]["build"]["set"] == {"PARAVIRT_SPINLOCKS": "n"}
    assert doc["workload"]["name"] == "stressng" and doc["workload"]["params"]["guest_image"] == "debian"
    assert doc["axes"]["guest_kernel"] == ["pv", "nopv", "nopvspin"] and doc["axes"]["vms"] == [1, 2, 4]


def test_the_study_as_written_plans(capsys: pytest.CaptureFixture[str]) -> None:
    load_matrix(STUDY)
    assert main(["plan", str(STUDY), "--cpus", "80", "--show", "0"]) == 0
    out = capsys.readouterr().out
    assert "117 trials = 39 cells x 3 repetitions" in out and "guest boots:" in out


def test_the_study_in_miniature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On an 80-CPU host: every environment at 20, 40 and 80 CPUs with one guest (finding 1), each guest
    kernel at every size in kvm and xen-pv (finding 2), and 1, 2, 4 guests of 80 vCPUs (finding 3)."""
    path = _today(tmp_path)
    matrix = parse_matrix(path.read_text(), path)
    trials = plan(matrix, {"lab80": 80})
    cells = {t.cell_id: t.param_dict for t in trials}
    assert len(cells) == 39 and len(trials) == 117
    by_env = collections.Counter(p["env"] for p in cells.values())
    assert by_env == {"kvm": 15, "xen-pv": 15, "xen-hvm": 3, "host": 3, "container": 3}
    for p in cells.values():
        assert p["stressor"] == "flock" and p["workers"] == p["vcpus"]  # "100%" of the trial's CPUs
        if p["env"] in ("host", "container", "xen-hvm"):
            assert p["vms"] == 1 and sorted({q["vcpus"] for q in cells.values() if q["env"] == p["env"]}) == [20, 40, 80]
        if p["env"] in ("host", "container"):
            assert p["guest_kernel"] == "default"
        if p["vms"] > 1:
            assert p["vcpus"] == 80 and p["env"] in ("kvm", "xen-pv")
    overcommit = {(p["env"], p["guest_kernel"], p["vms"]) for p in cells.values() if p["vcpus"] == 80 and p["env"] in ("kvm", "xen-pv")}
    assert overcommit == {(e, k, v) for e in ("kvm", "xen-pv") for k in ("pv", "nopv", "nopvspin") for v in (1, 2, 4)}
    assert boots_needed(trials, matrix.reuse) == 36  # 33 guest configurations and 3 container sizes

    assert main(["plan", str(path), "--cpus", "80", "--show", "0"]) == 0
    out = capsys.readouterr().out
    assert "117 trials = 39 cells x 3 repetitions" in out
    assert "guest boots: 36" in out and "estimated duration:" in out


def test_the_study_on_a_two_cpu_test_bed_vm(tmp_path: Path) -> None:
    """On 2 CPUs a quarter and a half are both 1 CPU: those cells are one (written first wins)."""
    path = _today(tmp_path)
    trials = plan(parse_matrix(path.read_text(), path), {"vm": 2})
    cells = {t.cell_id: t.param_dict for t in trials}
    assert len(cells) == 30
    assert {p["vcpus"] for p in cells.values()} == {1, 2}
