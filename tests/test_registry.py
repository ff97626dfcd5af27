"""The one plugin registry (runner.registry) and the three that use it: workloads, probes, environments."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from runner.errors import UnknownNameError
from runner.probes import base as probes
from runner.provision import environments
from runner.workloads import base as workloads


def _package(root: Path, name: str, modules: dict[str, str]) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for module, text in modules.items():
        (pkg / f"{module}.py").write_text(text)


def test_a_plugin_is_found_by_its_module_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every module of the package is imported on the first lookup: nothing else names the plugin."""
    _package(tmp_path, "regtest_plugins", {
        "base": "from runner.registry import Registry\nPLUGINS = Registry('regtest_plugins', 'no plugin {name!r}; known: {known}')\n"
                "SHARED = Registry('regtest_plugins', '{name}', shared=True)\n",
        "alpha": "from regtest_plugins.base import PLUGINS\n@PLUGINS.register('alpha')\nclass Alpha:\n    pass\n",
        "beta": "from regtest_plugins.base import PLUGINS, SHARED\n@PLUGINS.register('beta')\nclass Beta:\n    pass\n"
                "@SHARED.register('gamma')\nclass Gamma:\n    pass\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("regtest_plugins")]:
        monkeypatch.delitem(sys.modules, name)
    base = importlib.import_module("regtest_plugins.base")
    assert "regtest_plugins.alpha" not in sys.modules  # nothing imported until asked
    assert base.PLUGINS.names() == ["alpha", "beta"]
    alpha = base.PLUGINS.get("alpha")
    assert type(alpha).__name__ == "Alpha" and type(alpha).name == "alpha"
    assert base.PLUGINS.get("alpha") is not alpha  # not shared: a new one each time
    with pytest.raises(UnknownNameError) as err:
        base.PLUGINS.get("alpah")
    assert str(err.value) == "no plugin 'alpah'; known: alpha, beta"
    assert base.SHARED.names() == ["gamma"] and base.SHARED.get("gamma") is base.SHARED.get("gamma")  # one, shared


def test_the_three_kinds_keep_their_names_and_messages() -> None:
    assert workloads.known() == ["command", "gmake", "lockbench", "stressng"]
    assert probes.known() == ["cpufreq", "host_state", "kvm_exits", "lock_stat", "perf_stat", "schedstat"]
    assert environments.known()[0] == "host" and {"container", "kvm", "qemu", "xen-hvm", "xen-pv", "xen-pvh"} <= set(environments.known())
    assert environments.get("kvm") is environments.get("kvm")  # one shared environment
    assert workloads.get("lockbench") is not workloads.get("lockbench")
    for get, name, message in ((workloads.get, "lockbnch", "no workload 'lockbnch'; known: command, gmake, lockbench, stressng"),
                               (probes.get, "perfstat", "no probe 'perfstat'; known: cpufreq, host_state"),
                               (environments.get, "kvn", "environment 'kvn' is not available; known: container, host, kvm")):
        with pytest.raises(UnknownNameError) as err:
            get(name)
        assert str(err.value).startswith(message)
