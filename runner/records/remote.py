"""Archives on shared storage: `publish` packs a campaign and copies its archive to an fsspec URL (a path,
file://, sftp://, s3:// (also S3-compatible servers), gs://); `fetch` copies one back (those, or http(s)://),
checks its published checksum, verifies and imports it."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from runner.errors import BadDatasetError, DatasetError, UsageError
from runner.records.archive import MAX_BYTES_ENV, Limits, pack, verify
from runner.records.importing import Imported, datasets_dir, import_archive

# URL schemes for sharing, and the Python packages their fsspec backend needs beyond fsspec itself (checked
# before any connection; the project's `share` extra installs those of s3 and http). HTTP(S) is read-only:
# fetch only. A URL without a scheme is a local path.
SHARE_SCHEMES: dict[str, tuple[str, ...]] = {
    "file": (), "sftp": ("paramiko",), "s3": ("s3fs",), "gs": ("gcsfs",), "gcs": ("gcsfs",),
    "http": ("aiohttp",), "https": ("aiohttp",),
}
READ_ONLY_SCHEMES = ("http", "https")
NETWORK_SCHEMES = ("sftp", "http", "https")  # URLs that name a host (object stores name a bucket)
OBJECT_STORES = ("s3", "gs", "gcs")  # no directories to make; a missing bucket is an error, never created
S3_ENDPOINT_ENV = "RUNNER_S3_ENDPOINT"  # an S3-compatible server (MinIO, Ceph RGW, ...) instead of AWS
CHECKSUM_SUFFIX = ".sha256"  # NAME.tar.gz.sha256 beside the archive, `sha256sum -c` format


def s3_endpoint_url(value: str | None) -> str | None:
    """The endpoint of an S3-compatible server, checked: http(s)://HOST[:PORT][/PATH]; None: botocore's own
    choice (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, ~/.aws/config, else AWS). Pure."""
    if value is None or not value.strip():
        return None
    try:
        parts = urlsplit(value.strip())
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(f"S3 endpoint (--s3-endpoint or {S3_ENDPOINT_ENV}) {value!r}: not an http(s)://HOST[:PORT] URL; "
                         "e.g. http://127.0.0.1:9000")
    return value.strip()


def share_filesystem(url: str, *, write: bool, s3_endpoint: str | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path) of a sharing URL. Refuses, before any connection, with one line: an empty URL,
    a scheme not meant for sharing (listing the known ones), a read-only scheme for publishing, a scheme
    whose backend package is not installed (naming it) and a malformed S3 endpoint. `s3_endpoint` applies to
    s3:// URLs only (other schemes ignore it, so RUNNER_S3_ENDPOINT can stay set)."""
    import fsspec  # 0.1 s of imports, for sharing only (the CLI imports this module for every command)

    if not url.strip():
        raise UsageError("empty URL; give a directory: a local path, file:///srv/share, s3://bucket/lab, ...")
    protocol, _ = fsspec.core.split_protocol(url)
    scheme = (protocol or "file").lower()
    if scheme not in SHARE_SCHEMES:
        raise UsageError(f"{url}: unknown URL scheme {scheme!r}; known: {', '.join(SHARE_SCHEMES)} (or a local path)")
    if write and scheme in READ_ONLY_SCHEMES:
        writable = ", ".join(s for s in SHARE_SCHEMES if s not in READ_ONLY_SCHEMES)
        raise UsageError(f"{url}: cannot publish over {scheme}, which is read-only here; publish to {writable} and fetch over {scheme}")
    if scheme in NETWORK_SCHEMES:  # checked here: a backend would fail later with a traceback or an idna error
        try:
            host = urlsplit(url).hostname
            _ = urlsplit(url).port  # raises ValueError on a bad port
        except ValueError as exc:
            raise UsageError(f"{url}: not a valid URL ({exc})") from None
        if not host:
            raise UsageError(f"{url}: give {scheme}://HOST/PATH" + ("" if write else "/NAME") + " (a host and a path on it)")
    options: dict[str, Any] = {"skip_instance_cache": True}  # no listing cached by an earlier call goes stale
    endpoint = s3_endpoint_url(s3_endpoint) if scheme == "s3" else None
    if endpoint:
        options["endpoint_url"] = endpoint
    missing = [pkg for pkg in SHARE_SCHEMES[scheme] if importlib.util.find_spec(pkg) is None]
    if missing:
        raise UsageError(f"{url}: the {scheme}:// scheme needs the Python package{'s' if len(missing) > 1 else ''} "
                         f"{' and '.join(missing)}: pip install {' '.join(missing)}")
    try:
        fs, path = fsspec.core.url_to_fs(url if protocol is None or protocol == scheme else scheme + url[len(protocol):], **options)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{url}: {' '.join(str(exc).split())}") from None
    except OSError as exc:  # backends that connect when made (sftp)
        raise DatasetError(f"{url}: cannot connect: {_why(exc)}") from None
    bucket, _, key = path.strip("/").partition("/")
    if scheme in OBJECT_STORES and (not bucket or (not write and not key)):
        raise UsageError(f"{url}: give {scheme}://BUCKET/PATH" + ("" if write else "/NAME") + " (a bucket and a path in it)")
    return fs, path


