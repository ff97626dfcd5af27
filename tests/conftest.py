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
