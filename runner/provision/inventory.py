"""The Ansible inventory, read by Ansible itself, turned into `HostSpec`s the runner connects to.

Ansible's DataLoader, InventoryManager and VariableManager load the file, so host_vars/, group_vars/,
group nesting, templated values and the connection variables (ansible_host, ansible_port, ansible_user,
ansible_ssh_private_key_file, ansible_connection and their ansible_ssh_* aliases) mean exactly what they
mean to ansible-playbook. A `-o UserKnownHostsFile=...` in ansible_ssh_common_args/extra_args is honoured,
so the runner checks host keys against the same file as Ansible.

A known_hosts file given to a command (`--known-hosts FILE`, else the environment's RUNNER_KNOWN_HOSTS)
replaces the inventory's for every SSH host: command line > environment > inventory > ~/.ssh/known_hosts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import ipaddress
import json
import os
import re
import shlex
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from runner.errors import UnknownNameError, UsageError
from runner.hosts.base import LOCAL_NAMES, Host
from runner.hosts.local import LocalHost
from runner.hosts.ssh import HostSpec, SSHHost, check_known_hosts_file
from runner.textfile import StrictLoader, check_file_name, load_yaml, read_text

DEFAULT_CONNECT_TIMEOUT = 10.0  # Ansible's own default `timeout`
SSH_CONNECTIONS = frozenset({"ssh", "paramiko", "paramiko_ssh", "smart"})
_DISPLAY_LOCK = threading.Lock()  # guards the patch of Ansible's Display singleton in _ansible_warnings

# Variable names Ansible's ssh connection plugin reads, lowest precedence first (the last one set wins).
_ADDRESS = ("ansible_host", "ansible_ssh_host")
_PORT = ("ansible_port", "ansible_ssh_port")
_USER = ("ansible_user", "ansible_ssh_user")
_KEY = ("ansible_private_key_file", "ansible_ssh_private_key_file")
_TIMEOUT = ("ansible_timeout", "ansible_ssh_timeout")
_SSH_ARGS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")


@dataclass(frozen=True)
class Inventory:
    """Hosts and groups of one inventory file. `groups` maps a group to its hosts, nested groups included."""

    path: Path
    hosts: Mapping[str, HostSpec]
    groups: Mapping[str, tuple[str, ...]]
    unsupported: Mapping[str, str] = field(default_factory=dict)  # host -> its ansible_connection

    def resolve(self, pattern: str) -> list[HostSpec]:
        """The hosts of a group, or the one host of that name. Like Ansible, `localhost` always exists."""
        if pattern in self.groups:
            names = list(self.groups[pattern])
        elif pattern in self.hosts or pattern in self.unsupported:
            names = [pattern]
        elif pattern == "localhost":
            return [HostSpec(name="localhost", address="127.0.0.1", user=getpass.getuser(), local=True)]
        else:
            raise UnknownNameError(f"no host or group '{pattern}' in {self.path}; known: {', '.join(self.known())}")
        for name in names:
            if name in self.unsupported:
                raise UsageError(
                    f"{self.path}: host {name}: ansible_connection '{self.unsupported[name]}' is not supported "
                    f"by the runner; allowed: local, {', '.join(sorted(SSH_CONNECTIONS))}"
                )
        return [self.hosts[n] for n in names]

    def known(self) -> list[str]:
        """Group names, then host names, sorted; the implicit empty group `ungrouped` left out."""
        groups = sorted(g for g, members in self.groups.items() if members or g != "ungrouped")
        return groups + sorted({*self.hosts, *self.unsupported})


def load_inventory(path: Path | str, known_hosts: Path | str | None = None, *, scripts: bool = False) -> Inventory:
    """Load an Ansible inventory (file or directory) with Ansible's own loader. `known_hosts` (a command's
    --known-hosts or RUNNER_KNOWN_HOSTS) replaces the inventory's known_hosts file for every SSH host; it is
    checked first (UsageError naming it if it is missing or not a known_hosts file).

    Ansible runs every executable inventory file as a dynamic inventory script. `scripts` says the user named
    this inventory (--inventory, RUNNER_INVENTORY): only then may it hold one. An inventory found by default or
    named by a matrix file (which may come from anyone) with an executable file is refused before Ansible runs
    anything."""
    if known_hosts is not None:
        known_hosts = Path(known_hosts).expanduser()
        check_known_hosts_file(known_hosts)
    # Ansible is imported where it is used (here and below): 0.2 s of imports, for reading an inventory only (a
    # worker imports this module for connect()).
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    shown = Path(path)
    source = shown.resolve()
    if not source.exists():
        raise UsageError(f"inventory {shown} does not exist")
    files = inventory_files(shown)
    if not files:
        raise UsageError(f"{shown}: no inventory files in this directory; allowed: an INI or YAML inventory, or a directory of them")
    for file in files:
        check_inventory_file(file)
    if not scripts:
        refuse_scripts(files)
    loader = DataLoader()
    with _ansible_warnings() as warnings:  # Ansible only warns about a source it cannot parse and goes on without it
        manager = InventoryManager(loader=loader, sources=[str(source)])
    for i, (message, _) in enumerate(warnings):
        if (bad := re.fullmatch(r"Unable to parse (.+) as an inventory source", message, re.DOTALL)) is not None:
            where = _shown_path(Path(bad[1]), source, shown)
            reasons = [reason for _, reason in warnings[:i] if reason]
            why = f" ({reasons[-1]})" if reasons else ""
            raise UsageError(f"{where}: Ansible cannot parse it as an inventory{why}; allowed: an INI or YAML inventory, "
                             f"or a directory of them")
    variables = VariableManager(loader=loader, inventory=manager)
    if not manager.hosts:
        why = f" ({warnings[0][0]})" if warnings else ""
        raise UsageError(f"{shown}: no hosts{why}")
    shown_base, base = (shown, source) if source.is_dir() else (shown.parent, source.parent)
    same_dir = shown_base.resolve() == base  # not so for an inventory file that is a symlink to another directory's
    for file, kind in vars_files(loader, manager, base):
        check_vars_file(shown_base / file.relative_to(base) if same_dir else file, kind)
    hosts: dict[str, HostSpec] = {}
    unsupported: dict[str, str] = {}
    for name, host in manager.hosts.items():
        # A host's name names its facts file (hosts/<name>.json) and its work directory: never a path.
        check_file_name(name, f"{shown}: host", allowed="a host name without /, not starting with a dot, printable")
        try:
            hostvars = variables.get_vars(host=host, include_hostvars=False)
        except AnsibleError as e:  # what check_vars_file cannot see (a file encrypted whole, without the vault password)
            raise UsageError(f"{shown}: host {name}: Ansible cannot read its variables: {' '.join(str(e).split())}") from None
        templar = Templar(loader=loader, variables=hostvars)
        conn_vars = {k: _template(templar, hostvars[k], shown, name, k) for k in _CONNECTION_VARS if k in hostvars}
        connection = conn_vars.get("ansible_connection")
        if connection is not None and connection != "local" and connection not in SSH_CONNECTIONS:
            unsupported[name] = str(connection)
            continue
        hosts[name] = with_known_hosts(host_spec(name, conn_vars, shown), known_hosts)
    groups = {g: tuple(h.name for h in group.get_hosts()) for g, group in manager.groups.items()}
    return Inventory(path=shown, hosts=hosts, groups=groups, unsupported=unsupported)


def refuse_scripts(files: Sequence[Path]) -> None:
    """UsageError naming the first executable file (which Ansible would run as a dynamic inventory script) of an
    inventory the user did not name."""
    for file in files:
        if file.is_file() and os.access(file, os.X_OK):
            raise UsageError(f"{file}: an executable file, which Ansible would run as a dynamic inventory script; the runner "
                             "runs one only when you name the inventory (--inventory or RUNNER_INVENTORY); otherwise "
                             f"`chmod -x {file}`")


def inventory_files(path: Path) -> list[Path]:
    """The files Ansible reads as inventory sources from `path`: the file itself, or for a directory its files,
    subdirectories included, less those Ansible skips (hidden, host_vars/, group_vars/, *.md, *~, ...)."""
    if not path.is_dir():
        return [path]
    from ansible.inventory.manager import IGNORED

    files: list[Path] = []
    for entry in sorted(path.iterdir()):
        if not IGNORED.search(os.fsencode(entry.name)):
            files.extend(inventory_files(entry))
    return files


def check_inventory_file(path: Path) -> None:
    """One inventory source is UTF-8 text (and a .yml/.yaml one valid YAML), else one UsageError naming it: Ansible
    would read a binary or non-UTF-8 file with its bytes escaped into host names, and only warn about broken YAML."""
    text = read_text(path, "inventory file")  # a FIFO, a device or an oversized file is refused here, before Ansible
    if path.suffix not in (".yml", ".yaml"):
        return
    doc = load_yaml(text, path, "inventory", loader=_InventoryLoader)  # duplicate keys, alias bombs: one line naming it
    if (loop := group_loop(doc)) is not None:
        raise UsageError(f"{path}: group {loop[0]!r} includes itself through its children ({' -> '.join(loop)}); "
                         "a group may not be its own child, directly or through others")


def group_loop(doc: Any) -> list[str] | None:
    """The first loop of groups in a YAML inventory's `children` (['a', 'b', 'a']), or None (pure): Ansible only
    says "can't add group to itself", without the group's name, or loops."""
    if not isinstance(doc, dict):
        return None
    edges: dict[str, set[str]] = {}

    def walk(groups: Any) -> None:
        if not isinstance(groups, dict):
            return
        for name, body in groups.items():
            children = body.get("children") if isinstance(body, dict) else None
            if isinstance(children, dict):
                edges.setdefault(str(name), set()).update(map(str, children))
                walk(children)

    walk(doc)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for child in sorted(edges.get(node, ())):
            if state.get(child) == 1:
                return [*path[path.index(child):], child] if child in path else [node, child]
            if state.get(child) is None and (found := visit(child, [*path, child])) is not None:
                return found
        state[node] = 2
        return None

    for start in sorted(edges):
        if state.get(start) is None and (found := visit(start, [start])) is not None:
            return found
    return None