def publish(campaign: str, url: str, *, datasets: Path, anonymize: bool = False, s3_endpoint: str | None = None) -> str:
    """Pack the campaign and copy the archive to `url` (an fsspec URL of a directory); returns its URL.

    Nothing half-published appears under the final name: the archive is uploaded to a hidden staging name
    (`.NAME.tar.gz.PID.part`) and renamed when complete (on S3 a server-side copy, whole or not at all);
    then `NAME.tar.gz.sha256` is written the same way. An older checksum file is removed before the new
    archive takes the name, so an interrupted re-publish leaves an archive without a checksum file (still
    verified by its manifest on fetch), never one with a wrong one. A failed upload removes its staging file."""
    fs, base = share_filesystem(url, write=True, s3_endpoint=s3_endpoint)
    scheme = (fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]).lower()
    errors = _transfer_errors()
    base = base.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        archive = pack(campaign, Path(tmp) / "a.tar.gz", datasets=datasets, anonymize=anonymize)
        name = verify(archive).campaign + ".tar.gz"
        sums = Path(tmp) / "a.sha256"
        sums.write_text(f"{_sha256_file(archive)}  {name}\n")
        dest, staging = f"{base}/{name}", f"{base}/.{name}.{os.getpid()}.part"
        staged: list[str] = []
        try:
            if scheme not in OBJECT_STORES:
                fs.makedirs(base, exist_ok=True)
            staged.append(staging)
            fs.put_file(str(archive), staging)
            try:
                fs.rm_file(dest + CHECKSUM_SUFFIX)
            except FileNotFoundError:
                pass
            fs.mv(staging, dest)
            staged.remove(staging)
            staging = f"{base}/.{name}{CHECKSUM_SUFFIX}.{os.getpid()}.part"
            staged.append(staging)
            fs.put_file(str(sums), staging)
            fs.mv(staging, dest + CHECKSUM_SUFFIX)
            staged.remove(staging)
        except errors as exc:
            for path in staged:
                try:
                    fs.rm_file(path)
                except errors:
                    pass
            # the URL names a file, or a bucket that is not there (never made by publish): bad input
            bad_url = isinstance(exc, (FileExistsError, NotADirectoryError, FileNotFoundError))
            raise (UsageError if bad_url else DatasetError)(f"{url}: cannot publish: {_why(exc)}") from None
    return f"{url.rstrip('/')}/{name}"


