"""Defaults and limits of the parameters the runner itself understands (env, vms, memory), said once.

The matrix schema (runner.matrix.load), planning (runner.trials), the environments and the guest
specifications read them from here. A module at the bottom of the package, like runner.errors: it imports
nothing, so every layer may import it.
"""

from __future__ import annotations

ENV = "host"  # where a trial runs when its parameters name no env: the bare host
VMS = 1  # guests started at once for one trial (over-commit when more)
GUEST_MEMORY_MIB = 512  # memory of each guest when the matrix gives none
GUEST_MEMORY_MIN_MIB = 64  # the least memory a guest may be given (a minimal guest's kernel and init fit in it)
# The environments a trial can name, and what each is: runner.provision.environments.
