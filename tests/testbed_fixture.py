"""Pytest fixtures for the namespace test bed (runner.testing.testbed). Loaded from tests/conftest.py with
`pytest_plugins = ["tests.testbed_fixture"]`.

- `testbed`: one session-wide test bed of 3 hosts. Do not inject faults into it.
- `make_testbed(n)`: a fresh test bed per call for tests that break hosts; removed after the test.
- `hypervisor_bed`: one test bed of one hypervisor host (its own libvirtd, guest network and image
  cache, see runner.testing.testbed) per test module.

Tests using them are skipped (with the reason) only when not root or `ip netns` does not work here.
Test beds are always torn down, also when a test fails; ones left by a killed run are removed when the
next session starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.testing.testbed import TestBed, cleanup_stale


def netns_unavailable() -> str | None:
    """Why the test bed cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the namespace test bed needs root"
    if shutil.which("ip") is None:
        return "the namespace test bed needs iproute2 (`ip`)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def _netns_session() -> Iterator[None]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    cleanup_stale()
    yield
    cleanup_stale()


@pytest.fixture(scope="session")
def testbed(_netns_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    bed = TestBed.up(3, tmp_path_factory.mktemp("testbed"), "bed")
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture(scope="module")
def hypervisor_bed(_netns_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    bed = TestBed.up(1, tmp_path_factory.mktemp("hvbed"), "hv", hypervisors=1)
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture
def make_testbed(_netns_session: None, tmp_path: Path) -> Iterator[Callable[[int], TestBed]]:
    beds: list[TestBed] = []

    def make(n: int) -> TestBed:
        bed = TestBed.up(n, tmp_path, f"bed{len(beds)}")
        beds.append(bed)
        return bed

    try:
        yield make
    finally:
        for bed in beds:
            bed.down()
