"""The environments a trial can run in (the matrix's `env`): the contract and registry are in `base`, one
module per environment family beside it. Importing the package imports every module in it, so a new
environment is one new file here (docs/architecture.md, "Environments")."""

from __future__ import annotations

import importlib
import pkgutil

from runner.provision.environments.base import (
    BootOrder,
    destroy_all,
    Environment,
    Images,
    Network,
    Started,
    annotate,
    get,
    guest_names,
    in_parallel,
    known,
    register,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BootOrder", "Environment", "Images", "Network", "Started", "annotate", "destroy_all", "get", "guest_names", "in_parallel", "known",
           "register"]
