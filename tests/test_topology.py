"""CPU topology from sysfs and the pinning plans, on made-up machines and on this one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.errors import ProvisionError, UnknownNameError, UsageError
from runner.provision.topology import (
    Topology,
    format_cpulist,
    parse_cpulist,
    pin_plan,
    read_topology,
    synthetic_topology,
)

# The lab's machines: 2 sockets x 40 cores x 2 threads in 8 NUMA nodes (80 cores, HT on), and 120 cores
# in 4 nodes with hyperthreading off.
LAB80 = synthetic_topology(sockets=2, cores_per_socket=40, threads_per_core=2, nodes_per_socket=4)
LAB120 = synthetic_topology(sockets=4, cores_per_socket=30, threads_per_core=1)


def fake_sysfs(root: Path, topo: Topology, *, with_nodes: bool = True) -> Path:
    """Write the sysfs files read_topology reads, as the kernel lays them out."""
    cpu_dir = root / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    (cpu_dir / "online").write_text(format_cpulist(topo.cpu_ids) + "\n")
    for c in topo.cpus:
        d = cpu_dir / f"cpu{c.id}/topology"
        d.mkdir(parents=True)
        (d / "core_id").write_text(f"{c.core}\n")
        (d / "physical_package_id").write_text(f"{c.package}\n")
    if with_nodes:
        for node, cpus in topo.nodes.items():
            d = root / f"devices/system/node/node{node}"
            d.mkdir(parents=True)
            (d / "cpulist").write_text(format_cpulist(cpus) + "\n")
    return root


def test_cpulist_round_trip() -> None:
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("") == []
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10, 3]) == "0-3,8,10-11"
    assert format_cpulist([]) == ""


def test_synthetic_lab80_layout() -> None:
    assert len(LAB80.cpus) == 160
    nodes = LAB80.nodes
    assert list(nodes) == list(range(8))
    assert nodes[0] == tuple(range(0, 10)) + tuple(range(80, 90))
    assert nodes[7] == tuple(range(70, 80)) + tuple(range(150, 160))
    assert LAB80.siblings(3) == (3, 83)
    assert LAB80.siblings(123) == (43, 123)


def test_read_topology_from_fake_sysfs(tmp_path: Path) -> None:
    assert read_topology(fake_sysfs(tmp_path, LAB80)) == LAB80


def test_read_topology_without_numa_puts_all_on_node_0(tmp_path: Path) -> None:
    topo = synthetic_topology(1, 4, 2)
    read = read_topology(fake_sysfs(tmp_path, topo, with_nodes=False))
    assert read == topo and list(read.nodes) == [0]


def test_read_topology_skips_offline_cpus(tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path, synthetic_topology(1, 4, 1))
    (root / "devices/system/cpu/online").write_text("0-1,3\n")
    assert read_topology(root).cpu_ids == (0, 1, 3)


def test_read_topology_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="online"):
        read_topology(tmp_path)


def test_this_machine() -> None:
    topo = read_topology()
    assert len(topo.cpus) == len(parse_cpulist(Path("/sys/devices/system/cpu/online").read_text()))
    plan = pin_plan(topo, len(topo.cpus), "packed")
    assert sorted(plan) == sorted(topo.cpu_ids)
    assert set(plan) <= os.sched_getaffinity(0) | set(topo.cpu_ids)


def test_packed_fills_a_node_with_cores_before_siblings() -> None:
    assert pin_plan(LAB80, 10, "packed") == list(range(10))
    assert pin_plan(LAB80, 20, "packed") == list(range(10)) + list(range(80, 90))
    assert pin_plan(LAB80, 30, "packed")[20:] == list(range(10, 20))  # then node 1


def test_packed_uses_every_cpu_once_then_wraps() -> None:
    plan = pin_plan(LAB80, 160, "packed")
    assert sorted(plan) == list(range(160))
    over = pin_plan(LAB80, 170, "packed")
    assert over[:160] == plan and over[160:] == plan[:10]


def test_spread_goes_round_robin_over_nodes() -> None:
    assert pin_plan(LAB80, 8, "spread") == [0, 10, 20, 30, 40, 50, 60, 70]
    assert pin_plan(LAB80, 9, "spread")[8] == 1
    assert sorted(pin_plan(LAB80, 160, "spread")) == list(range(160))
    assert pin_plan(LAB120, 4, "spread") == [0, 30, 60, 90]


def test_lab120_without_smt() -> None:
    assert pin_plan(LAB120, 90, "packed") == list(range(90))


def test_none_is_unpinned() -> None:
    assert pin_plan(LAB80, 16, "none") == []


def test_unequal_nodes_spread_skips_exhausted_nodes() -> None:
    from runner.provision.topology import Cpu

    topo = Topology((Cpu(0, 0, 0, 0), Cpu(1, 1, 0, 0), Cpu(2, 2, 0, 0), Cpu(3, 0, 1, 1)))
    assert pin_plan(topo, 4, "spread") == [0, 3, 1, 2]


def test_bad_requests() -> None:
    with pytest.raises(UnknownNameError, match="known: packed, spread, none"):
        pin_plan(LAB80, 4, "compact")
    with pytest.raises(UsageError, match="at least 1"):
        pin_plan(LAB80, 0, "packed")
    with pytest.raises(UsageError, match="do not split"):
        synthetic_topology(1, 10, 1, nodes_per_socket=3)


def test_spread_with_virtual_nodes_keeps_each_vcpu_on_its_memorys_node() -> None:
    """pin spread + guest_numa 2: virtual node j on host node j, all its vCPUs on that node's CPUs."""
    from runner.provision.topology import cell_plan

    plan, nodes = cell_plan(LAB80, [2, 2], "spread")
    assert nodes == [0, 1]
    node_of = {c.id: c.node for c in LAB80.cpus}
    assert [node_of[c] for c in plan] == [0, 0, 1, 1] and len(set(plan)) == 4
    plan, nodes = cell_plan(LAB80, [1, 1, 1], "spread")
    assert nodes == [0, 1, 2] and [node_of[c] for c in plan] == [0, 1, 2]
    packed, pnodes = cell_plan(LAB80, [2, 2], "packed")
    assert packed == pin_plan(LAB80, 4, "packed") and pnodes == [node_of[packed[0]], node_of[packed[2]]]
    unpinned, unodes = cell_plan(LAB80, [2, 2], "none")
    assert unpinned == [] and unodes == [0, 1]
