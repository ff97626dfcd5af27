"""A synthetic campaign shaped like examples/study.yml (issue 24), for the report's tests: environments x vCPUs,
guest kernels x vCPUs, and over-commit per guest kernel, with trials that record what real ones do (params_json,
guest_vcpus, accel) and host facts as the collector takes them (a virtual machine: its guests are nested)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from runner.analysis.synthetic import Law, synthetic_metrics, synthetic_provenance, synthetic_trials

HOST_CPUS = 4
ENVS = {("host", "none"): Law(0.01, 0.0, 1e6), ("container", "none"): Law(0.012, 0.0, 1e6),
        ("kvm", "kvm"): Law(0.05, 0.002, 8e5, collapse_at=HOST_CPUS, after=0.1)}
KERNELS = {"pv": Law(0.03, 0.0005, 8e5), "nopv": Law(0.05, 0.003, 8e5, collapse_at=2, after=0.2)}


def host_facts(cmdline_words: int = 60) -> dict[str, Any]:
    """Facts like the collector's (nested form), of a host that is itself a KVM guest, with a long command line
    and flag list (what made the hosts table 1,764 px wide)."""
    return {"cpu": {"model": "Synthetic EPYC", "threads": HOST_CPUS, "cores": HOST_CPUS, "sockets": 1, "hypervisor_flag": True,
                    "flags": " ".join(f"flag{i}" for i in range(150))},
            "hypervisor": "kvm", "kernel": {"release": "6.1.0-synthetic", "cmdline": " ".join(f"opt{i}=value{i}" for i in range(cmdline_words))},
            "numa": {"nodes": [{"id": 0, "cpus": list(range(HOST_CPUS))}]}, "smt": {"control": "notsupported"},
            "virt": {"qemu": "7.2", "libvirt": "9.0.0", "xen": None, "xen_virt_caps": None}}


def _tag(m: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return m.assign(cell_id=prefix + m["cell_id"], trial_id=prefix + m["trial_id"])


def study() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(metrics, trials, provenance) of the study: guest_kernel lives in the trials' parameters only (as in a real
    dataset, where it is a fixed column of the trials table). The guest kernels' cells at 2 vCPUs and 1 VM are the
    over-commit part's references."""
    frames = []
    for i, ((env, accel), law) in enumerate(ENVS.items()):
        m = synthetic_metrics(axes={"vcpus": [1, 2, 4, 8], "vms": [1]}, law=lambda p, law=law: law, load_axis="vcpus",
                              env=env, accel=accel, per_thread=False, seed=i, campaign="study", hosts=("vmhost",))
        frames.append(_tag(m.assign(guest_kernel=None if env != "kvm" else "default"), env[0]))
    g = synthetic_metrics(axes={"guest_kernel": list(KERNELS), "vcpus": [1, 4], "vms": [1]}, law=lambda p: KERNELS[p["guest_kernel"]],
                          load_axis="vcpus", env="kvm", accel="kvm", per_thread=False, seed=7, campaign="study", hosts=("vmhost",))
    o = synthetic_metrics(axes={"guest_kernel": list(KERNELS), "vms": [1, 2, 4], "vcpus": [2]}, law=lambda p: KERNELS[p["guest_kernel"]],
                          load_axis="vcpus", env="kvm", accel="kvm", per_thread=False, seed=8, campaign="study", overcommit_loss=0.2,
                          vm_shares=lambda k: np.linspace(1, 2, k) / np.linspace(1, 2, k).sum(), hosts=("vmhost",))
    m = pd.concat([*frames, _tag(g, "g"), _tag(o[~((o["vms"] == 1) & o["vm"].notna())], "o")], ignore_index=True)
    m["vms"] = m["vms"].astype("int64")
    trials = synthetic_trials(m)
    trials["params_json"] = [json.dumps({k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
                                         for k, v in (("env", r.env), ("vcpus", r.vcpus), ("vms", r.vms), ("guest_kernel", r.guest_kernel))})
                             for r in trials.itertuples()]
    trials["guest_vcpus"] = trials["vcpus"].where(trials["env"] != "host")
    metrics = m.drop(columns=["guest_kernel"])
    trials = trials.drop(columns=["guest_kernel"]).assign(guest_kernel=trials["guest_kernel"])
    prov = synthetic_provenance("study", {"vmhost": host_facts()})
    return metrics, trials, prov
