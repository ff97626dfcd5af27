"""Datasets that leave the lab: one checked archive per campaign, import and merge, DuckDB queries, publishing.
This module gathers the names; the work is done by runner.records.archive (pack, verify), .anonymise,
.datacard, .importing (import and merge), .query (read-only DuckDB) and .remote (publish, fetch).


An archive (`<campaign>.tar.gz`) holds one directory `<campaign>/` with the campaign's dataset as
runner.records.schema lays it out, plus:
    archive.json      archive format version, schema version, campaign, host fingerprints, anonymized?
    schema.json       data dictionary: every column of both tables with type, meaning, unit, direction,
                      and every metric found with its unit and direction
    DATA-CARD.md      for people: what was measured, how, on what, how to read and cite it
    MANIFEST.sha256   SHA-256 of every other file (`sha256sum -c` format)
`verify` reads the whole archive: a truncated or tampered one is refused with one line naming what is
wrong. An archive, a campaign or a datasets directory the user named that is missing, empty, damaged, of an
unreadable version or of the wrong shape is bad input (BadDatasetError, UsageError: exit 2); what fails around
good data (a held lock, a full disk, a server that does not answer) is a DatasetError (exit 1).
`--anonymize` replaces host names and addresses by stable pseudonyms (HMAC-SHA256 with a key kept
in RUNNER_HOME/anonymize.key, so the same host gets the same pseudonym in every archive of this lab and
nobody outside can recompute them) in Parquet columns, JSON files, the matrix and file names.
"""

from __future__ import annotations

from runner.records.anonymise import IPV4, IPV6, Pseudonyms, anonymize_key, host_names
from runner.records.archive import (
    ARCHIVE_VERSION,
    GENERATED,
    MANIFEST,
    MAX_BYTES_ENV,
    Limits,
    Verified,
    fingerprint,
    pack,
    verify,
)
from runner.records.datacard import CITATION, DIRECTION, UNITS, data_card, data_dictionary
from runner.records.importing import Imported, comparable, datasets_dir, import_archive
from runner.records.query import DEFAULT_LIMIT, QueryResult, campaigns, connect_views, query, run_query
from runner.records.remote import (
    CHECKSUM_SUFFIX,
    NETWORK_SCHEMES,
    OBJECT_STORES,
    READ_ONLY_SCHEMES,
    S3_ENDPOINT_ENV,
    SHARE_SCHEMES,
    fetch,
    publish,
    s3_endpoint_url,
    share_filesystem,
)

__all__ = [
    "ARCHIVE_VERSION", "CHECKSUM_SUFFIX", "CITATION", "DEFAULT_LIMIT", "DIRECTION", "GENERATED", "IPV4", "IPV6",
    "MANIFEST", "MAX_BYTES_ENV", "NETWORK_SCHEMES", "OBJECT_STORES", "READ_ONLY_SCHEMES", "S3_ENDPOINT_ENV",
    "SHARE_SCHEMES", "UNITS", "Imported", "Limits", "Pseudonyms", "QueryResult", "Verified", "anonymize_key",
    "campaigns", "comparable", "connect_views", "data_card", "data_dictionary", "datasets_dir", "fetch",
    "fingerprint", "host_names", "import_archive", "pack", "publish", "query", "run_query", "s3_endpoint_url",
    "share_filesystem", "verify",
]
