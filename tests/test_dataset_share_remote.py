"""Sharing datasets over the protocols collaborators use, against real servers on loopback: an S3-compatible
server (moto's server mode) for publish and fetch, and an HTTP server (http.server) for fetch. An upload
killed half way leaves nothing under the final name; a wrong checksum is refused and nothing is imported.
Only 127.0.0.1 is contacted: the AWS variables point every lookup at the test's own server."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli import main
from runner.records import share
from tests import test_dataset_share
from tests.test_dataset_share import PROJECT, repack

made = test_dataset_share.made  # the fixture: a campaign `shared` measured by the real runner

pytestmark = pytest.mark.integration

s3fs = pytest.importorskip("s3fs", reason="the share extra: pip install -e '.[share]'")
pytest.importorskip("aiohttp", reason="the share extra: pip install -e '.[share]'")
moto_server = pytest.importorskip("moto.server", reason="the test extra: pip install -e '.[test]'")

BUCKET = "lab-datasets"
AWS_ENV = {
    # Dummy credentials, and nothing read from this machine's AWS files or an instance metadata service.
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("runner: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 and a random port; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object]]:
    """(endpoint, an s3fs client of it) with an empty bucket BUCKET; AWS variables for the test only."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", share.S3_ENDPOINT_ENV):
        monkeypatch.delenv(key, raising=False)
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing", skip_instance_cache=True)
    fs.mkdir(BUCKET)
    yield s3_server, fs
    fs.rm(BUCKET, recursive=True)
    fs.invalidate_cache()


class HoldingProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream` that stops forwarding a connection's requests as soon as
    `pattern` has passed (the request head and whatever body came with it) and sets `held`: an upload cut
    off half way, for as long as the test wants."""

    def __init__(self, upstream: tuple[str, int], pattern: bytes) -> None:
        self.upstream, self.pattern = upstream, pattern
        self.held = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        seen = b""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                seen = (seen + data)[-4096:]
                if requests and self.pattern in seen:
                    self.held.set()
                    return  # the rest of this upload never reaches the server
        except OSError:
            pass
        finally:
            if not (requests and self.held.is_set()):
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@pytest.fixture
def http_share(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, directory) of an HTTP server on 127.0.0.1 serving a directory."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
    thread.join()


def keys(fs: object, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p.split("/", 1)[1] for p in fs.find(f"{BUCKET}/{prefix}"))


# ----- S3 -----------------------------------------------------------------------------------------------
def test_publish_and_fetch_over_s3(made: Path, s3: tuple[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    endpoint, fs = s3
    url = f"s3://{BUCKET}/lab"
    assert main(["dataset", "--datasets", str(made), "publish", "shared", url, "--s3-endpoint", endpoint]) == 0
    assert f"published {url}/shared.tar.gz" in capsys.readouterr().out
    assert keys(fs, "lab") == ["lab/shared.tar.gz", "lab/shared.tar.gz.sha256"]  # no staging object left
    archive = fs.cat_file(f"{BUCKET}/lab/shared.tar.gz")
    import hashlib

    assert fs.cat_file(f"{BUCKET}/lab/shared.tar.gz.sha256").decode() == f"{hashlib.sha256(archive).hexdigest()}  shared.tar.gz\n"
    # The collaborator gives the endpoint through the environment instead.
    monkeypatch.setenv(share.S3_ENDPOINT_ENV, endpoint)
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"{url}/shared"]) == 0
    assert "6 new trials" in capsys.readouterr().out
    # Published again (more trials, or a fix): the same names, replaced whole.
    assert main(["dataset", "--datasets", str(made), "publish", "shared", url]) == 0
    assert keys(fs, "lab") == ["lab/shared.tar.gz", "lab/shared.tar.gz.sha256"]
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"{url}/shared.tar.gz"]) == 0
    assert "0 new trials, 6 already there" in capsys.readouterr().out


def test_botocore_endpoint_variable_is_honoured(made: Path, s3: tuple[str, object], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --s3-endpoint or RUNNER_S3_ENDPOINT, AWS's own variable chooses the server."""
    endpoint, fs = s3
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    assert main(["dataset", "--datasets", str(made), "publish", "shared", f"s3://{BUCKET}/env"]) == 0
    assert "env/shared.tar.gz" in keys(fs, "env")


def test_s3_refusals_are_one_line(made: Path, s3: tuple[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint, fs = s3
    # a bucket the user named that is not there: bad input (publish never makes one)
    assert main(["dataset", "--datasets", str(made), "publish", "shared", "s3://no-such-bucket/lab", "--s3-endpoint", endpoint]) == 2
    assert "cannot publish: The specified bucket does not exist" in one_line_error(capsys)
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"s3://{BUCKET}/lab/nothing", "--s3-endpoint", endpoint]) == 2
    assert "no such archive" in one_line_error(capsys)
    for bad in ("127.0.0.1:9000", "ftp://127.0.0.1/", "http://", "http://127.0.0.1:port"):
        assert main(["dataset", "--datasets", str(made), "publish", "shared", f"s3://{BUCKET}/lab", "--s3-endpoint", bad]) == 2
        assert "not an http(s)://HOST[:PORT] URL" in one_line_error(capsys)
    for action in (["publish", "shared", "s3://"], ["fetch", "s3://"], ["fetch", f"s3://{BUCKET}"]):
        assert main(["dataset", "--datasets", str(made), *action, "--s3-endpoint", endpoint]) == 2
        assert "give s3://BUCKET/PATH" in one_line_error(capsys)
    assert fs.find(BUCKET) == [] and not (tmp_path / "mine").exists()


def test_interrupted_upload_publishes_nothing(made: Path, s3: tuple[str, object], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`runner dataset publish` killed while its upload is half way through: nothing under the final name, a
    fetch finds no archive, and publishing again works."""
    endpoint, fs = s3
    host, port = endpoint.removeprefix("http://").split(":")
    proxy = HoldingProxy((host, int(port)), f"PUT /{BUCKET}/lab/.shared.tar.gz.".encode())
    env = {**os.environ, **AWS_ENV, share.S3_ENDPOINT_ENV: f"http://127.0.0.1:{proxy.port}"}
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "dataset", "--datasets", str(made), "publish", "shared",
                             f"s3://{BUCKET}/lab"], cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while not proxy.held.wait(0.2):  # the upload has begun and its rest is held back
            assert proc.poll() is None, proc.communicate()[0].decode()
        proc.kill()
        proc.communicate()
    finally:
        proxy.close()
    assert "lab/shared.tar.gz" not in keys(fs, "lab") and "lab/shared.tar.gz.sha256" not in keys(fs, "lab")
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"s3://{BUCKET}/lab/shared", "--s3-endpoint", endpoint]) == 2
    assert "no such archive" in one_line_error(capsys)
    assert not (tmp_path / "mine").exists()
    assert main(["dataset", "--datasets", str(made), "publish", "shared", f"s3://{BUCKET}/lab", "--s3-endpoint", endpoint]) == 0
    assert {"lab/shared.tar.gz", "lab/shared.tar.gz.sha256"} <= set(keys(fs, "lab"))
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"s3://{BUCKET}/lab/shared", "--s3-endpoint", endpoint]) == 0


# ----- HTTP ---------------------------------------------------------------------------------------------
def test_fetch_over_http(made: Path, http_share: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, root = http_share
    assert main(["dataset", "--datasets", str(made), "publish", "shared", root.as_uri()]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["shared.tar.gz", "shared.tar.gz.sha256"]
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"{base}/shared"]) == 0
    assert "6 new trials" in capsys.readouterr().out
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"{base}/nothing"]) == 2
    assert "no such archive" in one_line_error(capsys)
    # An archive copied up by hand, without a checksum file, is still verified by its manifest and imported.
    (root / "shared.tar.gz.sha256").unlink()
    assert main(["dataset", "--datasets", str(tmp_path / "theirs"), "fetch", f"{base}/shared.tar.gz"]) == 0


def test_wrong_checksum_on_fetch_is_refused(made: Path, http_share: tuple[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    base, root = http_share
    assert main(["dataset", "--datasets", str(made), "publish", "shared", root.as_uri()]) == 0
    capsys.readouterr()
    archive = root / "shared.tar.gz"
    good = archive.read_bytes()
    # 1. the archive changed after publishing (a damaged copy, a repack): its SHA-256 is not the published one
    repack(archive, archive, lambda name, data: data)
    assert archive.read_bytes() != good
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"{base}/shared"]) == 2  # bad input
    line = one_line_error(capsys)
    assert "refused: checksum mismatch" in line and "nothing imported" in line, line
    assert not (tmp_path / "mine").exists()
    # 2. a member changed, with a checksum file to match: the manifest inside refuses it
    repack(root / "shared.tar.gz", archive, lambda name, data: data.replace(b"shared", b"shaded") if name.endswith("matrix.yml") else data)
    import hashlib

    (root / "shared.tar.gz.sha256").write_text(f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  shared.tar.gz\n")
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"{base}/shared"]) == 2
    assert "checksum mismatch for shared/matrix.yml" in one_line_error(capsys)
    # 3. a checksum file that is not one
    archive.write_bytes(good)
    (root / "shared.tar.gz.sha256").write_text("<html>not found</html>\n")
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"{base}/shared"]) == 2
    assert "not a SHA-256 checksum line" in one_line_error(capsys)
    assert not (tmp_path / "mine").exists()


def test_http_server_that_is_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", f"http://127.0.0.1:{port}/lab/shared"]) == 1
    assert "cannot fetch" in one_line_error(capsys)
    assert not (tmp_path / "mine").exists()


class EndlessChunks(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200, no Content-Length and a chunked body that never ends: it writes until the
    client hangs up, counting what it sent (`sent`) and setting `hung_up` then. A checksum file is not there."""

    protocol_version = "HTTP/1.1"
    sent = 0
    hung_up = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.endswith(share.CHECKSUM_SUFFIX):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = b"\0" * 65536
        try:
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                type(self).sent += len(block)
        except OSError:
            type(self).hung_up.set()
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def test_fetch_stops_reading_a_body_without_a_size_at_the_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that gives no size and never stops sending: fetch reads one byte past the bound, says so in one
    line and leaves nothing behind (no dataset, no temporary file), instead of downloading it all first."""
    bound = 4 << 20
    monkeypatch.setenv(share.MAX_BYTES_ENV, str(bound))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EndlessChunks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/lab/endless"
        assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", url]) == 2
        line = one_line_error(capsys)
        assert f"refused: the archive has more than {bound} bytes (stopped reading there" in line, line
        assert "nothing fetched" in line and share.MAX_BYTES_ENV in line, line
        assert EndlessChunks.hung_up.wait(timeout=600)  # the client went away; a bound against a hang only
        assert EndlessChunks.sent < 64 * bound  # what socket buffers hold beyond the bound, not the whole body
        assert not (tmp_path / "mine").exists()
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_server_error_is_not_a_missing_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
            self.send_error(503)

        do_GET = do_HEAD  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/lab/shared"
        assert main(["dataset", "--datasets", str(tmp_path / "mine"), "fetch", url]) == 1  # the server's fault
        assert "cannot fetch: 503" in one_line_error(capsys)
        assert not (tmp_path / "mine").exists()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
