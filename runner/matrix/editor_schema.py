"""The editors' part of runner/matrix/schema.json: the workload names and each workload's parameters.

schema.json's top-level `allOf` holds a rule naming the known workloads, then one `if`/`then` block per
workload: when `workload.name` is that workload, `workload.params` and the values of `axes` must fit its
parameters (the workload's `params_schema` and the runner's own parameters: env, vcpus, ...). Editors (the YAML
language server, through the `# yaml-language-server: $schema=...` line of the examples) and check-jsonschema
read them, so `lock: tiket` is underlined before anything runs. The runtime validator (runner.matrix.load)
leaves `allOf` out: it checks the same rules itself, one parameter at a time, with messages that name the
allowed values.

The blocks are generated from the registered workloads: after adding a workload, or changing a workload's
parameters, run `python -m runner.matrix.editor_schema` (tests/test_schema_editors.py says when it is due).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.matrix.load import RUNNER_PARAMS_SCHEMA
from runner.workloads import base

SCHEMA = Path(__file__).with_name("schema.json")
# A CPU count relative to the trial's CPUs, as runner.matrix.load.PERCENT reads it ("50%", "200 %").
PERCENT_PATTERN = r"^\s*\d+(\.\d+)?\s*%\s*$"


def editor_value(schema: Mapping[str, Any]) -> dict[str, Any]:
    """One parameter's schema as an editor should check it: without the runner's `x-` keys, and a CPU count
    (x-cpus) may also be a percentage (pure)."""
    plain = {k: v for k, v in schema.items() if not k.startswith("x-")}
    if not schema.get("x-cpus"):
        return plain
    description = plain.pop("description", None)
    out: dict[str, Any] = {"anyOf": [plain, {"type": "string", "pattern": PERCENT_PATTERN}]}
    return {**({"description": description} if description else {}), **out}


def workload_rule(name: str, params_schema: Mapping[str, Any], runner_params: Mapping[str, Any]) -> dict[str, Any]:
    """The if/then block of one workload (pure)."""
    props = {**{k: editor_value(v) for k, v in runner_params.items()},
             **{k: editor_value(v) for k, v in params_schema.get("properties", {}).items()}}
    props = dict(sorted(props.items()))
    closed = params_schema.get("additionalProperties", False) is False
    params: dict[str, Any] = {"type": "object", "properties": props}
    axes: dict[str, Any] = {"properties": {k: {"items": v} for k, v in props.items()}}
    if closed:
        params["additionalProperties"] = False
        axes["propertyNames"] = {"enum": list(props)}
    return {
        "if": {"required": ["workload"], "properties": {"workload": {"properties": {"name": {"const": name}}}}},
        "then": {"properties": {"workload": {"properties": {"params": params}}, "axes": axes}},
    }


def editor_rules() -> list[dict[str, Any]]:
    """schema.json's `allOf`: the workload names, then one block per registered workload."""
    names = base.known()
    return [{"properties": {"workload": {"properties": {"name": {"enum": names}}}}},
            *(workload_rule(n, base.get(n).params_schema, RUNNER_PARAMS_SCHEMA) for n in names)]


def with_rules(text: str, rules: list[dict[str, Any]]) -> str:
    """schema.json's text with `rules` as its last top-level key, `allOf`, one block per workload; the rest of
    the text as it was written (pure)."""
    cut = text.find(',\n  "allOf": [')
    head = text[:cut] if cut >= 0 else text.rstrip()[:-1].rstrip()  # without the closing brace
    body = ",\n".join("    " + json.dumps(rule, indent=2).replace("\n", "\n    ") for rule in rules)
    return f'{head},\n  "allOf": [\n{body}\n  ]\n}}\n'


def main() -> int:
    SCHEMA.write_text(with_rules(SCHEMA.read_text(), editor_rules()))
    print(f"{SCHEMA}: allOf written for workloads {', '.join(r['if']['properties']['workload']['properties']['name']['const'] for r in editor_rules()[1:])}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
