"""Over-commit efficiency and Jain's fairness on hand-computed examples."""

from __future__ import annotations

import pandas as pd
import pytest

from runner.analysis import jain_index, overcommit_table


def test_jain_index():
    assert jain_index([1, 1, 1, 1]) == 1.0
    assert jain_index([1, 0, 0, 0]) == 0.25
    assert jain_index([1, 3]) == pytest.approx(16 / (2 * 10))
    assert jain_index([0, 0]) == 1.0  # all-zero shares are equal shares, as lockbench and vm_jain count them
    with pytest.raises(ValueError, match="no values"):
        jain_index([])


def rows(lock: str, vms: int, rep: int, values: list[float], total: bool = False) -> list[dict]:
    base = {"campaign": "c", "trial_id": f"{lock}{vms}-{rep}", "cell_id": f"{lock}{vms}", "repetition": rep,
            "attempt": 1, "host": "h1", "env": "kvm", "accel": "kvm", "metric": "throughput", "unit": "ops/s",
            "higher_is_better": True, "workload": "gmake", "lock": lock, "vms": vms, "vcpus": 8, "thread": None}
    out = [{**base, "vm": None if total else i, "value": v} for i, v in enumerate(values)]
    if not total and vms > 1:
        out.append({**base, "vm": None, "value": sum(values)})  # the total row must not be counted as a VM
    return out


def test_overcommit_by_hand():
    data = []
    for rep, t1 in enumerate([90.0, 100.0, 110.0], 1):
        data += rows("ticket", 1, rep, [t1], total=True)  # single VM: total row only -> T1 = 100
    data += rows("ticket", 2, 1, [50, 50]) + rows("ticket", 2, 2, [30, 50]) + rows("ticket", 2, 3, [40, 40])
    data += rows("ticket", 4, 1, [10, 10, 10, 70])
    data += rows("mcs", 2, 1, [50, 50])  # no single-VM mcs cell: left out
    df = pd.DataFrame(data)
    df["vm"] = df["vm"].astype("Int32")
    df["thread"] = df["thread"].astype("Int32")
    cells, per_vm = overcommit_table(df)
    c = cells.set_index("k")
    assert list(cells["lock"]) == ["ticket"] * 3 and list(cells["k"]) == [1, 2, 4]
    assert c.loc[1, "t1"] == 100.0 and c.loc[1, "efficiency"] == 1.0 and c.loc[1, "jain"] == 1.0
    # k=2: efficiencies 1.0, 0.8, 0.8 -> median 0.8; Jain 1, 64/(2*3400), 1 -> median 1
    assert c.loc[2, "efficiency"] == pytest.approx(0.8)
    assert c.loc[2, "jain"] == 1.0 and c.loc[2, "jain_min"] == pytest.approx(64 / 68)
    assert c.loc[2, "ideal_per_vm"] == 0.5 and c.loc[2, "n"] == 3 and c.loc[2, "vms_seen"] == 2
    # per VM: vm0 0.5, 0.3, 0.4 -> 0.4; vm1 0.5, 0.5, 0.4 -> 0.5
    assert c.loc[2, "norm_min"] == pytest.approx(0.4) and c.loc[2, "norm_max"] == pytest.approx(0.5)
    # k=4: one VM takes 70 of 100: efficiency 1, Jain 100^2 / (4 * 5200)
    assert c.loc[4, "efficiency"] == pytest.approx(1.0)
    assert c.loc[4, "jain"] == pytest.approx(10000 / 20800)
    assert len(per_vm[per_vm["vms"] == 4]) == 4
