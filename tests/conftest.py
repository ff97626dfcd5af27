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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `long` run only when asked for (`-m long`): they need more than CI's time budget."""
    if "long" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="long: run with -m long (more than CI's time budget; see docs/gmake.md)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
