"""What a booted guest says about its kernel (pure): the lines the guest facts script appends, and the trial's
kernel columns made of what the guest answered (docs/kernels.md, "What is recorded")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Appended to the guest facts script: the recipe build the initramfs was made for, and the kernel's own
# boot line about paravirtual spinlocks (KVM: "PV spinlocks enabled" / "PV spinlocks disabled, ..."; Xen:
# "xen: PV spinlocks enabled/disabled"). A kernel built without PARAVIRT_SPINLOCKS prints no such line: when
# its own symbol table (/proc/kallsyms, with KALLSYMS) has no PV slow path, the guest says that instead.
NO_PV_SPINLOCK_CODE = "no PV spinlock code in this kernel (no __pv_queued_spin_lock_slowpath in /proc/kallsyms)"
FACTS_LINES = (
    'echo "kernel_build $(cat /etc/runner-kernel 2>/dev/null)"; '
    'l=$(dmesg 2>/dev/null | grep -o "\\(xen: \\)\\?PV spinlocks.*" | head -n 1); '
    'if [ -z "$l" ] && [ -r /proc/kallsyms ] && ! grep -q " __pv_queued_spin_lock_slowpath$" /proc/kallsyms; '
    f'then l="{NO_PV_SPINLOCK_CODE}"; fi; '
    'echo "pvspin_line $l"; '
)
GUEST_KERNEL_FILE = "/etc/runner-kernel"  # in the initramfs: "<recipe> <build digest> <release> <config digest>"


def trial_columns(facts: Mapping[str, Any], guest_kernel: str = "") -> dict[str, Any]:
    """The trial's kernel columns from the first guest's facts: the recipe (the trial's guest_kernel, when
    the guest booted a recipe build), the build the guest's initramfs names, what the guest itself said."""
    parts = str(facts.get("kernel_build") or "").split()
    build = dict(zip(("kernel_recipe", "kernel_build", "kernel_release", "kernel_config_digest"), parts)) if len(parts) == 4 else {}
    recipe = (guest_kernel or build.get("kernel_recipe")) if build else None
    return {"kernel_recipe": recipe, "kernel_build": build.get("kernel_build"),
            "kernel_release": build.get("kernel_release"), "kernel_config_digest": build.get("kernel_config_digest"),
            "guest_uname": facts.get("kernel_release") or None, "guest_pvspin": facts.get("pvspin_line") or None}
