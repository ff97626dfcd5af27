"""Imported first in the server that local Dask workers fork from (cluster.WORKER_PRELOAD): Ctrl-C reaches the
whole process group, and handling it is the controller's job (it stops the workloads, closes the cluster and
prints the summary). Without this a SIGINT during the server's imports printed a worker's traceback.

A Python handler that does nothing, not SIG_IGN: the workers forked from the server keep it, and the programs
they start (the workloads) get the default disposition back at exec, as a signal set to SIG_IGN would not."""

from __future__ import annotations

import signal
from typing import Any


def _controller_handles_it(signum: int, frame: Any) -> None:
    return None


signal.signal(signal.SIGINT, _controller_handles_it)
