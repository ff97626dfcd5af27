"""`container`: podman (or docker) containers on the hypervisor host, each on the trial's CPU set; a
container is a Host whose commands run through `podman exec` on its host (runner.hosts.container)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from runner.hosts.base import Host
from runner.hosts.container import ContainerHost
from runner.provision import container
from runner.provision.environments.base import BootOrder, Environment, Started, destroy_all, register


@register("container")
class Containers(Environment):
    guest_noun = "container"
    cpu_noun = "container CPUs"
    starts_guests = True
    failure_accel = "none"  # no hypervisor, whatever failed
    host_tools = (("podman", "docker"), "podman and runc")
    setup_estimate_s = 1.0
    no_virtual_numa = "a container has no virtual NUMA nodes"

    def leftovers(self, hv: Host, campaign: str) -> list[str]:
        return container.list_campaign(hv, campaign)

    def boot(self, hv: Host, order: BootOrder) -> Started:
        image_name = str(order.params.get("guest_image", "minimal"))
        img = order.images.container_image(hv, order.campaign, order.params)
        specs = [order.describe(order.gp, {}, i) for i in range(int(order.gp["vms"]))]
        cli = container.container_cli(hv)
        guard = order.guard([self.destroy_argv(hv, s.name) for s in specs])
        t0 = time.monotonic()
        try:
            for spec in specs:
                container.start(hv, img, name=spec.name, cpuset=spec.host_cpus, memory_mib=spec.memory_mib)
        except BaseException:
            destroy_all(hv, self, specs, guard)
            raise
        ready = [time.monotonic() - t0] * len(specs)
        guests: list[Host] = [ContainerHost(hv, s.name, cli) for s in specs]
        return Started(specs, guests, ready, "none", guard, (image_name, img.rsplit(":", 1)[-1].split("-", 1)[0]))

    def oom_kills(self, hv: Host, names: Sequence[str]) -> Mapping[str, int] | None:
        return container.oom_kills(hv, names)

    def destroy(self, hv: Host, name: str) -> None:
        container.remove(hv, name)

    def destroy_argv(self, hv: Host, name: str) -> list[str]:
        return container.remove_argv(container.container_cli(hv), name)
