"""Resumable download: `python -m sedd_jax.data.download uniref50 --out DIR` (or any URL).

The file streams to `DIR/NAME.part` in chunks (never held in memory) and is renamed to
`DIR/NAME` once complete and verified. After an interruption the next run (or the next
retry) asks only for the missing bytes with an HTTP `Range` request, guarded by
`If-Range` with the ETag or Last-Modified seen first. `DIR/NAME.part.json` records the
size, ETag and Last-Modified of the file the partial bytes belong to; when the server's
answer shows another file (a new release: a full 200 answer to the ranged request, or a
206 whose size, ETag or Last-Modified differs from the record) the partial file is
discarded, with a warning, and the download starts over. Verified: the size
(Content-Length or Content-Range) and an MD5 when one is offered: `--md5`, a sibling
`NAME.md5`, UniProt's `RELEASE.metalink` in the same directory, or a `Content-MD5`
header of a full (200) answer (recorded for resumption; the header of a 206 is the
digest of the range only). An ETag is never taken as an MD5: servers do not promise
that, even when it looks like one. A local path (or `file://` URL) is copied the same
way, for offline use.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from tqdm import tqdm

NAMED_URLS = {
    "uniref50": "https://ftp.uniprot.org/pub/databases/uniprot/uniref/uniref50/uniref50.fasta.gz",
}
CHUNK = 1 << 20
TIMEOUT = 60
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_MD5 = "Content-MD5 header"
log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A download that failed or did not verify; the message names the URL and file."""


@dataclasses.dataclass
class Expected:
    size: int | None = None
    md5: str | None = None
    md5_from: str = ""


def _md5_of(path: str) -> hashlib._Hash:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest


def _fetch_small(url: str, limit: int = 1 << 20) -> bytes | None:
    """A small side file (checksum, metalink), or None when it is not there."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            return r.read(limit)
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return None


def _sidecar_md5(url: str, name: str) -> tuple[str | None, str]:
    """MD5 from `URL.md5` or from UniProt's `RELEASE.metalink` beside the file."""
    text = _fetch_small(url + ".md5")
    if text:
        word = text.decode("ascii", "replace").split()[:1]
        if word and _MD5_RE.match(word[0].lower()):
            return word[0].lower(), url + ".md5"
    metalink = urllib.parse.urljoin(url, "RELEASE.metalink")
    text = _fetch_small(metalink, 1 << 22)
    if text:
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            return None, ""
        for node in root.iter():
            if node.tag.endswith("file") and node.get("name") == name:
                for h in node.iter():
                    if h.tag.endswith("hash") and (h.get("type") or "").lower() == "md5":
                        return (h.text or "").strip().lower(), metalink
    return None, ""


def _header_md5(response) -> str | None:
    """The whole file's MD5 from `Content-MD5`, only on a full (200) answer: on a 206 the
    header is the digest of the range (RFC 1864 covers the body sent). ETags are not
    read: no server convention makes them an MD5."""
    content_md5 = response.headers.get("Content-MD5")
    if response.status != 200 or not content_md5:
        return None
    try:
        digest = base64.b64decode(content_md5, validate=True).hex()
    except ValueError:
        return None
    return digest if _MD5_RE.match(digest) else None