def fetch(url: str, datasets: Path, *, s3_endpoint: str | None = None) -> Imported:
    """Copy an archive from an fsspec URL (`.../NAME` or `.../NAME.tar.gz`), check it against the
    `NAME.tar.gz.sha256` published beside it (if there is one), verify it and import it. A wrong checksum is
    refused before anything is imported."""
    if url.strip() and not url.endswith((".tar.gz", "://")):  # "sftp://" alone is refused as having no host
        url += ".tar.gz"
    datasets = datasets_dir(datasets)
    fs, path = share_filesystem(url, write=False, s3_endpoint=s3_endpoint)
    errors = _transfer_errors()
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / PurePosixPath(path).name
        limits = Limits.from_env()
        try:
            size = _size(fs, path)
            if size is not None and size > limits.max_bytes:  # told before anything is written here
                raise BadDatasetError(f"{url}: refused: the archive has {size} bytes, more than {limits.max_bytes} bytes "
                                      f"(set {MAX_BYTES_ENV} for a larger dataset); nothing fetched")
            _get_bounded(fs, path, local, limits.max_bytes, url)
            try:
                expected: bytes | None = fs.cat_file(path + CHECKSUM_SUFFIX)
            except FileNotFoundError:
                expected = None
        except FileNotFoundError as exc:  # the user named an archive that is not there: bad input, as for `verify`
            cause = exc.__cause__  # fsspec's HTTP backend says "not found" for a server it cannot reach or that fails
            if isinstance(cause, errors) and not isinstance(cause, FileNotFoundError) and getattr(cause, "status", None) not in (404, 410):
                raise DatasetError(f"{url}: cannot fetch: {_why(cause)}") from None
            raise UsageError(f"{url}: no such archive (give URL/NAME of an archive `runner dataset publish` wrote)") from None
        except IsADirectoryError:
            raise UsageError(f"{url}: no such archive (that is a directory)") from None
        except errors as exc:
            raise DatasetError(f"{url}: cannot fetch: {_why(exc)}") from None
        if expected is not None:
            want = expected.decode(errors="replace").split(maxsplit=1)[0].lower() if expected.strip() else ""
            if not re.fullmatch(r"[0-9a-f]{64}", want):
                raise BadDatasetError(f"{url}{CHECKSUM_SUFFIX}: refused: not a SHA-256 checksum line; nothing imported")
            got = _sha256_file(local)
            if got != want:
                raise BadDatasetError(f"{url}: refused: checksum mismatch: the archive's SHA-256 is {got[:16]}..., "
                                   f"{PurePosixPath(path).name}{CHECKSUM_SUFFIX} says {want[:16]}... "
                                   "(changed or damaged since it was published); nothing imported")
        return import_archive(local, datasets, limits=limits)


FETCH_BLOCK = 1 << 20  # bytes read at a time by fetch


def _get_bounded(fs: Any, path: str, local: Path, max_bytes: int, url: str) -> None:
    """Copy `path` to the file `local`, reading at most `max_bytes` + 1 bytes: a server that gives no size
    (HTTP without Content-Length, chunked), or a larger body than the size it gave, is stopped as soon as the
    bytes pass the bound, and the partial copy is removed."""
    got = 0
    try:
        with fs.open(path, "rb") as src, open(local, "wb") as dst:
            while block := src.read(min(FETCH_BLOCK, max_bytes + 1 - got)):
                got += len(block)
                if got > max_bytes:
                    raise BadDatasetError(f"{url}: refused: the archive has more than {max_bytes} bytes (stopped reading there; "
                                          f"set {MAX_BYTES_ENV} for a larger dataset); nothing fetched")
                dst.write(block)
    except BaseException:
        local.unlink(missing_ok=True)
        raise


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """What a filesystem backend raises when a transfer fails: OSError (most of them, and s3fs for S3 error
    replies), and the errors of botocore (no connection, no credentials) and aiohttp (HTTP) that are not."""
    from fsspec.exceptions import FSTimeoutError  # as share_filesystem's fsspec

    found: list[type[BaseException]] = [OSError, FSTimeoutError]
    for module, name in (("botocore.exceptions", "BotoCoreError"), ("aiohttp", "ClientError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            pass
    return tuple(found)


def _why(exc: BaseException) -> str:
    """One line of a backend's error (connection refused, permission denied, not found, no credentials)."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or " ".join(str(exc).split()) or type(exc).__name__
    if type(exc).__name__ == "NoCredentialsError":
        text += " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    return text


def _size(fs: Any, path: str) -> int | None:
    """The size the server gives for `path`, None if it gives none (then the archive's own bounds apply)."""
    try:
        size = fs.size(path)
    except Exception:  # noqa: BLE001 - no size (HTTP without Content-Length), or no answer: get_file then says why
        return None
    return size if isinstance(size, int) else None
