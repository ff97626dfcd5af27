pytest_plugins = ["tests.testbed_fixture"]


import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def campaigns() -> Iterator[list[str]]:
    """Names of campaigns a test ran on the test bed; their work directories are removed afterwards."""
    from runner.execution.campaign import WORKDIR_ROOT

    names: list[str] = []
    yield names
    for name in names:
        shutil.rmtree(Path(WORKDIR_ROOT) / name, ignore_errors=True)


@pytest.fixture(autouse=True)
def own_holds(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own directory of default hold files (RUNNER_HOLD_DIR), never the machine's
    /var/lib/runner/holds: a hold left by one test (or by another run of the suite on this machine) never
    meets another test."""
    path = tmp_path_factory.mktemp("holds")
    monkeypatch.setenv("RUNNER_HOLD_DIR", str(path))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """RUNNER_HOME in tmp_path (not made: a refused command must not make it), and no RUNNER_INVENTORY from outside."""
    path = tmp_path / "home"
    monkeypatch.setenv("RUNNER_HOME", str(path))
    monkeypatch.delenv("RUNNER_INVENTORY", raising=False)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `long` run only when asked for (`-m long`): they need more than CI's time budget."""
    if "long" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="long: run with -m long (more than CI's time budget; see docs/gmake.md)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
