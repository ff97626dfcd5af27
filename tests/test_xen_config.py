"""xl configs from GuestSpecs, compared with reference files written by hand from xl.cfg(5).

Xen cannot run here: these tests check the text only; no Xen guest is ever booted by the test suite.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from runner.errors import ProvisionError
from runner.provision.guest import GuestSpec
from runner.provision import environments
from runner.provision.xen import xen_mac, xl_config, xl_create_argv, xl_destroy_argv

DATA = Path(__file__).parent / "data" / "xen"
IMG = "/var/lib/runner/images/0f1e"

HVM_VNUMA = GuestSpec(
    env="xen-hvm", name="rnr-lab-0-0123abcd", campaign="lab", index=0, vcpus=4, memory_mib=2048,
    vcpu_pins=((0,), (1,), (40,), (41,)), emulator_pins=(0, 1, 40, 41),
    numa_cells=(((0, 1), 1024, 0), ((2, 3), 1024, 4)),
    kernel=f"{IMG}/vmlinuz", initrd=f"{IMG}/initrd.img",
    cmdline="console=ttyS0 panic=-1 quiet runner.ip=10.214.0.10/24", accel="xen", guest_kernel="debian",
)
PV = GuestSpec(
    env="xen-pv", name="rnr-lab-1-89abcdef", campaign="lab", index=1, vcpus=2, memory_mib=512,
    vcpu_pins=((4,), (5,)), emulator_pins=(4, 5), numa_cells=(),
    kernel=f"{IMG}/vmlinuz", initrd=f"{IMG}/initrd.img",
    cmdline="console=hvc0 panic=-1 quiet runner.ip=10.214.0.11/24", accel="xen", guest_kernel="debian",
    disk="/var/lib/runner/disks/scratch.img",
)
PVH = GuestSpec(
    env="xen-pvh", name="rnr-lab-3-0badf00d", campaign="lab", index=3, vcpus=2, memory_mib=512,
    vcpu_pins=((0,), (1,)), emulator_pins=(0, 1), numa_cells=(),
    kernel=f"{IMG}/vmlinuz", initrd=f"{IMG}/initrd.img",
    cmdline="console=hvc0 panic=-1 quiet runner.ip=10.214.0.12/24", accel="xen", guest_kernel="default",
)
HVM_UNPINNED = GuestSpec(
    env="xen-hvm", name="rnr-lab-2-deadbeef", campaign="lab", index=2, vcpus=8, memory_mib=4096,
    vcpu_pins=(), emulator_pins=(), numa_cells=(), kernel="/boot/vmlinuz-6.1.0-56-amd64", initrd="",
    cmdline="console=ttyS0", accel="xen", guest_kernel="host",
)


@pytest.mark.parametrize(
    ("spec", "reference", "bridge"),
    [(HVM_VNUMA, "hvm-vnuma.cfg", "xenbr0"), (PV, "pv.cfg", "xenbr0"), (PVH, "pvh.cfg", "xenbr0"),
     (HVM_UNPINNED, "hvm-unpinned.cfg", "xenbr1")],
)
def test_config_matches_reference(spec: GuestSpec, reference: str, bridge: str) -> None:
    assert xl_config(spec, environments.get(spec.env).xl_type, bridge=bridge) == (DATA / reference).read_text()


@pytest.mark.parametrize("reference", sorted(p.name for p in DATA.glob("*.cfg")))
def test_reference_files_follow_the_key_value_syntax(reference: str) -> None:
    # xl.cfg(5): KEY=VALUE, VALUE a quoted string, a number or a [list]; '#' starts a comment.
    for line in (DATA / reference).read_text().splitlines():
        if not line.startswith("#"):
            assert re.fullmatch(r'[a-z_]+ = ("[^"]*"|\d+|\[.*\])', line), line


def test_vnuma_sizes_add_up_to_maxmem() -> None:
    text = xl_config(HVM_VNUMA, "hvm")
    sizes = [int(s) for s in re.findall(r'"size=(\d+)"', text)]
    assert sum(sizes) == int(re.search(r"^maxmem = (\d+)$", text, re.M).group(1))


def test_pv_guest_with_virtual_numa_is_refused() -> None:
    with pytest.raises(ProvisionError, match="virtual NUMA for PV"):
        xl_config(replace(PV, numa_cells=(((0,), 256, 0), ((1,), 256, 0))), "pv")


def test_kvm_guest_is_refused() -> None:
    with pytest.raises(ProvisionError, match="not kvm"):
        xl_config(replace(PV, env="kvm", accel="tcg"), "pv")


def test_quote_in_a_value_is_refused() -> None:
    with pytest.raises(ProvisionError, match="quote"):
        xl_config(replace(PV, cmdline='init="/bin/sh"'), "pv")


def test_mac_is_stable_and_in_xen_range() -> None:
    mac = xen_mac("rnr-x-0-00000000")
    assert mac == xen_mac("rnr-x-0-00000000")
    assert re.fullmatch(r"00:16:3e:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}", mac)


def test_xl_argv() -> None:
    assert xl_create_argv(Path("/etc/xen/g.cfg")) == ["xl", "create", "/etc/xen/g.cfg"]
    assert xl_destroy_argv("rnr-lab-0-0123abcd") == ["xl", "destroy", "rnr-lab-0-0123abcd"]


def test_an_xl_command_that_does_not_finish_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A dom0 too busy to finish `xl create` (seen nested under TCG): the error says it did not finish in time
    and what xl had printed, not "failed: Parsing config from ..." as if xl had said why. Here a stand-in
    `xl` on PATH prints xl's first line and hangs."""
    from runner.hosts.local import LocalHost
    from runner.provision import xen

    fake = tmp_path / "xl"
    fake.write_text("#!/bin/sh\necho \"Parsing config from $2\" >&2\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(xen, "XL_TIMEOUT_S", 1.0)
    with pytest.raises(ProvisionError, match=r"^localhost: xl create did not finish within 1 s: Parsing config from /g\.cfg$"):
        xen.xl(LocalHost(), ["xl", "create", "/g.cfg"])
    fake.write_text("#!/bin/sh\necho 'libxl: error: no memory' >&2\nexit 3\n")
    with pytest.raises(ProvisionError, match=r"^localhost: xl create failed: libxl: error: no memory$"):
        xen.xl(LocalHost(), ["xl", "create", "/g.cfg"])


XL_INFO = """host                   : xen1
release                : 6.1.0-57-amd64
xen_version            : 4.17.7
xen_caps               : xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64
virt_caps              : pv hvm hap shadow gnttab-v1 gnttab-v2
total_memory           : 3071
"""


def test_virt_caps_decide_which_guest_types_run() -> None:
    from runner.provision.xen import missing_cap, parse_virt_caps

    caps = parse_virt_caps(XL_INFO)
    assert caps == {"pv", "hvm", "hap", "shadow", "gnttab-v1", "gnttab-v2"}
    assert all(missing_cap(kind, caps) is None for kind in ("pv", "pvh", "hvm"))
    no_svm = parse_virt_caps(XL_INFO.replace("pv hvm hap shadow", "pv"))  # Xen on a CPU without SVM/VT-x
    assert missing_cap("pv", no_svm) is None
    assert "lacks hvm" in missing_cap("pvh", no_svm) and "lacks hvm" in missing_cap("hvm", no_svm)
    assert "lacks both" in missing_cap("pvh", {"pv", "hvm"})
    assert "lacks pv" in missing_cap("pv", {"hvm", "hap"})
    assert parse_virt_caps("nothing here") == set()
