"""runner dataset: pack, verify, import, query, publish and fetch campaign datasets."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runner.cli import add_datasets_option
from runner.errors import UsageError
from runner.records import share

HELP = """\
Share datasets with collaborators and query them.

  pack CAMPAIGN [--out FILE] [--anonymize] one archive: Parquet files, data dictionary, provenance, host
                                          fingerprints, DATA-CARD.md and SHA-256 checksums
  verify ARCHIVE                          check checksums and schema version (refuses a tampered or
                                          truncated archive)
  import ARCHIVE                          verify, then add to the datasets: a new campaign, merged into
                                          the campaign of that name (no duplicate trials), or kept apart
                                          as CAMPAIGN--ID when the results are not comparable
  query "SQL" [--limit N]                 DuckDB over every campaign: views `metrics` and `trials`; read-only
  publish CAMPAIGN URL [--anonymize]      pack and copy to a shared location: a path, file://, sftp://,
                                          s3:// (an S3-compatible server with --s3-endpoint), gs://
  fetch URL/NAME                          copy from a shared location (the same, or http(s)://), check
                                          the published checksum, verify and import

Every action takes --datasets DIR (before or after the action's name).

examples:
  runner dataset pack lockbench-scaling --anonymize --out /tmp/locks.tar.gz
  runner dataset verify /tmp/locks.tar.gz
  runner dataset import /tmp/locks.tar.gz --datasets /data/campaigns
  runner dataset query "SELECT lock, threads, median(value) FROM metrics WHERE metric='throughput' GROUP BY ALL ORDER BY ALL"
  runner dataset publish lockbench-scaling file:///srv/lab-datasets
  runner dataset fetch file:///srv/lab-datasets/lockbench-scaling
  runner dataset publish lockbench-scaling s3://lab-bucket/datasets --s3-endpoint http://minio.lab:9000
  runner dataset fetch https://lab.example.org/datasets/lockbench-scaling
"""

EXIT = """\
exit status:
  0    done
  1    something failed around good data (a held lock, a full disk, a server that does not answer)
  2    bad input (one line, nothing written): an archive, URL, campaign, datasets directory or query that is
       missing, empty, damaged, of an unreadable version or of the wrong shape
  130  interrupted (Ctrl-C)"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dataset", help="pack, verify, import, query and publish datasets", description=HELP, epilog=EXIT,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_datasets_option(p)
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    pk = sub.add_parser("pack", help="write a campaign's archive")
    pk.add_argument("campaign", help="campaign name or path")
    pk.add_argument("-o", "--out", "--output", dest="output", type=Path, metavar="FILE", help="archive file (default CAMPAIGN.tar.gz here)")
    pk.add_argument("--anonymize", action="store_true", help="replace host names and addresses by stable pseudonyms")
    vf = sub.add_parser("verify", help="check an archive's checksums and versions")
    vf.add_argument("archive", type=Path)
    im = sub.add_parser("import", help="verify an archive and add it to the datasets")
    im.add_argument("archive", type=Path)
    qy = sub.add_parser("query", help="run SQL (DuckDB) over views `metrics` and `trials` of all campaigns")
    qy.add_argument("sql")
    qy.add_argument("--limit", type=int, default=share.DEFAULT_LIMIT, metavar="N",
                    help=f"print at most N rows (default {share.DEFAULT_LIMIT}); a last line says how many were left out")
    pb = sub.add_parser("publish", help="pack a campaign and copy it to an fsspec URL (a directory)")
    pb.add_argument("campaign")
    pb.add_argument("url", help="e.g. file:///srv/lab-datasets, s3://bucket/lab")
    pb.add_argument("--anonymize", action="store_true", help="replace host names and addresses by stable pseudonyms")
    ft = sub.add_parser("fetch", help="copy an archive from an fsspec URL, verify and import it")
    ft.add_argument("url", help="URL/NAME or URL/NAME.tar.gz")
    for sp in (pb, ft):
        sp.add_argument("--s3-endpoint", metavar="URL", default=os.environ.get(share.S3_ENDPOINT_ENV) or None,
                        help=f"S3-compatible server for s3:// URLs, e.g. http://127.0.0.1:9000 (env {share.S3_ENDPOINT_ENV}; "
                             "default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS)")
    for sp in sub.choices.values():  # `runner dataset import ARCHIVE --datasets DIR`, as well as before the action
        add_datasets_option(sp, default=argparse.SUPPRESS)
    p.set_defaults(func=run)


def report_import(console: Console, done: share.Imported) -> None:
    console.print(f"imported into {done.dataset}: {done.new_trials} new trials, {done.duplicate_trials} already there (skipped)", highlight=False)
    if done.kept_apart:
        console.print(f"[yellow]kept apart from campaign {done.campaign.split('--')[0]}: {done.kept_apart}", highlight=False)


def check_archive(path: Path) -> None:
    """An archive named on the command line must be a readable file: else one line, exit 2 (bad input)."""
    if not path.exists():
        raise UsageError(f"{path}: no such archive (give the path of a .tar.gz written by `runner dataset pack`)")
    if not path.is_file():
        raise UsageError(f"{path}: not an archive file (a directory or a special file)")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: cannot read the archive: permission denied")


def run(args: argparse.Namespace) -> int:
    console = Console(soft_wrap=True)
    if args.action in ("verify", "import"):
        check_archive(args.archive)
    if args.action == "pack":
        out = share.pack(args.campaign, args.output, datasets=args.datasets, anonymize=args.anonymize)
        console.print(f"packed {out} ({out.stat().st_size / 1e6:.1f} MB)" + (", anonymized" if args.anonymize else ""), highlight=False)
    elif args.action == "verify":
        v = share.verify(args.archive)
        console.print(
            f"{args.archive}: ok: campaign {v.campaign}, schema version {v.schema_version}, {v.files} files checked"
            f"{', anonymized' if v.anonymized else ''}; MANIFEST sha256 {v.manifest_sha256}", highlight=False,
        )
    elif args.action == "import":
        report_import(console, share.import_archive(args.archive, args.datasets))
    elif args.action == "query":
        result = share.run_query(args.sql, args.datasets, limit=args.limit)
        table = Table(*result.columns, show_edge=False)
        for row in result.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)
        if result.left_out:
            console.print(f"{result.left_out} more rows not shown (--limit {args.limit})", highlight=False)
    elif args.action == "publish":
        done = share.publish(args.campaign, args.url, datasets=args.datasets, anonymize=args.anonymize, s3_endpoint=args.s3_endpoint)
        console.print(f"published {done} (and {done}{share.CHECKSUM_SUFFIX})", highlight=False)
    else:
        report_import(console, share.fetch(args.url, args.datasets, s3_endpoint=args.s3_endpoint))
    return 0
