"""The resumable downloader against a real HTTP server on 127.0.0.1 (a thread in the test)."""

import gzip
import hashlib
import http.server
import os

import pytest

from sedd_jax.data import download as dl
from sedd_jax.data.fasta import read_fasta, write_fasta
from sedd_jax.data.sources import demo_path
from tests.helpers import run_cli, server_url, serving, write_body


class _Server(http.server.ThreadingHTTPServer):
    """Serves `files` {path: bytes} with Range support; `cut_after[path] = n` drops the
    connection once after n bytes; `md5s[path]` is served as the sibling `path.md5`."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.md5s, self.cut_after, self.log, self.extra = {}, {}, {}, [], {}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        path = self.path
        server.log.append((path, self.headers.get("Range")))
        if path.endswith(".md5") and path[:-4] in server.md5s:
            body = f"{server.md5s[path[:-4]]}  {os.path.basename(path[:-4])}\n".encode()
        else:
            body = server.extra.get(path)
        if body is not None:  # an .md5 sibling or an extra file: whole, no ranges
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path not in server.files:
            self.send_error(404)
            return
        data = server.files[path]
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and self.headers.get("If-Range") == '"v1"':
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        body = data[start:]
        write_body(self, body, server.cut_after.pop(path, None))


@pytest.fixture(scope="module")
def fasta_gz(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("src") / "demo.fasta.gz"
    write_fasta(path, read_fasta(demo_path()))
    return path.read_bytes()


@pytest.fixture
def server():
    with serving(_Server()) as srv:
        yield srv


def test_full_download_is_byte_identical_and_md5_checked(server, fasta_gz, tmp_path):
    server.files["/d/demo.fasta.gz"] = fasta_gz
    server.md5s["/d/demo.fasta.gz"] = hashlib.md5(fasta_gz).hexdigest()
    path = dl.download(server_url(server, "/d/demo.fasta.gz"), str(tmp_path), progress=False)
    assert open(path, "rb").read() == fasta_gz
    assert len(read_fasta(path)) == 2100
    assert not os.path.exists(path + ".part")
    info = open(path + ".download.json").read()
    assert "demo.fasta.gz.md5" in info and hashlib.md5(fasta_gz).hexdigest() in info


def test_interrupted_download_resumes_with_range_to_identical_bytes(server, fasta_gz, tmp_path):
    server.files["/demo.fasta.gz"] = fasta_gz
    server.cut_after["/demo.fasta.gz"] = 300_000
    url = server_url(server, "/demo.fasta.gz")
    with pytest.raises(dl.DownloadError, match="at byte 300000"):
        dl.download(url, str(tmp_path), retries=0, progress=False)
    part = tmp_path / "demo.fasta.gz.part"
    assert part.stat().st_size == 300_000 and not (tmp_path / "demo.fasta.gz").exists()
    path = dl.download(url, str(tmp_path), retries=0, progress=False)
    assert open(path, "rb").read() == fasta_gz
    assert server.log[-1] == ("/demo.fasta.gz", "bytes=300000-")


def test_retries_resume_within_one_call(server, fasta_gz, tmp_path):
    server.files["/demo.fasta.gz"] = fasta_gz
    server.cut_after["/demo.fasta.gz"] = 123_457
    path = dl.download(server_url(server, "/demo.fasta.gz"), str(tmp_path), progress=False)
    assert open(path, "rb").read() == fasta_gz
    assert [r for _, r in server.log if _ == "/demo.fasta.gz"] == [None, "bytes=123457-"]


def test_checksum_mismatch_is_reported_and_nothing_is_kept(server, fasta_gz, tmp_path):
    server.files["/demo.fasta.gz"] = fasta_gz
    server.md5s["/demo.fasta.gz"] = "0" * 32
    with pytest.raises(dl.DownloadError, match=r"checksum mismatch: md5 [0-9a-f]{32}, but .*\.md5"):
        dl.download(server_url(server, "/demo.fasta.gz"), str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []


METALINK = """<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="http://www.metalinker.org/">
 <files>
  <file name="other.fasta.gz"><verification><hash type="md5">{other}</hash></verification></file>
  <file name="demo.fasta.gz"><size>{size}</size>
   <verification><hash type="md5">{md5}</hash></verification></file>
 </files>
</metalink>
"""


def test_uniprot_release_metalink_md5_is_checked(server, fasta_gz, tmp_path):
    server.files["/uniref50/demo.fasta.gz"] = fasta_gz
    good = hashlib.md5(fasta_gz).hexdigest()
    server.extra["/uniref50/RELEASE.metalink"] = METALINK.format(
        other="1" * 32, size=len(fasta_gz), md5="f" * 32
    ).encode()
    url = server_url(server, "/uniref50/demo.fasta.gz")
    with pytest.raises(dl.DownloadError, match=r"but .*RELEASE\.metalink says f{32}"):
        dl.download(url, str(tmp_path / "bad"), progress=False)
    server.extra["/uniref50/RELEASE.metalink"] = METALINK.format(
        other="1" * 32, size=len(fasta_gz), md5=good
    ).encode()
    path = dl.download(url, str(tmp_path / "ok"), progress=False)
    assert "RELEASE.metalink" in open(path + ".download.json").read()


@pytest.mark.slow
def test_cli_local_file_and_one_line_error(fasta_gz, tmp_path):
    src = tmp_path / "local.fasta.gz"
    src.write_bytes(fasta_gz)
    run = "sedd_jax.data.download"
    ok = run_cli(run, src, "--out", tmp_path / "o", timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert gzip.decompress((tmp_path / "o" / "local.fasta.gz").read_bytes())
    bad = run_cli(
        run,
        "http://127.0.0.1:9/none.gz",
        "--out",
        tmp_path / "b",
        "--retries",
        "0",
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().startswith("error: http://127.0.0.1:9/none.gz")
    assert "Traceback" not in bad.stderr
