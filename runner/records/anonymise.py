"""Anonymized archives: host names and addresses replaced by stable pseudonyms (HMAC-SHA256 with a key kept in
RUNNER_HOME/anonymize.key, so the same host gets the same pseudonym in every archive of this lab and nobody
outside can recompute them) in Parquet columns, JSON files, the matrix and file names."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from runner.errors import UsageError
from runner.paths import runner_home
from runner.records.store import HOST_FACT_TIMES, CampaignStore

IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?![\w:])")  # checked by ipaddress


def anonymize_key(home: Path | None = None) -> bytes:
    """This lab's pseudonym key (made once, kept in RUNNER_HOME/anonymize.key, mode 600)."""
    path = (home or runner_home()) / "anonymize.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    try:
        key = bytes.fromhex(path.read_bytes().decode("ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        key, why = b"", exc.strerror if isinstance(exc, OSError) else "not a hexadecimal key"
    else:
        why = "empty"
    if not key:
        raise UsageError(f"{path}: cannot read the anonymization key: {why}; restore it from a backup, or remove it "
                         "to make a new one (then the same hosts get other pseudonyms than in earlier archives)")
    return key


class Pseudonyms:
    """Replaces known host names and any IP address in strings by stable keyed pseudonyms."""

    def __init__(self, key: bytes, names: set[str]) -> None:
        self.key = key
        self.names = {n for n in names if n}
        alternatives = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        self._names_re = re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w-])") if alternatives else None

    def pseudonym(self, real: str, kind: str = "host") -> str:
        return f"{kind}-{hmac.new(self.key, real.encode(), hashlib.sha256).hexdigest()[:10]}"

    def text(self, value: str) -> str:
        if value in self.names:
            return self.pseudonym(value)
        if self._names_re is not None:
            value = self._names_re.sub(lambda m: self.pseudonym(m.group(0)), value)
        value = IPV4.sub(lambda m: self.pseudonym(m.group(0), "addr"), value)
        return IPV6.sub(lambda m: self._v6(m.group(0)), value)

    def _v6(self, text: str) -> str:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return text
        return self.pseudonym(text, "addr")

    def json(self, doc: Any) -> Any:
        """Every string value, and keys that are host names, of a JSON document."""
        if isinstance(doc, dict):
            return {(self.pseudonym(k) if k in self.names else k): self.json(v) for k, v in doc.items()}
        if isinstance(doc, list):
            return [self.json(v) for v in doc]
        return self.text(doc) if isinstance(doc, str) else doc

    def table(self, table: pa.Table) -> pa.Table:
        """Every string column, one transformation per distinct value."""
        for i, fld in enumerate(table.schema):
            if pa.types.is_string(fld.type) or pa.types.is_large_string(fld.type):
                encoded = pc.dictionary_encode(table.column(i)).combine_chunks()
                mapped = pa.array([self.text(v) for v in encoded.dictionary.to_pylist()], pa.string())
                column = pa.DictionaryArray.from_arrays(encoded.indices, mapped).cast(fld.type)
                table = table.set_column(i, fld, column)
        return table


def host_names(root: Path) -> set[str]:
    """Every host name a campaign mentions: its hosts, the `host` column, the controllers."""
    store = CampaignStore(root)
    names: set[str] = set()
    for when in ("before", *HOST_FACT_TIMES):
        for host, facts in store.host_facts(when).items():
            names.add(host)
            names |= {str(facts[k]) for k in ("host", "hostname", "fqdn", "nodename") if facts.get(k)}
    prov = store.read_provenance()
    names |= {str(prov["controller"])} if prov.get("controller") else set()
    names |= {str(launch.get("controller")) for launch in prov.get("launches", []) if launch.get("controller")}
    names |= set(prov.get("dead_hosts") or {})
    names |= set(store.read_table("trials").column("host").to_pylist())
    return names