def vars_files(loader: Any, manager: Any, base: Path) -> list[tuple[Path, str]]:
    """(file, "group_vars" or "host_vars") of every variables file Ansible reads beside the inventory (`base`: its
    directory, or the directory given) for its groups and hosts: `<name>`, `<name>.yml/.yaml/.json`, or the
    files of a directory `<name>/` (Ansible's host_group_vars plugin and its own DataLoader.find_vars_files)."""
    found: list[tuple[Path, str]] = []
    for kind, names in (("group_vars", manager.groups), ("host_vars", manager.hosts)):
        where = base / kind
        if where.is_dir():
            for name in sorted(names):
                if not name.startswith(os.sep):  # Ansible skips such 'chroot' names too
                    found.extend((Path(f), kind) for f in loader.find_vars_files(str(where), name))
    return found


class _InventoryLoader(StrictLoader):
    """YAML as Ansible reads an inventory or variables file, for checking only: its tags (!vault, !unsafe) read
    as null; duplicate keys, alias bombs and NaN refused (textfile.StrictLoader)."""


_InventoryLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def check_vars_file(path: Path, kind: str) -> None:
    """A host_vars/ or group_vars/ file is UTF-8 text holding a mapping of variables (YAML or JSON), else one
    UsageError naming it: Ansible escapes a binary or non-UTF-8 file's bytes and fails with a traceback."""
    what = f"{kind} file"
    text = read_text(path, what)
    if text.startswith("$ANSIBLE_VAULT;"):  # encrypted whole (ansible-vault encrypt): Ansible decrypts it
        return
    try:
        doc = json.loads(text) if path.suffix == ".json" else None
    except ValueError:
        doc = None  # Ansible reads a .json file that is not JSON as YAML
    if doc is None:
        doc = load_yaml(text, path, what, loader=_InventoryLoader)
    if doc is not None and not isinstance(doc, dict):
        raise UsageError(f"{path}: holds a {type(doc).__name__}, not a mapping of variable names to values; allowed in {kind}/: "
                         "a mapping such as `ansible_user: admin`")