def _total_size(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def _state_path(part: str) -> str:
    return part + ".json"


def _load_state(part: str) -> dict:
    try:
        with open(_state_path(part)) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def _discard(part: str) -> None:
    for path in (part, _state_path(part)):
        if os.path.exists(path):
            os.remove(path)


def _changed(state: dict, response, total: int | None) -> str:
    """How the server's file differs from the one `state` describes ('' if it does not)."""
    now = {
        "size": total,
        "etag": response.headers.get("ETag"),
        "last_modified": response.headers.get("Last-Modified"),
    }
    if "etag" not in state:  # a record written before ETag and Last-Modified were kept apart
        now["validator"] = now["etag"] or now["last_modified"]
    return ", ".join(
        f"{key} {state[key]} -> {now[key]}"
        for key in now
        if state.get(key) is not None and now[key] is not None and state[key] != now[key]
    )


def _forget_file(expected: Expected) -> None:
    """What was learnt from another version of the file no longer holds."""
    expected.size = None
    if expected.md5_from == _CONTENT_MD5:
        expected.md5, expected.md5_from = None, ""


def _open(url: str, part: str, offset: int, state: dict, expected: Expected):
    """The response for bytes `offset`-, or None when the partial file is already whole."""
    headers = {"User-Agent": "sedd-download/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if state.get("validator"):
            headers["If-Range"] = state["validator"]
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset and expected.size == offset:
            return None  # already complete
        if e.code == 416 and offset:
            log.warning(
                "%s: the server's file is shorter than the %d bytes of %s: the partial "
                "download is discarded, starting over",
                url,
                offset,
                part,
            )
            _discard(part)
            _forget_file(expected)
            return _open(url, part, 0, {}, expected)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from e


def _attempt(url: str, part: str, expected: Expected, progress: bool) -> None:
    """One request: appends to `part` from its current size; raises on a short read.

    A partial file whose record (`NAME.part.json`) is missing, or that belongs to another
    version of the server's file, is discarded (with a warning) and the file fetched
    from byte 0.
    """
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    state = _load_state(part) if offset else {}
    if offset and not state:
        log.warning("%s has no record of its source: discarded, starting over", part)
        _discard(part)
        _forget_file(expected)
        offset = 0
    response = _open(url, part, offset, state, expected)
    if response is None:
        return
    with response:
        partial = bool(offset) and response.status == 206
        total = _total_size(response, offset if partial else 0)
        changed = _changed(state, response, total) if offset else ""
        if changed or (offset and not partial):
            log.warning(
                "%s: %s; the %d bytes of %s are discarded, starting over",
                url,
                f"the file changed on the server ({changed})"
                if changed
                else "the server sent the whole file",
                offset,
                part,
            )
            _discard(part)
            _forget_file(expected)
            if partial:  # a 206 of another file (If-Range ignored): ask again from byte 0
                response.close()
                return _attempt(url, part, expected, progress)
            offset = 0
        if expected.size is None:
            expected.size = total
        elif total is not None and total != expected.size:
            raise DownloadError(f"{url}: size changed on the server ({total} != {expected.size})")
        md5 = _header_md5(response)
        if md5 and not expected.md5:
            expected.md5, expected.md5_from = md5, _CONTENT_MD5
        if not partial:
            with open(_state_path(part), "w") as f:
                json.dump(
                    {
                        "url": url,
                        "validator": response.headers.get("ETag")
                        or response.headers.get("Last-Modified"),
                        "etag": response.headers.get("ETag"),
                        "last_modified": response.headers.get("Last-Modified"),
                        "size": expected.size,
                        "md5": md5,
                    },
                    f,
                )
        mode = "ab" if offset else "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=expected.size,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=os.path.basename(part[: -len(".part")]),
                disable=not progress,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.IncompleteRead, OSError) as e:
                    raise DownloadError(f"{url}: connection lost at byte {out.tell()}: {e}") from e
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    got = os.path.getsize(part)
    if expected.size is not None and got < expected.size:
        raise DownloadError(f"{url}: connection closed at byte {got} of {expected.size}")


def _verify(part: str, final: str, url: str, expected: Expected) -> str:
    size = os.path.getsize(part)
    if expected.size is not None and size != expected.size:
        raise DownloadError(f"{final}: {size} bytes, but {url} has {expected.size}")
    md5 = _md5_of(part).hexdigest()
    if expected.md5 and md5 != expected.md5:
        _discard(part)
        raise DownloadError(
            f"{final}: checksum mismatch: md5 {md5}, but {expected.md5_from} says "
            f"{expected.md5}; the partial file was deleted, run again to download afresh"
        )
    return md5


def download(
    source: str,
    out_dir: str,
    *,
    name: str | None = None,
    retries: int = 5,
    md5: str | None = None,
    progress: bool = True,
) -> str:
    """Downloads `source` (a name in NAMED_URLS, a URL, or a local path) into `out_dir`.

    Returns the path of the verified file. Interrupted transfers are resumed (up to
    `retries` times in this call, and by any later call). `md5` overrides what the
    server offers.
    """
    url = NAMED_URLS.get(source, source)
    if os.path.exists(url):
        url = "file://" + os.path.abspath(url)
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise DownloadError(f"{source}: not a URL, a local file, or one of {sorted(NAMED_URLS)}")
    name = name or os.path.basename(parsed.path) or "download"
    os.makedirs(out_dir, exist_ok=True)
    final = os.path.join(out_dir, name)
    part = final + ".part"
    if os.path.isfile(final):
        return final
    if parsed.scheme == "file":
        src = urllib.request.url2pathname(parsed.path)
        if not os.path.isfile(src):
            raise DownloadError(f"{src}: no such file")
        with open(src, "rb") as fin, open(part, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
        expected = Expected(os.path.getsize(src), md5, "--md5" if md5 else "")
    else:
        sidecar, origin = (md5, "--md5") if md5 else _sidecar_md5(url, name)
        state = _load_state(part) if os.path.exists(part) else {}
        if not sidecar and state.get("md5"):  # a 200's Content-MD5, recorded for resumption
            sidecar, origin = state["md5"], _CONTENT_MD5
        expected = Expected(state.get("size"), sidecar, origin)
        for attempt in range(retries + 1):
            try:
                _attempt(url, part, expected, progress)
                break
            except DownloadError:
                if attempt == retries:
                    raise
                time.sleep(min(2**attempt, 30) * 0.1)
    digest = _verify(part, final, url, expected)
    os.replace(part, final)
    if os.path.exists(_state_path(part)):
        os.remove(_state_path(part))
    with open(final + ".download.json", "w") as f:
        json.dump(
            {
                "url": url,
                "size": os.path.getsize(final),
                "md5": digest,
                "md5_checked_against": expected.md5_from or None,
            },
            f,
            indent=1,
        )
    return final


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m sedd_jax.data.download",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help=f"{sorted(NAMED_URLS)}, a URL, or a local file")
    parser.add_argument("--out", required=True, help="directory to download into")
    parser.add_argument("--name", default=None, help="file name (default: from the URL)")
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument(
        "--md5", default=None, help="expected MD5 (default: what the server offers)"
    )
    args = parser.parse_args(argv)
    try:
        path = download(
            args.source,
            args.out,
            name=args.name,
            retries=args.retries,
            md5=args.md5,
            progress=sys.stderr.isatty(),
        )
    except (DownloadError, OSError) as e:
        sys.exit(f"error: {e}")
    info_path = path + ".download.json"
    if os.path.isfile(info_path):
        with open(info_path) as f:
            info = json.load(f)
        checked = info["md5_checked_against"] or "no checksum offered"
        print(f"{path}: {info['size']:,} bytes, md5 {info['md5']} ({checked})")
    else:
        print(f"{path}: already present, {os.path.getsize(path):,} bytes")
    return path


if __name__ == "__main__":
    main()
