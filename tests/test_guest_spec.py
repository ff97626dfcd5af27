"""describe_guest: one normalized guest description for every environment (pure, no hypervisor)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runner.errors import DatasetError, UnknownNameError, UsageError
from runner.provision.guest import GuestSpec, belongs_to, campaign_slug, describe_guest, split_evenly
from runner.provision.topology import synthetic_topology

LAB80 = synthetic_topology(2, 40, 2, nodes_per_socket=4)
SMALL = synthetic_topology(1, 2, 1)
CATALOG = {"deb": {"kernel": "/img/vmlinuz", "initrd": "/img/initrd.img", "cmdline": "console=ttyS0"}}


def kvm(params: dict, topo=LAB80, campaign: str = "c1", index: int = 0, **kw) -> GuestSpec:
    return describe_guest("kvm", {"guest_kernel": "deb", **params}, topo, CATALOG, campaign, index, **kw)


def test_vbench_layout_80_vcpus_8_nodes_pinned_1_to_1() -> None:
    spec = kvm({"vcpus": 80, "memory": 8000, "guest_numa": 8})
    assert spec.vcpu_pins[:10] == tuple((c,) for c in range(10))
    assert spec.vcpu_pins[10:20] == tuple((c,) for c in range(80, 90))  # node 0's SMT siblings
    assert len(spec.host_cpus) == 80
    assert spec.emulator_pins == spec.host_cpus
    assert [cell[0] for cell in spec.numa_cells] == [tuple(range(i * 10, i * 10 + 10)) for i in range(8)]
    assert [cell[1] for cell in spec.numa_cells] == [1000] * 8
    # packed puts 20 vCPUs on each host node, so virtual cells 0-1 sit on host node 0, 2-3 on node 1 ...
    assert [cell[2] for cell in spec.numa_cells] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (spec.kernel, spec.initrd, spec.cmdline, spec.accel) == ("/img/vmlinuz", "/img/initrd.img", "console=ttyS0", "kvm")


def test_over_commit_k_vms_share_the_same_cores() -> None:
    specs = [kvm({"vcpus": 40, "memory": 4096, "pin": "spread"}, index=i) for i in range(4)]
    assert len({s.vcpu_pins for s in specs}) == 1
    assert len({s.name for s in specs}) == 4
    assert [s.index for s in specs] == [0, 1, 2, 3]


def test_uneven_numa_split() -> None:
    spec = kvm({"vcpus": 5, "memory": 1001, "guest_numa": 2})
    assert [(c[0], c[1]) for c in spec.numa_cells] == [((0, 1, 2), 501), ((3, 4), 500)]
    assert split_evenly(7, 3) == [3, 2, 2]


def test_flat_guest_and_unpinned_guest() -> None:
    spec = kvm({"vcpus": 4, "memory": 512, "pin": "none", "guest_numa": 1})
    assert spec.vcpu_pins == () and spec.emulator_pins == () and spec.numa_cells == ()
    cells = kvm({"vcpus": 8, "memory": 512, "pin": "none", "guest_numa": 8}).numa_cells
    assert [c[2] for c in cells] == list(range(8))  # unpinned cells go round-robin over host nodes


def test_name_carries_campaign_index_and_content() -> None:
    spec = kvm({"vcpus": 2, "memory": 256}, campaign="scal/2026 run", index=3)
    assert spec.name.startswith("rnr-scal_2026_run-3-")
    assert belongs_to(spec.name, "scal/2026 run")
    assert spec.name != kvm({"vcpus": 2, "memory": 512}, campaign="scal/2026 run", index=3).name
    assert spec.name == kvm({"vcpus": 2, "memory": 256}, campaign="scal/2026 run", index=3).name


def test_belongs_to_does_not_confuse_prefix_campaigns() -> None:
    a = kvm({"vcpus": 1, "memory": 256}, campaign="a").name
    a1 = kvm({"vcpus": 1, "memory": 256}, campaign="a-1").name
    assert belongs_to(a, "a") and not belongs_to(a1, "a")
    assert belongs_to(a1, "a-1") and not belongs_to(a, "a-1")
    assert not belongs_to("rnr-a-0-xyz", "a") and not belongs_to("other", "a")
    with pytest.raises(UsageError):
        campaign_slug("")


def test_address_goes_on_the_kernel_command_line() -> None:
    spec = kvm({"vcpus": 1, "memory": 256}, address="10.214.0.12/24")
    assert spec.cmdline == "console=ttyS0 runner.ip=10.214.0.12/24"


def test_tcg_accel_and_xen_and_container() -> None:
    assert kvm({"vcpus": 1, "memory": 256, "accel": "tcg"}).accel == "tcg"
    hvm = describe_guest("xen-hvm", {"vcpus": 4, "memory": 512, "guest_kernel": "deb", "guest_numa": 2}, LAB80, CATALOG, "c", 0)
    assert hvm.accel == "xen" and len(hvm.numa_cells) == 2
    ct = describe_guest("container", {"vcpus": 2, "memory": 256}, SMALL, {}, "c", 1)
    assert (ct.accel, ct.kernel, ct.guest_kernel, ct.host_cpus) == ("none", "", "", (0, 1))


def test_json_round_trip_is_canonical() -> None:
    spec = kvm({"vcpus": 4, "memory": 1024, "guest_numa": 2, "disk": "/d.qcow2"})
    text = spec.to_json()
    assert GuestSpec.from_json(text) == spec
    assert GuestSpec.from_json(text).to_json() == text
    assert text.startswith('{"accel":"kvm","campaign":"c1",') and " " not in text.replace("console=ttyS0", "")
    assert '"spec_version":1' in text


def test_json_of_another_version_is_refused() -> None:
    text = kvm({"vcpus": 1, "memory": 256}).to_json().replace('"spec_version":1', '"spec_version":99')
    with pytest.raises(DatasetError, match="version 99"):
        GuestSpec.from_json(text)


@pytest.mark.parametrize(
    ("env", "params", "error", "match"),
    [
        ("lxc", {"vcpus": 1, "memory": 256}, UnknownNameError, "known: container, kvm, qemu, xen-hvm, xen-pv, xen-pvh"),
        ("kvm", {"vcpus": 1, "memory": 256, "guest_kernel": "nope"}, UnknownNameError, "known: deb"),
        ("kvm", {"vcpus": 1, "memory": 256, "guest_kernel": "deb", "vpcus": 2}, UsageError, "'vpcus'"),
        ("kvm", {"vcpus": "2", "memory": 256, "guest_kernel": "deb"}, UsageError, "vcpus: '2' is not an integer"),
        ("kvm", {"vcpus": 1, "memory": 256, "guest_kernel": "deb", "accel": "xen"}, UsageError, "allowed: kvm, tcg"),
        ("kvm", {"vcpus": 2, "memory": 256, "guest_kernel": "deb", "guest_numa": 3}, UsageError, "at least 3 vCPUs"),
        ("xen-pv", {"vcpus": 2, "memory": 256, "guest_kernel": "deb", "guest_numa": 2}, UsageError, "PV guests"),
        ("container", {"vcpus": 2, "memory": 256, "guest_numa": 2}, UsageError, "container"),
        ("kvm", {"vcpus": 2, "memory": 256, "guest_kernel": "deb", "pin": "tight"}, UnknownNameError, "pinning policy"),
    ],
)
def test_bad_parameters(env: str, params: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        describe_guest(env, params, LAB80, CATALOG, "c", 0)


def test_spec_is_frozen() -> None:
    spec = kvm({"vcpus": 1, "memory": 256})
    with pytest.raises(AttributeError):
        spec.vcpus = 3  # type: ignore[misc]
    assert replace(spec, vcpus=3).vcpus == 3


def test_environments_refuse_what_no_host_can_provide_at_plan_time() -> None:
    from runner.provision import environments

    with pytest.raises(UsageError, match="env xen-pv with guest_numa 2: Xen does not support virtual NUMA for PV guests"):
        environments.get("xen-pv").check_params({"guest_numa": 2, "vcpus": 4})
    with pytest.raises(UsageError, match="env container with guest_numa 2: a container has no virtual NUMA nodes"):
        environments.get("container").check_params({"guest_numa": 2})
    with pytest.raises(UsageError, match="env kvm: guest_numa 3 virtual nodes need at least 3 vCPUs, got vcpus 2"):
        environments.get("kvm").check_params({"guest_numa": 3, "vcpus": 2})
    environments.get("xen-hvm").check_params({"guest_numa": 2, "vcpus": 4})
    environments.get("host").check_params({"guest_numa": 8, "vcpus": 1})  # the bare host has no guests to check
    assert environments.get("kvm").host_tools == (("virsh",), "libvirt-clients and libvirt-daemon-system")
    assert environments.get("host").host_tools is None and not environments.get("host").starts_guests
