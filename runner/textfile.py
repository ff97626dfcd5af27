"""Read a file a user gave us (matrix, CSV, inventory, schedule, tuning knobs, known_hosts) and the YAML in it.

The one place that turns a missing file, a directory, a special file (FIFO, device, socket), a file over the
size bound, an unreadable, binary or non-UTF-8 file into a one-line UsageError naming the file. A FIFO is
opened without blocking and refused, so no read can hang; a device such as /dev/zero is refused before a byte
is read, so none can fill the memory.

`load_yaml` is the one YAML loader for user files: duplicate keys are refused (YAML says keys are unique;
PyYAML keeps the last in silence), so is an alias "bomb" (anchors whose expansion would exceed
`YAML_MAX_NODES` nodes, or an alias that refers to itself), and so are NaN and infinity (`.nan`, `.inf`:
no count, duration or estimate may be one). Floats are read as YAML 1.2 does: `1e3` is a number, not the
string YAML 1.1 makes of it.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from runner.errors import UsageError

# The largest user file read whole: matrix, inventory, schedules and tuning files are a few KiB; a CSV of
# measurements may be large, so callers reading one pass a bound of their own.
MAX_TEXT_BYTES = 16 * 1024 * 1024
MAX_CSV_BYTES = 1024 * 1024 * 1024
# The largest YAML document a user file may expand to (nodes, aliases expanded): a matrix or inventory has
# hundreds; a billion-laughs document would have billions.
YAML_MAX_NODES = 100_000


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _a(what: str) -> str:
    return f"{'an' if what[0] in 'aeiou' else 'a'} {what}"


def read_bytes(path: Path, what: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is one UsageError naming the file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not {_a(what)}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{path}: is a directory, not {_a(what)}")
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: is {_kind(st.st_mode)}, not {_a(what)}; give a regular file")
        if st.st_size > limit:
            raise UsageError(f"{path}: {st.st_size} bytes, more than {_a(what)} may have ({limit} bytes)")
        chunks, size = [], 0
        while True:  # a file that grows while read is cut at the bound, not read without end
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UsageError(f"{path}: more than {limit} bytes, more than {_a(what)} may have")
        return b"".join(chunks)
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not {_a(what)}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: Path, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """The file's text (UTF-8, a byte order mark dropped); `what` names the kind of file in messages ("matrix file")."""
    path = Path(path)
    data = read_bytes(path, what, limit)
    if b"\0" in data:
        raise UsageError(f"{path}: a binary file, not {_a(what)}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the {what} as UTF-8") from None


# ----- YAML -------------------------------------------------------------------------------------------------

class YamlRefused(yaml.YAMLError):
    """What the strict loader refuses beyond YAML syntax: a duplicate key, an alias bomb, NaN or infinity."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


# YAML 1.2 core schema floats: 1e3 and 1.5e-3 are numbers (YAML 1.1 wants a dot and a signed exponent).
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
                        |[-+]?\.(?:inf|Inf|INF)
                        |\.(?:nan|NaN|NAN))$""", re.X)
_FLOAT_TAG = "tag:yaml.org,2002:float"
_INT_TAG = "tag:yaml.org,2002:int"


class StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses duplicate keys, expansions past YAML_MAX_NODES and non-finite floats."""

    max_nodes = YAML_MAX_NODES

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node, self.max_nodes)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader refuses it itself
                if first is not None:
                    raise YamlRefused(f"duplicate key {key!r} (first at line {first.line + 1}); a key may appear once",
                                      key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: Any) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise YamlRefused(f"{node.value!r} is not a finite number; NaN and infinity are not allowed", node.start_mark)
        return value


StrictLoader.add_constructor(_FLOAT_TAG, StrictLoader.construct_yaml_float)
StrictLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
StrictLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))
for _ch, _resolvers in StrictLoader.yaml_implicit_resolvers.items():  # an int (1_000, 0x10) wins over a float
    _resolvers.sort(key=lambda r: r[0] != _INT_TAG)


class Yaml12Loader(StrictLoader):
    """StrictLoader with YAML 1.2 booleans: only true/false. (YAML 1.1 reads `on:`, `no`, `off` as booleans, so a
    `retry: {on: ...}` key or a description `no` would change.) The loader of matrix files and what quotes them."""


Yaml12Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in StrictLoader.yaml_implicit_resolvers.copy().items()
}
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _check_expansion(root: Any, limit: int) -> None:
    """Refuse a node graph whose tree (aliases expanded) has more than `limit` nodes, or a cycle of aliases."""
    if root is None:
        return
    memo: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            memo[key] = 1 + sum(memo[id(c)] for c in children)
            active.discard(key)
            if memo[key] > limit:
                raise YamlRefused(f"the document expands to more than {limit} values through its aliases (&anchor/*alias); "
                                  "write the values out or use fewer aliases", node.start_mark)
            continue
        if key in memo:
            continue
        if key in active:
            raise YamlRefused("an alias refers to a value that contains it (a cycle)", node.start_mark)
        active.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in active and id(child) not in memo:
                raise YamlRefused("an alias refers to a value that contains it (a cycle)", child.start_mark)
            if id(child) not in memo:
                stack.append((child, False))


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def yaml_problem(exc: yaml.YAMLError, syntax: str = "") -> str:
    """`line L column C: <syntax>problem` of a YAML error, one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    return where + syntax + " ".join(str(problem).split())


def load_yaml(text: str, name: str | Path, what: str = "file", *, loader: type[StrictLoader] = StrictLoader,
              error: type[UsageError] = UsageError, line_first: bool = False, syntax: str = "not valid YAML") -> Any:
    """The YAML document in `text` (from file `name`, a `what`), read by `loader`; anything refused is one
    `error` naming the file, the line and the problem: `FILE: <syntax>: line L column C: problem`
    (`line_first`: `FILE: line L column C: not valid YAML: problem`, as the matrix loader always said)."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except YamlRefused as exc:
        raise error(f"{name}: {yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        shown = yaml_problem(exc, f"{syntax}: ") if line_first else f"{syntax}: " + yaml_problem(exc)
        raise error(f"{name}: {shown}") from None
    except RecursionError:
        raise error(f"{name}: nested too deeply to be {_a(what)}") from None


def read_yaml_file(path: Path, what: str, *, loader: type[StrictLoader] = StrictLoader, error: type[UsageError] = UsageError) -> Any:
    """read_text then load_yaml: a user's YAML file, every refusal one line naming it."""
    return load_yaml(read_text(path, what), path, what, loader=loader, error=error)


# ----- names that become file names -------------------------------------------------------------------------

def check_file_name(name: Any, what: str, pattern: re.Pattern[str] | None = None, allowed: str = "") -> str:
    """`name` (a host, schedule or campaign name from a file or the command line) if it is safe as one file
    name: a non-empty string with no `/`, no NUL or control character, not `.`/`..`, not hidden (`.x`), at
    most 200 characters, and matching all of `pattern` when given. Anything else is one UsageError: a name such
    as `../x` or `/etc/x` would make the file it names land outside its directory."""
    ok = (isinstance(name, str) and 0 < len(name) <= 200 and "/" not in name and not name.startswith(".")
          and name.isprintable() and (pattern is None or pattern.fullmatch(name) is not None))
    if not ok:
        rule = allowed or "a name without /, not starting with a dot, printable, at most 200 characters"
        raise UsageError(f"{what} {name!r} is not allowed as a file name; allowed: {rule}")
    return name
