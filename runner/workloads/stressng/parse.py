"""Parse what one stressng trial leaves: stress-ng's YAML (`--metrics --yaml FILE`) on stdout, stress-ng's
own log and the runner's exit line on stderr. Pure functions, tested on captured real output
(tests/data/stressng/).

The trial's command (runner.workloads.stressng.trial_argv) runs stress-ng with its log on stderr and its
YAML into a file, then prints the file on stdout and `runner-stressng: exit N` (stress-ng's exit status) on
stderr, and always exits 0: a failed stressor is judged here, from stress-ng's own words, not from the
last line of its log (which says "successful run completed" even when every instance gave up).

stress-ng 0.15's YAML reports one `metrics` entry per stressor, summed over its instances: it cannot tell
the workers apart, so the per-worker figure is the mean (throughput / workers), said in its unit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from runner.errors import TrialError
from runner.records.metric import Metric

EXIT_LINE = "runner-stressng: exit "  # what the trial's command prints on stderr after stress-ng ends
WORKERS_LINE = "runner-stressng: workers "  # and, before it, how many instances it started

# The keys of a `metrics` entry every stress-ng since 0.13 writes, as numbers; others are per-stressor extras.
_REQUIRED = ("bogo-ops", "bogo-ops-per-second-real-time", "wall-clock-time")
_STANDARD: dict[str, tuple[str, str, bool | None]] = {  # yaml key -> metric name, unit, higher_is_better
    "bogo-ops-per-second-real-time": ("throughput", "bogo-ops/s", True),
    "bogo-ops": ("bogo_ops", "bogo-ops", True),
    "bogo-ops-per-second-usr-sys-time": ("ops_per_cpu_second", "bogo-ops/cpu-s", True),
    "wall-clock-time": ("duration_s", "s", None),
    "user-time": ("user_s", "s", None),
    "system-time": ("system_s", "s", None),
    "cpu-usage-per-instance": ("cpu_usage_pct", "%", None),
    "max-rss": ("max_rss_kib", "KiB", None),
}
# Units of the per-stressor extras, by the start of their name (nanosecs-per-flock-lock-call, ...).
_EXTRA_UNITS: tuple[tuple[str, str, bool | None], ...] = (
    ("nanosecs-per-", "ns", False),
    ("microsecs-per-", "us", False),
    ("millisecs-per-", "ms", False),
    ("mb-per-sec", "MB/s", True),
)
# stress-ng's routine log lines: none of them says why a stressor did nothing.
_ROUTINE = re.compile(
    r"setting to a .* run per stressor|dispatching hogs|successful run completed|unsuccessful run completed|"
    r"^(passed|failed|skipped|metrics-check|untrustworthy):|can't set oom_score_adj|defaulting to a|"
    r"^(process|stressor) terminated|^[\w-]+: (started|exited) \(instance|^\d+ stressors? (started|spawned)|"
    r"cache allocate|system: |RAM total|temporary file path|processors online|invoked with|^stress-ng \d"
)
NOTHING_SAID = "stress-ng said nothing about it"
# stress-ng's exit status of a run stopped at the window before its workers did anything: 0, or 2 (a stressor
# "failed": its workers, not started yet, were ended by the stop) with no word in its log either way.
STARVED_STATUS = frozenset({0, 2})
_PID = re.compile(r" ?\[\d+\]")  # "process [20560] (efivar) aborted early": each instance its own pid
_LOG = re.compile(r"^stress-ng: (?:\w+):\s+\[\d+\] (?P<text>.*)$")


def _fail(stressor: str, msg: str) -> TrialError:
    return TrialError(f"stress-ng {stressor}: {msg}")


def _runner_line(stderr: str, prefix: str) -> int | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith(prefix):
            try:
                return int(line[len(prefix):].strip())
            except ValueError:
                return None
    return None


def exit_status(stderr: str) -> int | None:
    """stress-ng's exit status from the runner's exit line on stderr (None: no such line: it did not end)."""
    return _runner_line(stderr, EXIT_LINE)


def workers_of(stderr: str) -> int | None:
    """The instances the trial's command started (its workers line on stderr; None: not said)."""
    return _runner_line(stderr, WORKERS_LINE)


def own_message(stderr: str, limit: int = 3) -> str:
    """stress-ng's own words on why it did nothing or failed: its non-routine log lines, without the
    `stress-ng: level: [pid]` prefix, each once (every instance repeats them), at most `limit` of them;
    a line not in log format (a usage error: "unrecognized option") is taken as it is."""
    seen: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line or line.startswith(("runner-stressng: ", "stress-ng: metrc:")):
            continue
        m = _LOG.match(line)
        text = _PID.sub("", m.group("text")).strip() if m else line
        if m is None and line.startswith("Try '"):  # "Try 'stress-ng --help' for more information."
            continue
        if _ROUTINE.search(text) or text in seen:
            continue
        seen.append(text)
    if not seen:
        return NOTHING_SAID
    more = f" (and {len(seen) - limit} more lines)" if len(seen) > limit else ""
    return "; ".join(seen[:limit]) + more


