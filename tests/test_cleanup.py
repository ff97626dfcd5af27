"""runner cleanup: removes exactly one campaign's leftovers (libvirt domains, disk overlays, containers, images,
bridge)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runner.cli import main
from runner.cli.cleanup import cleanup
from runner.hosts.local import LocalHost
from runner.provision import container, image, libvirt, rootfs
from runner.provision.guest import describe_guest
from runner.provision.topology import read_topology

HERE = LocalHost()

pytestmark = [pytest.mark.integration, pytest.mark.guest]
MINE, OTHER = "pytest-cleanup", "pytest-cleanup-1"  # OTHER starts with MINE: a prefix match would be a bug


def _domain(campaign: str, log_dir: Path) -> str:
    # No initrd: the kernel (TCG) finds no root and waits forever, so the domain stays until destroyed.
    catalog = {"default": {"kernel": str(image.newest_kernel()), "cmdline": "console=ttyS0"}}
    spec = describe_guest("kvm", {"vcpus": 1, "memory": 128, "accel": "tcg", "guest_kernel": "default"},
                          read_topology(), catalog, campaign, 0)
    libvirt.start(HERE, spec, log_dir=str(log_dir))
    return spec.name


def _container(campaign: str, img: str) -> str:
    name = describe_guest("container", {"vcpus": 1, "memory": 64}, read_topology(), {}, campaign, 0).name
    subprocess.run([*container.container_cli(HERE), "run", "-d", "--name", name, img, "sleep", "300"],
                   check=True, capture_output=True, timeout=60)
    return name


def test_cleanup_removes_only_the_campaigns_leftovers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    libvirt.ensure_libvirtd(HERE)
    libvirt.ensure_bridge(HERE)
    imgs = {c: container.build_image(HERE, container.image_name(c, "0" * 12), files={}) for c in (MINE, OTHER)}
    mine = {"domain": _domain(MINE, tmp_path), "container": _container(MINE, imgs[MINE])}
    other = {"domain": _domain(OTHER, tmp_path), "container": _container(OTHER, imgs[OTHER])}
    overlays = {c: Path(rootfs.OVERLAY_DIR) / rootfs.overlay_name(c, 0, "0123456789ab") for c in (MINE, OTHER)}
    for path in overlays.values():  # what a killed boot of a Debian image leaves beside its domain
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    try:
        planned = cleanup(MINE, dry_run=True)
        assert sorted(planned.guests) == [("container", mine["container"]), ("libvirt domain", mine["domain"])]
        assert planned.images == (imgs[MINE],)
        assert planned.hosts[0].overlays == (str(overlays[MINE]),) and overlays[MINE].exists()
        assert libvirt.list_campaign(HERE, MINE) == [mine["domain"]]  # a dry run removes nothing

        assert main(["cleanup", MINE, "--datasets", str(tmp_path / "ds")]) == 0
        out = capsys.readouterr().out
        assert f"removed libvirt domain {mine['domain']}" in out and f"removed container {mine['container']}" in out
        assert f"removed guest disk overlay {overlays[MINE]}" in out
        assert not overlays[MINE].exists() and overlays[OTHER].exists()
        assert "guest bridge" not in out  # OTHER's guest is still on it
        assert libvirt.list_campaign(HERE, MINE) == [] and container.list_campaign(HERE, MINE) == []
        assert container.list_campaign_images(HERE, MINE) == []
        assert libvirt.list_campaign(HERE, OTHER) == [other["domain"]]
        assert container.list_campaign(HERE, OTHER) == [other["container"]]
        assert container.list_campaign_images(HERE, OTHER) == [imgs[OTHER]]

        done = cleanup(OTHER)
        assert sorted(done.guests) == [("container", other["container"]), ("libvirt domain", other["domain"])]
        assert done.bridge and not Path(f"/sys/class/net/{libvirt.BRIDGE}").exists()  # no guest left on it
        assert main(["cleanup", OTHER]) == 0
        assert "nothing left behind by campaign 'pytest-cleanup-1'" in capsys.readouterr().out
    finally:
        for path in overlays.values():
            path.unlink(missing_ok=True)
        for c, names in ((MINE, mine), (OTHER, other)):
            libvirt.destroy(HERE, names["domain"])
            container.remove(HERE, names["container"])
            container.remove_image(HERE, imgs[c])
    assert libvirt.list_campaign(HERE, MINE) == libvirt.list_campaign(HERE, OTHER) == []


def test_a_campaign_that_recorded_no_host_is_cleaned_on_every_inventory_host(testbed, tmp_path: Path) -> None:  # noqa: ANN001
    """A controller killed before its first trial recorded no host facts, but may have started guests on any host:
    cleanup then visits every remote host of the campaign's inventory (read from its provenance)."""
    root = tmp_path / "ds" / MINE
    root.mkdir(parents=True)
    (root / "provenance.json").write_text(json.dumps({"inventory": str(testbed.inventory_path)}))
    done = cleanup(MINE, dry_run=True, datasets=tmp_path / "ds")
    remote = {h.name for h in testbed.hosts}
    assert remote and remote <= {h.host for h in done.hosts}
    assert all(h.error is None for h in done.hosts) and done.count == 0
