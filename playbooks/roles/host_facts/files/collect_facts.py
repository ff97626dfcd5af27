#!/usr/bin/env python3
"""Print this host's fingerprint as JSON on stdout. Read-only: it only reads /proc and /sys and asks
version commands. Runs on any Python >= 3.6 with the standard library only, because Ansible ships it to
hosts as a plain script and runner.provision.fingerprint.collect_local() runs the same file locally.

Format version history (FORMAT_VERSION):
  1: first version; later additive keys: virt.xen_virt_caps (what `xl info` reports in a Xen dom0).
"""

import glob
import json
import os
import re
import shutil
import socket
import subprocess

FORMAT_VERSION = 1
KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd")
SYS_CPU = "/sys/devices/system/cpu"


def read(path):
    """The stripped text of a file, or None when it does not exist or cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpulist(text):
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def selected(text):
    """'always [madvise] never' -> ('madvise', ['always', 'madvise', 'never'])."""
    if text is None:
        return None, []
    choices = [w.strip("[]") for w in text.split()]
    m = re.search(r"\[([^\]]+)\]", text)
    return (m.group(1) if m else text), choices


def command(argv):
    """stdout of argv, or None when the program is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def cpuinfo():
    text = read("/proc/cpuinfo") or ""
    first = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break
            continue
        key, _, value = line.partition(":")
        first[key.strip()] = value.strip()
    return first


def cpu_facts():
    info = cpuinfo()
    online = cpulist(read(SYS_CPU + "/online"))
    packages, cores = set(), set()
    for cpu in online:
        topo = "%s/cpu%d/topology/" % (SYS_CPU, cpu)
        pkg = read(topo + "physical_package_id")
        core = read(topo + "core_id")
        packages.add(pkg)
        cores.add((pkg, core))
    return {
        "model": info.get("model name") or info.get("cpu model") or info.get("Processor"),
        "vendor": info.get("vendor_id"),
        "family": info.get("cpu family"),
        "model_id": info.get("model"),
        "stepping": info.get("stepping"),
        "microcode": info.get("microcode"),
        "sockets": len(packages),
        "cores": len(cores),
        "threads": len(online),
        "online": online,
        "hypervisor_flag": "hypervisor" in info.get("flags", "").split(),
    }


def numa_facts():
    nodes = []
    for path in sorted(glob.glob("/sys/devices/system/node/node[0-9]*"),
                       key=lambda p: int(p.rsplit("node", 1)[1])):
        distance = read(path + "/distance")
        nodes.append({
            "id": int(path.rsplit("node", 1)[1]),
            "cpus": cpulist(read(path + "/cpulist")),
            "distances": [int(d) for d in distance.split()] if distance else [],
        })
    return {"nodes": nodes}


def cpufreq_facts():
    policies = {}
    for path in sorted(glob.glob(SYS_CPU + "/cpufreq/policy[0-9]*"),
                       key=lambda p: int(p.rsplit("policy", 1)[1])):
        policies[os.path.basename(path)] = {
            "governor": read(path + "/scaling_governor"),
            "available_governors": (read(path + "/scaling_available_governors") or "").split(),
            "driver": read(path + "/scaling_driver"),
            "cpus": cpulist(read(path + "/affected_cpus")),
        }
    return {"policies": policies}


def turbo_facts():
    no_turbo = read(SYS_CPU + "/intel_pstate/no_turbo")
    if no_turbo is not None:
        return {"interface": "intel_pstate", "path": SYS_CPU + "/intel_pstate/no_turbo",
                "enabled": no_turbo == "0"}
    boost = read(SYS_CPU + "/cpufreq/boost")
    if boost is not None:
        return {"interface": "cpufreq_boost", "path": SYS_CPU + "/cpufreq/boost", "enabled": boost == "1"}
    return {"interface": None, "path": None, "enabled": None}


def thp_facts():
    base = "/sys/kernel/mm/transparent_hugepage/"
    enabled, enabled_choices = selected(read(base + "enabled"))
    defrag, defrag_choices = selected(read(base + "defrag"))
    return {"enabled": enabled, "enabled_choices": enabled_choices,
            "defrag": defrag, "defrag_choices": defrag_choices}


def vulnerability_facts():
    return {os.path.basename(p): read(p) for p in sorted(glob.glob(SYS_CPU + "/vulnerabilities/*"))}


def hypervisor(cpu):
    virt = command(["systemd-detect-virt"])
    if virt:
        return virt
    hv_type = read("/sys/hypervisor/type")
    if hv_type:
        return hv_type
    return "unknown" if cpu["hypervisor_flag"] else "none"


def first_version(text):
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text or "")
    return m.group(1) if m else None


def virt_versions():
    xen = None
    if read("/sys/hypervisor/type") == "xen":
        major, minor = read("/sys/hypervisor/version/major"), read("/sys/hypervisor/version/minor")
        xen = "%s.%s%s" % (major, minor, read("/sys/hypervisor/version/extra") or "")
    caps = None
    if xen is not None and "control_d" in (read("/proc/xen/capabilities") or ""):  # dom0: xl can answer
        for line in (command(["xl", "info"]) or "").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "virt_caps":
                caps = value.split()
    return {
        "qemu": first_version(command(["qemu-system-x86_64", "--version"])),
        "libvirt": first_version(command(["libvirtd", "--version"])),
        "xen": xen,
        "xen_virt_caps": caps,
    }


def kvm_facts():
    modules = {}
    for name in KVM_MODULES:
        params = {}
        for path in sorted(glob.glob("/sys/module/%s/parameters/*" % name)):
            value = read(path)
            if value is not None:
                params[os.path.basename(path)] = value
        if os.path.isdir("/sys/module/" + name):
            modules[name] = params
    return {"modules": modules, "dev_kvm": os.path.exists("/dev/kvm")}


def irqbalance_facts():
    running = False
    for comm in glob.glob("/proc/[0-9]*/comm"):
        if read(comm) == "irqbalance":
            running = True
            break
    return {"installed": shutil.which("irqbalance") is not None
            or os.path.exists("/usr/sbin/irqbalance"), "running": running}


def collect():
    cpu = cpu_facts()
    smt_control = read(SYS_CPU + "/smt/control")
    smt_active = read(SYS_CPU + "/smt/active")
    return {
        "version": FORMAT_VERSION,
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "numa": numa_facts(),
        "smt": {"control": smt_control, "active": None if smt_active is None else smt_active == "1"},
        "cpufreq": cpufreq_facts(),
        "turbo": turbo_facts(),
        "kernel": {"release": os.uname().release, "cmdline": read("/proc/cmdline")},
        "thp": thp_facts(),
        "vulnerabilities": vulnerability_facts(),
        "hypervisor": hypervisor(cpu),
        "virt": virt_versions(),
        "kvm": kvm_facts(),
        "irqbalance": irqbalance_facts(),
    }


if __name__ == "__main__":
    print(json.dumps(collect(), indent=1, sort_keys=True))
