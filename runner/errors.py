"""Typed errors. Library code raises these; only runner.cli turns them into a message and an exit code."""


class RunnerError(Exception):
    """Base of every error a user can act on. str(err) is the one-line message shown to the user."""

    exit_code = 1


class UsageError(RunnerError):
    """Bad input given by the user: a malformed matrix file, an unknown name, a bad option."""

    exit_code = 2


class MatrixError(UsageError):
    """The matrix file is invalid. The message names the file, the key path, the value and what is allowed."""


class UnknownNameError(UsageError):
    """A name (workload, host, group, lock ...) that is not known; the message lists the known ones."""


class HostError(RunnerError):
    """A host cannot be reached or refused us (SSH, host key, login)."""


class TrialError(RunnerError):
    """A trial failed: the workload exited non-zero, timed out, or its output could not be parsed."""


class DatasetError(RunnerError):
    """The dataset on disk is locked, incompatible or damaged."""


class BadDatasetError(DatasetError):
    """A dataset or archive the user named is missing a file, damaged, empty, of an unreadable version or of the
    wrong shape: bad input like a malformed matrix (exit 2), and still a DatasetError for callers that catch
    those. What fails around good data (a held lock, a full disk, a server that does not answer) stays a
    DatasetError (exit 1)."""

    exit_code = 2


class ProvisionError(RunnerError):
    """Provisioning (Ansible, guests, containers) failed."""


class ImageBuildError(ProvisionError):
    """A guest image could not be built (a failing step, an unreachable mirror, a missing package): the
    matrix asks for something this machine cannot make, so it ends the launch like bad input."""

    exit_code = 2
