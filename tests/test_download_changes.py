"""The downloader when the server's file changes between runs, and which checksums count.

A real HTTP server on 127.0.0.1 (a thread in the test) serves versions of one file with
their own ETag, Last-Modified and, on request, a `Content-MD5` of the body it sends.
"""

import base64
import hashlib
import http.server
import json
import logging

import pytest

from sedd_jax.data import download as dl
from tests.helpers import server_url, serving, write_body


class _Server(http.server.ThreadingHTTPServer):
    """Serves one file per path: `files[path] = (bytes, etag, last_modified)`.

    `honour_if_range`: a Range request whose If-Range differs from the ETag gets the whole
    file (200), as RFC 9110 asks; False serves the range anyway (a careless server).
    `content_md5`: send the MD5 of the body sent (the range's digest on a 206); "zeros"
    sends a wrong one.
    `cut_after[path] = n` drops the connection once after n bytes.
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.cut_after, self.log = {}, {}, []
        self.honour_if_range, self.content_md5 = True, False


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server, path = self.server, self.path
        server.log.append((path, self.headers.get("Range"), self.headers.get("If-Range")))
        if path not in server.files:
            self.send_error(404)
            return
        data, etag, modified = server.files[path]
        start = 0
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        ranged = rng and rng.startswith("bytes=")
        if ranged and (if_range == etag or not server.honour_if_range):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", modified)
        if server.content_md5:
            digest = b"\0" * 16 if server.content_md5 == "zeros" else hashlib.md5(body).digest()
            self.send_header("Content-MD5", base64.b64encode(digest).decode())
        self.end_headers()
        write_body(self, body, server.cut_after.pop(path, None))


@pytest.fixture
def server():
    with serving(_Server()) as srv:
        yield srv


OLD = bytes(range(256)) * 2000  # 512,000 bytes
NEW = bytes(reversed(range(256))) * 2100  # 537,600 bytes: the next release
SAME_SIZE = bytes((i * 7) % 256 for i in range(len(OLD)))
MONDAY, TUESDAY = "Mon, 01 Dec 2026 00:00:00 GMT", "Tue, 02 Dec 2026 00:00:00 GMT"


def _interrupt(server, tmp_path, path="/u/u50.fasta.gz", at=200_000):
    """A first run cut at byte `at` of the OLD file: leaves .part and .part.json."""
    server.files[path] = (OLD, '"r1"', MONDAY)
    server.cut_after[path] = at
    with pytest.raises(dl.DownloadError, match=f"at byte {at}"):
        dl.download(server_url(server, path), str(tmp_path), retries=0, progress=False)
    assert (tmp_path / "u50.fasta.gz.part").stat().st_size == at


def test_new_release_on_the_server_discards_the_stale_part_and_downloads_it(
    server, tmp_path, caplog
):
    _interrupt(server, tmp_path)
    server.files["/u/u50.fasta.gz"] = (NEW, '"r2"', TUESDAY)
    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        path = dl.download(server_url(server, "/u/u50.fasta.gz"), str(tmp_path), progress=False)
    assert open(path, "rb").read() == NEW
    assert "discarded, starting over" in caplog.text
    assert not (tmp_path / "u50.fasta.gz.part.json").exists()
    assert json.load(open(path + ".download.json"))["size"] == len(NEW)


def test_a_206_of_another_version_is_not_spliced(server, tmp_path, caplog):
    _interrupt(server, tmp_path)
    server.honour_if_range = False  # serves bytes 200000- of the new file regardless
    server.files["/u/u50.fasta.gz"] = (SAME_SIZE, '"r2"', TUESDAY)
    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        path = dl.download(server_url(server, "/u/u50.fasta.gz"), str(tmp_path), progress=False)
    assert open(path, "rb").read() == SAME_SIZE
    assert '"r1" -> "r2"' in caplog.text
    assert server.log[-1] == ("/u/u50.fasta.gz", None, None)  # asked again from byte 0


def test_a_changed_last_modified_alone_restarts(server, tmp_path):
    _interrupt(server, tmp_path)
    server.honour_if_range = False
    server.files["/u/u50.fasta.gz"] = (SAME_SIZE, '"r1"', TUESDAY)
    path = dl.download(server_url(server, "/u/u50.fasta.gz"), str(tmp_path), progress=False)
    assert open(path, "rb").read() == SAME_SIZE


def test_content_md5_of_a_206_is_not_taken_for_the_file_md5(server, tmp_path):
    server.content_md5 = True
    _interrupt(server, tmp_path)
    path = dl.download(server_url(server, "/u/u50.fasta.gz"), str(tmp_path), progress=False)
    assert open(path, "rb").read() == OLD
    info = json.load(open(path + ".download.json"))
    # the 200 of the first run gave the whole file's MD5, kept for the resumed run
    assert info["md5"] == hashlib.md5(OLD).hexdigest()
    assert info["md5_checked_against"] == "Content-MD5 header"


def test_a_wrong_content_md5_on_a_full_answer_is_still_caught(server, tmp_path):
    server.files["/f.gz"] = (OLD, '"r1"', MONDAY)
    server.content_md5 = "zeros"
    with pytest.raises(dl.DownloadError, match="but Content-MD5 header says 0{32}"):
        dl.download(server_url(server, "/f.gz"), str(tmp_path), progress=False)


def test_an_md5_looking_etag_is_not_a_checksum(server, tmp_path):
    server.files["/f.gz"] = (OLD, '"' + hashlib.md5(b"something else").hexdigest() + '"', MONDAY)
    path = dl.download(server_url(server, "/f.gz"), str(tmp_path), progress=False)
    assert open(path, "rb").read() == OLD
    assert json.load(open(path + ".download.json"))["md5_checked_against"] is None


def test_a_part_without_its_record_is_discarded(server, tmp_path):
    server.files["/f.gz"] = (OLD, '"r1"', MONDAY)
    (tmp_path / "f.gz.part").write_bytes(b"x" * 1000)
    path = dl.download(server_url(server, "/f.gz"), str(tmp_path), progress=False)
    assert open(path, "rb").read() == OLD
