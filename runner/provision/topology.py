"""Host CPU topology and the choice of host CPUs to pin guest vCPUs (or container threads) to.

`read_topology` is the only function here that reads sysfs; everything else is pure and is tested on
made-up machines (`synthetic_topology`), in the manner of BenchExec's resources module.

Pinning policies (`pin_plan`):
- "packed": vCPU i gets its own host CPU, filling NUMA node by node (lowest node first); inside a node,
  every physical core gets one vCPU before any SMT sibling is used. This is VBENCH's layout: 8 virtual
  nodes of 10 vCPUs on 8 host nodes of 10 cores.
- "spread": round-robin over NUMA nodes (vCPU 0 on node 0, vCPU 1 on node 1, ...), each node handing
  out its CPUs in "packed" order.
- "none": no pinning (empty plan); the host scheduler places the vCPUs.
A guest with virtual NUMA nodes (`cell_plan`) under "spread" puts virtual node j on host node j (mod the
host's nodes) and every vCPU of that virtual node on a CPU of that host node, so a vCPU's memory is
always local; under "packed" the vCPU plan is the same as without virtual nodes.
Over-commit is legal: when n exceeds the online CPUs, the plan wraps around (vCPU i takes the CPU of
vCPU i mod CPUs), so two vCPUs of one guest share a host CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ProvisionError, UnknownNameError, UsageError

POLICIES = ("packed", "spread", "none")


@dataclass(frozen=True)
class Cpu:
    """One online logical CPU. `core` is the core id within its package (as sysfs reports it)."""

    id: int
    core: int
    package: int
    node: int


@dataclass(frozen=True)
class Topology:
    """The online CPUs of a host, sorted by id."""

    cpus: tuple[Cpu, ...]

    @property
    def cpu_ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.cpus)

    @property
    def nodes(self) -> dict[int, tuple[int, ...]]:
        """NUMA node -> its online CPU ids, in id order."""
        out: dict[int, list[int]] = {}
        for c in self.cpus:
            out.setdefault(c.node, []).append(c.id)
        return {n: tuple(ids) for n, ids in sorted(out.items())}

    def siblings(self, cpu: int) -> tuple[int, ...]:
        """The SMT siblings of `cpu` (itself included): the CPUs with the same package and core id."""
        me = self._by_id()[cpu]
        return tuple(c.id for c in self.cpus if (c.package, c.core) == (me.package, me.core))

    def _by_id(self) -> dict[int, Cpu]:
        return {c.id: c for c in self.cpus}


def parse_cpulist(text: str) -> list[int]:
    """Parse the kernel's cpulist format ("0-3,8,10-11"); empty text gives an empty list."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPU ids as a cpulist with ranges ("0-3,8"), the syntax libvirt, xl and podman accept."""
    ids = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


# Prints, from a host's sysfs, what parse_topology_dump reads: "online LIST", "node N LIST", "cpu ID CORE PACKAGE".
TOPOLOGY_SCRIPT = (
    'cd /sys/devices/system || exit 3; echo "online $(cat cpu/online)"; '
    'for n in node/node[0-9]*; do [ -e "$n/cpulist" ] && echo "node ${n##*node} $(cat "$n/cpulist")"; done; '
    'for c in cpu/cpu[0-9]*; do [ -e "$c/topology/core_id" ] && '
    'echo "cpu ${c##*cpu} $(cat "$c/topology/core_id") $(cat "$c/topology/physical_package_id")"; done; exit 0'
)


def parse_topology_dump(text: str, where: str = "host") -> Topology:
    """The Topology from TOPOLOGY_SCRIPT's output (run on a host through any Host). Pure."""
    online: list[int] = []
    node_of: dict[int, int] = {}
    ids: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = rest.split()
        try:
            if kind == "online":
                online = parse_cpulist(rest)
            elif kind == "node" and len(fields) == 2:
                node_of |= {cpu: int(fields[0]) for cpu in parse_cpulist(fields[1])}
            elif kind == "cpu" and len(fields) == 3:
                ids[int(fields[0])] = (int(fields[1]), int(fields[2]))
        except ValueError:
            raise ProvisionError(f"{where}: cannot read its CPU topology from line {line!r}") from None
    missing = [c for c in online if c not in ids]
    if not online or missing:
        raise ProvisionError(f"{where}: cannot read its CPU topology (online CPUs {online}, no topology for {missing[:3]})")
    return Topology(tuple(Cpu(c, ids[c][0], ids[c][1], node_of.get(c, 0)) for c in sorted(online)))