def load_yaml(stdout: str, stressor: str) -> dict[str, Any]:
    """stress-ng's YAML document as plain data (every scalar a string: stress-ng writes dates as 2026:12:05,
    which YAML 1.1 would read as a base-60 number)."""
    text = stdout.strip()
    if not text:
        raise _fail(stressor, "no YAML output")
    try:
        doc = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str, list, dict
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise _fail(stressor, f"YAML output is not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise _fail(stressor, "YAML output is not a mapping")
    return doc


def _number(entry: Mapping[str, Any], key: str, stressor: str) -> float:
    value = entry.get(key)
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _fail(stressor, f"YAML metrics: {key}: {value!r} is not a number") from None
    if not math.isfinite(out) or out < 0:
        raise _fail(stressor, f"YAML metrics: {key}: {value!r} is not a finite non-negative number")
    return out


def stressor_entry(doc: Mapping[str, Any], stressor: str) -> dict[str, Any] | None:
    """The `metrics` entry of `stressor` (None: stress-ng wrote none)."""
    entries = doc.get("metrics")
    if entries is None:
        return None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _fail(stressor, "YAML metrics: not a list of mappings")
    for entry in entries:
        if entry.get("stressor") == stressor:
            return dict(entry)
    if len(entries) == 1 and entry_is_alias(entries[0], stressor):
        return dict(entries[0])
    return None


def entry_is_alias(entry: Mapping[str, Any], stressor: str) -> bool:
    """stress-ng names a few stressors in its metrics other than by their option (e.g. with _ for -)."""
    return str(entry.get("stressor", "")).replace("_", "-") == stressor.replace("_", "-")


def parse_run(stdout: str, stderr: str, stressor: str, workers: int | None = None, *, windowed: bool = False) -> list[Metric]:
    """Metrics of one stress-ng run of `stressor` with `workers` instances (None: as the command's workers
    line on stderr says).

    Raises TrialError with stress-ng's own message when the stressor reported no bogo-ops, when stress-ng
    exited non-zero, or when its output cannot be understood. `windowed` (one of k > 1 guests, all stopped
    at one instant): no bogo-ops from a run that said nothing and exited 0 or 2 (STARVED_STATUS) is a
    measurement, not a failure: the guest's workers finished no operation in the common window (starved by
    the others), throughput 0."""
    status = exit_status(stderr)
    doc = load_yaml(stdout, stressor) if stdout.strip() else None
    entry = stressor_entry(doc, stressor) if doc is not None else None
    starved = windowed and status in STARVED_STATUS and own_message(stderr) == NOTHING_SAID
    if entry is not None and "bogo-ops" in entry and _number(entry, "bogo-ops", stressor) == 0 and not starved:
        said = "" if status in (None, 0) else f" (exit status {status})"
        raise _fail(stressor, f"no bogo-ops{said}: {own_message(stderr)}")
    if status not in (None, 0) and not starved:
        raise _fail(stressor, f"exited with status {status}: {own_message(stderr)}")
    if entry is None:
        if doc is None:
            raise _fail(stressor, f"no YAML output: {own_message(stderr)}")
        raise _fail(stressor, f"no metrics for this stressor in its YAML output: {own_message(stderr)}")
    for key in _REQUIRED:
        if key not in entry:
            raise _fail(stressor, f"YAML metrics: {key} is missing")
    workers = workers_of(stderr) if workers is None else workers
    if workers is None or workers < 1:
        raise _fail(stressor, f"workers: {workers!r} is not a positive count (no '{WORKERS_LINE.strip()}' line on stderr?)")
    metrics: list[Metric] = []
    for key, (name, unit, better) in _STANDARD.items():
        if key in entry:
            metrics.append(Metric(name, _number(entry, key, stressor), unit, better))
    total = next(m.value for m in metrics if m.name == "throughput")
    metrics.append(Metric("throughput_per_worker", total / workers, "bogo-ops/s (mean of workers)", True))
    metrics.append(Metric("workers", float(workers), "workers", None))
    metrics += _extras(entry, stressor)
    return metrics


def _extras(entry: Mapping[str, Any], stressor: str) -> list[Metric]:
    """The stressor's own figures (flock: nanosecs-per-flock-lock-call, fault: minor-page-faults-per-sec, ...)."""
    out = []
    for key, value in entry.items():
        if key in _STANDARD or key == "stressor" or not isinstance(value, str):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if not math.isfinite(number):
            continue
        unit, better = next(((u, b) for prefix, u, b in _EXTRA_UNITS if key.startswith(prefix)), ("", None))
        if unit == "" and key.endswith("-per-sec"):
            unit, better = "/s", None
        out.append(Metric(key.replace("-", "_"), number, unit, better))
    return out


def stressor_list(stdout: str) -> list[str]:
    """`stress-ng --stressors` -> the stressor names (one line, separated by spaces)."""
    return sorted({w for w in stdout.split() if re.fullmatch(r"[a-z0-9][a-z0-9-]*", w)})


def unknown_stressor(stressor: str, known: Sequence[str], host: str) -> str | None:
    """None if `stressor` is one of `known` (what the host's stress-ng lists), else the one-line message."""
    if stressor in known:
        return None
    return f"{host}: stress-ng there has no stressor {stressor!r}; it knows: {', '.join(known)}"
