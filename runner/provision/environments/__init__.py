"""The environments a trial can run in (the matrix's `env`): the contract and registry are in `base`, one
module per environment family beside it. The registry (runner.registry) imports every module in it on the first
lookup, so a new environment is one new file here (docs/architecture.md, "Environments")."""

from __future__ import annotations

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

__all__ = ["BootOrder", "Environment", "Images", "Network", "Started", "annotate", "destroy_all", "get", "guest_names", "in_parallel", "known",
           "register"]