@contextlib.contextmanager
def _ansible_warnings() -> Iterator[list[tuple[str, str]]]:
    """Collect what Ansible's display would print as warnings (message, the exception's text or "") instead of
    printing it; deprecation notices are dropped. Display is Ansible's process-wide singleton."""
    from ansible.utils.display import Display

    display = Display()
    collected: list[tuple[str, str]] = []

    def warning(msg: str, *args: Any, **kwargs: Any) -> None:
        collected.append((" ".join(str(msg).split()), ""))

    def error_as_warning(msg: str | None, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        collected.append((" ".join(str(msg or "").split()), " ".join(str(getattr(exception, "message", exception)).split())))

    def deprecated(*args: Any, **kwargs: Any) -> None:
        return None

    patched = {"warning": warning, "error_as_warning": error_as_warning, "deprecated": deprecated}
    with _DISPLAY_LOCK:  # one patch at a time: two threads loading inventories must not restore each other's
        saved = {name: display.__dict__[name] for name in patched if name in display.__dict__}
        display.__dict__.update(patched)
        try:
            yield collected
        finally:
            for name in patched:
                if name in saved:
                    display.__dict__[name] = saved[name]
                else:
                    display.__dict__.pop(name, None)


def _shown_path(path: Path, source: Path, shown: Path) -> Path:
    """`path` (under the resolved `source`) as the user named it (under `shown`)."""
    try:
        return shown / path.relative_to(source) if path != source else shown
    except ValueError:
        return path


# The host's guest network (bridge name, CIDR) for kvm and xen guests; every host may use the same.
_GUEST_NET = ("runner_guest_bridge", "runner_guest_subnet")
HOLD_PATH = "runner_hold_path"  # the host's hold file (runner.lab.reservations), a full path
# What the host runs and how fast (runner.execution.placement): the environments it may run, and for estimates the
# seconds one guest takes to boot there per environment and the seconds a trial costs beyond its workload.
ENVS, BOOT_S, TRIAL_S = "runner_envs", "runner_boot_s", "runner_trial_s"
_CONNECTION_VARS = ("ansible_connection", *_ADDRESS, *_PORT, *_USER, *_KEY, *_TIMEOUT, *_SSH_ARGS, *_GUEST_NET, HOLD_PATH,
                    ENVS, BOOT_S, TRIAL_S)


def _template(templar: Any, value: Any, path: Path, host: str, key: str) -> Any:
    from ansible.errors import AnsibleError

    try:
        value = templar.template(value)
    except AnsibleError as e:
        raise UsageError(f"{path}: host {host}: {key}: {' '.join(str(e).split())}") from None
    # Ansible hands out tagged str/int subclasses; keep plain values in our records.
    if isinstance(value, bool):
        return value
    for plain in (int, float, str):
        if isinstance(value, plain):
            return plain(value)
    return value


def host_spec(name: str, conn_vars: Mapping[str, Any], path: Path) -> HostSpec:
    """Build a HostSpec from a host's (templated) connection variables. Pure."""

    def last(keys: tuple[str, ...]) -> Any:
        found = [conn_vars[k] for k in keys if conn_vars.get(k) not in (None, "")]
        return found[-1] if found else None

    address = last(_ADDRESS)
    local = conn_vars.get("ansible_connection") == "local" or (name in LOCAL_NAMES and address is None)
    port = _number(last(_PORT), 22, int, path, name, "ansible_port")
    timeout = _number(last(_TIMEOUT), DEFAULT_CONNECT_TIMEOUT, float, path, name, "ansible_timeout")
    if not 0 < port < 65536:
        raise UsageError(f"{path}: host {name}: ansible_port {port} out of range; allowed: 1..65535")
    key = last(_KEY)
    ssh_args = " ".join(str(conn_vars[k]) for k in _SSH_ARGS if conn_vars.get(k))
    bridge, subnet = (conn_vars.get(k) for k in _GUEST_NET)
    if bridge is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", str(bridge)):
        raise UsageError(f"{path}: host {name}: runner_guest_bridge {bridge!r} is not an interface name (1-15 of A-Za-z0-9_.-)")
    if subnet is not None:
        try:
            net = ipaddress.ip_network(str(subnet))
        except ValueError:
            raise UsageError(f"{path}: host {name}: runner_guest_subnet {subnet!r} is not a network such as 10.214.0.0/24") from None
        if net.num_addresses < 16:
            raise UsageError(f"{path}: host {name}: runner_guest_subnet {subnet} is too small; use a /28 or larger")
    hold = conn_vars.get(HOLD_PATH)
    if hold not in (None, "") and (not isinstance(hold, str) or not hold.startswith("/") or hold.endswith("/")
                                   or any(c in hold for c in "\n\0")):
        raise UsageError(f"{path}: host {name}: {HOLD_PATH} {hold!r} is not the full path of a file, e.g. /var/lib/runner/holds/hold.json")
    envs, boot_s, trial_s = _placement_vars(conn_vars, path, name)
    return HostSpec(
        name=name,
        address=str(address or name),
        port=port,
        user=str(last(_USER) or getpass.getuser()),
        key_file=Path(str(key)).expanduser() if key else None,
        known_hosts=known_hosts_from_ssh_args(ssh_args),
        connect_timeout=timeout,
        local=local,
        guest_bridge=str(bridge) if bridge is not None else None,
        guest_subnet=str(subnet) if subnet is not None else None,
        hold_path=hold or None,
        envs=envs,
        boot_s=boot_s,
        trial_s=trial_s,
    )


def _placement_vars(conn_vars: Mapping[str, Any], path: Path, name: str) -> tuple[tuple[str, ...] | None, tuple[tuple[str, float], ...], float | None]:
    """runner_envs (a list of environment names), runner_boot_s (env -> seconds) and runner_trial_s (seconds),
    checked for their shape here; the names are checked against the known environments when a campaign plans
    (runner.execution.placement). Pure."""
    envs = conn_vars.get(ENVS)
    if envs is not None:
        if isinstance(envs, str):
            envs = [e.strip() for e in envs.split(",") if e.strip()]
        if not isinstance(envs, (list, tuple)) or not all(isinstance(e, str) and e for e in envs):
            raise UsageError(f"{path}: host {name}: {ENVS} {envs!r} is not a list of environment names, e.g. [host, kvm]")
        envs = tuple(dict.fromkeys(str(e) for e in envs))
    boot = conn_vars.get(BOOT_S)
    boot_s: tuple[tuple[str, float], ...] = ()
    if boot is not None:
        if not isinstance(boot, Mapping):
            raise UsageError(f"{path}: host {name}: {BOOT_S} {boot!r} is not a mapping of environment to seconds, e.g. {{kvm: 40}}")
        pairs = []
        for env, seconds in boot.items():
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                raise UsageError(f"{path}: host {name}: {BOOT_S}.{env} {seconds!r} is not a number of seconds >= 0")
            pairs.append((str(env), float(seconds)))
        boot_s = tuple(sorted(pairs))
    trial = conn_vars.get(TRIAL_S)
    if trial is not None and (isinstance(trial, bool) or not isinstance(trial, (int, float)) or trial < 0):
        raise UsageError(f"{path}: host {name}: {TRIAL_S} {trial!r} is not a number of seconds >= 0")
    return envs, boot_s, None if trial is None else float(trial)


def _number(value: Any, default: Any, kind: type, path: Path, host: str, key: str) -> Any:
    if value is None:
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{path}: host {host}: {key} {value!r} is not {what}") from None


def known_hosts_from_ssh_args(args: str) -> Path | None:
    """The first UserKnownHostsFile in ssh arguments ('-o UserKnownHostsFile=F', '-oUserKnownHostsFile F')."""
    try:
        words = shlex.split(args)
    except ValueError:
        return None
    options: list[str] = []
    for i, word in enumerate(words):
        if word == "-o" and i + 1 < len(words):
            options.append(words[i + 1])
        elif word.startswith("-o") and len(word) > 2:
            options.append(word[2:])
    for option in options:
        key, _, value = option.strip().replace("=", " ", 1).partition(" ")
        if key.lower() == "userknownhostsfile" and value.split():
            return Path(value.split()[0]).expanduser()
    return None


def with_known_hosts(spec: HostSpec, known_hosts: Path | None) -> HostSpec:
    """`spec` checking host keys against `known_hosts` when given (it wins over the inventory's); local hosts
    have no host key and stay as they are. Pure."""
    if known_hosts is None or spec.local:
        return spec
    return dataclasses.replace(spec, known_hosts=Path(known_hosts))


def check_known_hosts(specs: Sequence[HostSpec]) -> None:
    """Every known_hosts file the SSH hosts of `specs` name exists and parses, before anything connects;
    else one UsageError naming the file (and the first host that uses it)."""
    for path in sorted({s.known_hosts for s in specs if not s.local and s.known_hosts is not None}):
        try:
            check_known_hosts_file(path)
        except UsageError as exc:
            user = next(s.name for s in specs if s.known_hosts == path)
            raise UsageError(f"{exc} (the known_hosts file of host {user})") from None


def connect(spec: HostSpec) -> Host:
    """A Host for the spec: this machine for local hosts, otherwise an SSHHost."""
    return LocalHost(spec.name) if spec.local else SSHHost(spec)
