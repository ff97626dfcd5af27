#!/usr/bin/python
"""Ansible module: set one sysfs value idempotently, reporting the previous one."""

from __future__ import annotations

import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: sysfs_value
short_description: Set one sysfs value when it differs
description:
  - Reads O(path); files that list choices (C(always [madvise] never)) count as their bracketed choice.
  - Writes O(value) only when it differs, then reads it back. Supports check mode.
options:
  path:
    description: The sysfs file.
    type: path
    required: true
  value:
    description: The value to write.
    type: str
    required: true
author: runner project
"""

RETURN = r"""
previous:
  description: The value before the change.
  type: str
  returned: always
"""


def _current(path: str) -> str:
    with open(path) as f:
        text = f.read().strip()
    m = re.search(r"\[([^\]]+)\]", text)
    return m.group(1) if m else text


def main() -> None:
    module = AnsibleModule(
        argument_spec={"path": {"type": "path", "required": True}, "value": {"type": "str", "required": True}},
        supports_check_mode=True,
    )
    path, value = module.params["path"], module.params["value"]
    try:
        previous = _current(path)
    except OSError as exc:
        module.fail_json(msg=f"cannot read {path}: {exc}")
    if previous == value:
        module.exit_json(changed=False, previous=previous)
    if not module.check_mode:
        try:
            with open(path, "w") as f:
                f.write(value)
            now = _current(path)
        except OSError as exc:
            module.fail_json(msg=f"cannot write {value!r} to {path}: {exc}")
        if now != value:
            module.fail_json(msg=f"{path} shows {now!r} after writing {value!r}")
    module.exit_json(changed=True, previous=previous, diff={"before": previous + "\n", "after": value + "\n"})


if __name__ == "__main__":
    main()
