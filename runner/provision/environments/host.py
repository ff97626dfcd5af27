"""`host`: the workload runs on the trial's host itself; no guest, no hypervisor."""

from __future__ import annotations

from runner.provision.environments.base import Environment, register


@register("host")
class BareHost(Environment):
    failure_accel = None  # a failed bare-host trial records no guest fields at all