def read_topology(sysfs_root: str | Path = "/sys") -> Topology:
    """Read online CPUs, their core/package ids and NUMA nodes from a sysfs tree (the real one by default).

    A kernel without NUMA (no devices/system/node) puts every CPU on node 0.
    """
    root = Path(sysfs_root)
    cpu_dir = root / "devices/system/cpu"
    try:
        online = parse_cpulist((cpu_dir / "online").read_text())
    except OSError as e:
        raise ProvisionError(f"cannot read online CPUs from {cpu_dir / 'online'}: {e.strerror}") from None
    node_of: dict[int, int] = {}
    for node_dir in sorted((root / "devices/system/node").glob("node[0-9]*")):
        for cpu in parse_cpulist((node_dir / "cpulist").read_text()):
            node_of[cpu] = int(node_dir.name[4:])
    cpus = []
    for cpu in online:
        topo = cpu_dir / f"cpu{cpu}/topology"
        try:
            core = int((topo / "core_id").read_text())
            package = int((topo / "physical_package_id").read_text())
        except OSError as e:
            raise ProvisionError(f"cannot read topology of CPU {cpu} under {topo}: {e.strerror}") from None
        cpus.append(Cpu(cpu, core, package, node_of.get(cpu, 0)))
    return Topology(tuple(sorted(cpus, key=lambda c: c.id)))


def synthetic_topology(sockets: int, cores_per_socket: int, threads_per_core: int, nodes_per_socket: int = 1) -> Topology:
    """A made-up host numbered the way Linux numbers Intel servers: first thread of every core of every
    socket, then the second threads (2 x 40 x 2: CPUs 0-39 socket 0, 40-79 socket 1, 80-119 their siblings).
    Each socket's cores are split evenly into `nodes_per_socket` NUMA nodes (sub-NUMA clustering)."""
    if cores_per_socket % nodes_per_socket:
        raise UsageError(f"{cores_per_socket} cores per socket do not split into {nodes_per_socket} nodes")
    per_node = cores_per_socket // nodes_per_socket
    cpus = []
    for thread in range(threads_per_core):
        for socket in range(sockets):
            for core in range(cores_per_socket):
                cpu_id = (thread * sockets + socket) * cores_per_socket + core
                cpus.append(Cpu(cpu_id, core, socket, socket * nodes_per_socket + core // per_node))
    return Topology(tuple(sorted(cpus, key=lambda c: c.id)))


def _packed_order(topo: Topology, cpu_ids: Iterable[int]) -> list[int]:
    """Physical cores first (the lowest-numbered thread of each core), then the remaining SMT threads."""
    by_id = topo._by_id()
    firsts, rest, seen = [], [], set()
    for cpu in sorted(cpu_ids):
        key = (by_id[cpu].package, by_id[cpu].core)
        (rest if key in seen else firsts).append(cpu)
        seen.add(key)
    return firsts + rest


def pin_plan(topo: Topology, n: int, policy: str) -> list[int]:
    """Host CPU for each of `n` vCPUs under `policy` (see the module docstring); [] for "none"."""
    if policy not in POLICIES:
        raise UnknownNameError(f"no pinning policy {policy!r}; known: {', '.join(POLICIES)}")
    if n < 1:
        raise UsageError(f"cannot pin {n} vCPUs; need at least 1")
    if policy == "none":
        return []
    if not topo.cpus:
        raise ProvisionError("the host topology has no online CPUs")
    per_node = [_packed_order(topo, ids) for ids in topo.nodes.values()]
    if policy == "packed":
        order = [cpu for node in per_node for cpu in node]
    else:
        order = [node[r] for r in range(max(map(len, per_node))) for node in per_node if r < len(node)]
    return [order[i % len(order)] for i in range(n)]


def cell_plan(topo: Topology, sizes: list[int], policy: str) -> tuple[list[int], list[int]]:
    """For a guest whose virtual NUMA nodes have `sizes` vCPUs each: (host CPU of each vCPU, host node of
    each virtual node). "spread": virtual node j -> host node j mod nodes, its vCPUs on that node's CPUs
    in packed order, continuing after the CPUs earlier virtual nodes took there. "packed" and "none":
    `pin_plan`'s vCPUs, each virtual node on the host node of its first vCPU ("none": round-robin)."""
    plan = [] if policy == "spread" else pin_plan(topo, sum(sizes), policy)
    host_nodes = list(topo.nodes)
    if policy != "spread":
        node_of = {c.id: c.node for c in topo.cpus}
        firsts = [sum(sizes[:j]) for j in range(len(sizes))]
        return plan, [node_of[plan[f]] if plan else host_nodes[j % len(host_nodes)] for j, f in enumerate(firsts)]
    pin_plan(topo, sum(sizes), policy)  # the same checks (policy, counts, an empty topology)
    taken = dict.fromkeys(host_nodes, 0)
    nodes = []
    for j, size in enumerate(sizes):
        node = host_nodes[j % len(host_nodes)]
        order = _packed_order(topo, topo.nodes[node])
        plan += [order[(taken[node] + i) % len(order)] for i in range(size)]
        taken[node] += size
        nodes.append(node)
    return plan, nodes
