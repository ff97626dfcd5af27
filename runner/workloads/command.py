"""command: any shell command, with metrics from its JSON output or from named regular expressions.

Parameters (fixed or axes) reach the command as environment variables RUNNER_<NAME> (upper case), never
pasted into the command line, so a value is always data. Example matrix:

    workload:
      name: command
      params:
        run: 'sleep "$RUNNER_SECONDS"; echo "{\"slept\": $RUNNER_SECONDS}"'
        metrics: json            # every numeric top-level key of the JSON on stdout is a metric
    axes:
      seconds: [0.1, 0.2]

A JSON metric may say its unit and direction: `{"elapsed": {"value": 1.5, "unit": "s", "higher_is_better": false}}`
(a bare number has no unit and no direction: `runner compare` then says "changed", not better or worse).
See docs/workloads.md.

or with regular expressions (named group `value`; units and direction optional):

        metrics:
          elapsed: {regex: 'real (?P<value>[0-9.]+)', unit: s, higher_is_better: false}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from runner.errors import TrialError, UsageError
from runner.hosts.base import CommandResult
from runner.workloads.base import Workload, WorkloadContext, register
from runner.records.metric import Metric

RESERVED = ("run", "metrics", "shell")


@register("command")
class Command(Workload):
    description = "any shell command; metrics from its JSON output or from regular expressions"
    params_schema = {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "run": {"type": "string", "minLength": 1, "description": "the command, run by /bin/sh -c; parameters are in $RUNNER_<NAME>"},
            "metrics": {
                "description": "json, or a mapping metric -> {regex, unit, higher_is_better}",
                "oneOf": [
                    {"const": "json"},
                    {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["regex"],
                            "properties": {
                                "regex": {"type": "string"},
                                "unit": {"type": "string"},
                                "higher_is_better": {"type": ["boolean", "null"]},
                            },
                        },
                    },
                ],
            },
            "estimate": {"type": "number", "minimum": 0, "description": "rough seconds per trial, for the plan"},
            "threads": {"x-cpus": True, "type": "integer", "minimum": 1, "description": "a CPU count (may be relative, e.g. \"100%\": of the trial's CPUs: vcpus if given (a guest's vCPUs, a container's cpuset), else the host's CPUs)"},
            "cpus": {"x-cpus": True, "type": "integer", "minimum": 1, "description": "a CPU count (may be relative, e.g. \"100%\": of the trial's CPUs: vcpus if given (a guest's vCPUs, a container's cpuset), else the host's CPUs)"},
        },
    }

    def validate(self, params: Mapping[str, Any]) -> None:
        if "run" not in params:
            raise UsageError("workload.params.run: the command workload needs a command to run")
        metrics = params.get("metrics", "json")
        if isinstance(metrics, Mapping):
            for name, spec in metrics.items():
                try:
                    pattern = re.compile(spec["regex"])
                except re.error as exc:
                    raise UsageError(f"workload.params.metrics.{name}.regex: not a regular expression: {exc}") from None
                if "value" not in pattern.groupindex:
                    raise UsageError(f"workload.params.metrics.{name}.regex: needs a named group (?P<value>...)")

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        return float(params.get("estimate", 1.0))

    def command(self, params: Mapping[str, Any], ctx: WorkloadContext) -> list[str]:
        exports = [f"RUNNER_{k.upper()}={_env_value(v)}" for k, v in sorted(params.items()) if k not in RESERVED]
        exports += [f"RUNNER_CPUS_AVAILABLE={ctx.cpus}", f"RUNNER_WORKDIR={ctx.workdir}"]
        return ["env", *exports, "/bin/sh", "-c", str(params["run"])]

    def parse(self, result: CommandResult, params: Mapping[str, Any]) -> list[Metric]:
        return parse_output(result.stdout, params.get("metrics", "json"))


def _env_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def parse_output(stdout: str, spec: Any) -> list[Metric]:
    """Metrics from a command's stdout: the last JSON object line (spec 'json') or named regexes."""
    if spec == "json":
        doc = _last_json_object(stdout)
        metrics = [m for k, v in doc.items() if (m := json_metric(str(k), v)) is not None]
        if not metrics:
            raise TrialError("command output: the JSON object has no numeric values")
        return metrics
    out = []
    for name, rule in spec.items():
        m = re.search(rule["regex"], stdout, re.MULTILINE)
        if m is None:
            raise TrialError(f"command output: metric {name!r}: regex {rule['regex']!r} did not match")
        try:
            value = float(m.group("value"))
        except ValueError:
            raise TrialError(f"command output: metric {name!r}: {m.group('value')!r} is not a number") from None
        out.append(Metric(name, value, rule.get("unit", ""), rule.get("higher_is_better", True)))
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def json_metric(name: str, v: Any) -> Metric | None:
    """One top-level key of the JSON output as a metric: a number (no unit, no direction), or an object
    {"value": number, "unit": "s", "higher_is_better": false} (unit and direction optional); other values are
    not metrics (None). A malformed metric object fails the trial, naming the key."""
    if _number(v):
        return Metric(name, float(v), "", None)
    if not isinstance(v, dict) or "value" not in v:
        return None
    unknown = sorted(set(v) - {"value", "unit", "higher_is_better"})
    if unknown:
        raise TrialError(f"command output: metric {name!r}: unknown key {unknown[0]!r}; allowed: value, unit, higher_is_better")
    if not _number(v["value"]):
        raise TrialError(f"command output: metric {name!r}: value {v['value']!r} is not a number")
    unit, hib = v.get("unit", ""), v.get("higher_is_better")
    if not isinstance(unit, str):
        raise TrialError(f"command output: metric {name!r}: unit {unit!r} is not a string")
    if hib is not None and not isinstance(hib, bool):
        raise TrialError(f"command output: metric {name!r}: higher_is_better {hib!r} is not true, false or null")
    return Metric(name, float(v["value"]), unit, hib)


def _last_json_object(stdout: str) -> dict[str, Any]:
    text = stdout.strip()
    candidates = [text] + [line.strip() for line in reversed(text.splitlines())]
    for cand in candidates:
        if cand.startswith("{"):
            try:
                doc = json.loads(cand)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                return doc
    first = text.splitlines()[0][:60] if text else "(empty)"
    raise TrialError(f"command output: no JSON object found on stdout (starts with {first!r})")
