"""Fetching the `paper` profile's datasets: ``python -m clipnotes download [CHAPTER…|all]``.

Offline first: a file already in ``CLIPNOTES_DATA`` is used without touching the network.
Otherwise the sizes are shown up front, free disk space is checked, the transfer shows a
progress bar and resumes an interrupted partial file (HTTP ``Range``), the sha256 is
checked, and the file is renamed into place only when complete and verified. Where a
source publishes no checksum, the hash of the first download is recorded in
``CLIPNOTES_DATA/checksums.json`` and checked on every later use. Archives are extracted
beside themselves. Nothing here runs in `mini`, in the chapters, or in the tests' network.
"""
from __future__ import annotations

import errno
import http.client
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .utils import ClipnotesError, atomic_path, progress, sha256_file

CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One file of a dataset: where it comes from, where it goes, and how to check it."""

    url: str
    path: str                       # relative to the data folder
    size: int | None = None         # bytes, where known
    sha256: str | None = None       # the published checksum, or None (recorded at the first download)
    source: str = ""                # where the URL and checksum were taken from
    extract: bool = False           # a zip archive to unpack in its folder


def _record_file(data_dir: Path) -> Path:
    return data_dir / "checksums.json"


def _recorded(data_dir: Path) -> dict[str, str]:
    path = _record_file(data_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def _record(data_dir: Path, rel: str, digest: str) -> None:
    table = _recorded(data_dir)
    table[rel] = digest
    with atomic_path(_record_file(data_dir)) as tmp:
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def expected_sha256(remote: Remote, data_dir: Path) -> str | None:
    """The published checksum, else the one recorded at the first download, else None."""
    return remote.sha256 or _recorded(data_dir).get(remote.path)


def verify(remote: Remote, data_dir: Path) -> bool:
    """Whether ``remote``'s file is present and matches its checksum (recording it if none is known)."""
    path = data_dir / remote.path
    if not path.exists():
        return False
    digest, expected = sha256_file(path), expected_sha256(remote, data_dir)
    if expected is None:
        _record(data_dir, remote.path, digest)
        return True
    return digest == expected


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ClipnotesError(f"not enough disk space in {folder}: {needed / 2**20:,.0f} MiB needed, "
                             f"{free / 2**20:,.0f} MiB free; free some space or set CLIPNOTES_DATA elsewhere")


def fetch(remote: Remote, data_dir: str | os.PathLike, timeout: float = 30.0, quiet: bool = False) -> Path:
    """``remote``'s file in ``data_dir``: used as it is if present and verified, else downloaded."""
    data_dir = Path(data_dir)
    final = data_dir / remote.path
    if final.exists():
        if verify(remote, data_dir):
            return final
        raise ClipnotesError(f"{final} does not match its checksum; delete it and run the download again")
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    _check_space(final.parent, max(0, (remote.size or 0) - have))
    request = urllib.request.Request(remote.url, headers={"Range": f"bytes={have}-"} if have else {})
    host = urllib.request.urlparse(remote.url).netloc
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:        # the server ignored the range: start again
                have = 0
            length = int(response.headers.get("Content-Length", 0))
            bar = progress(total=(length + have) or remote.size, initial=have, unit="B", unit_scale=True,
                           desc=final.name, disable=quiet or None)
            received = 0
            with open(part, "ab" if have else "wb") as fh:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
            bar.close()
            if length and received < length:
                raise http.client.IncompleteRead(b"", length - received)
    except urllib.error.HTTPError as e:
        raise ClipnotesError(f"{remote.url} answered {e.code} {e.reason}; the file may have moved — "
                             f"copy it to {final} by hand ({remote.source})") from None
    except (http.client.HTTPException, ConnectionResetError) as e:
        raise ClipnotesError(f"the transfer from {host} was interrupted ({type(e).__name__}) after "
                             f"{part.stat().st_size if part.exists() else 0:,} bytes; rerun to resume") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise ClipnotesError(f"cannot reach {host} ({reason}); check the connection and rerun to resume, "
                             f"or copy the file to {final}") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise ClipnotesError(f"the disk filled up while writing {part}; free some space and rerun "
                                 "to resume") from None
        raise
    digest, expected = sha256_file(part), remote.sha256 or _recorded(data_dir).get(remote.path)
    if expected is not None and digest != expected:
        part.unlink()
        raise ClipnotesError(f"{final.name} from {host} failed its sha256 check (got {digest[:12]}…, expected "
                             f"{expected[:12]}…); the partial file was removed — rerun, or report a moved file")
    os.replace(part, final)
    if expected is None:
        _record(data_dir, remote.path, digest)
    if remote.extract:
        with zipfile.ZipFile(final) as z:
            z.extractall(final.parent)
    return final


def download(remotes: Sequence[Remote], data_dir: str | os.PathLike, quiet: bool = False) -> list[Path]:
    """Fetch every file of ``remotes`` (offline first), saying up front how much is missing."""
    data_dir = Path(data_dir)
    missing = [r for r in remotes if not (data_dir / r.path).exists()]
    if missing and not quiet:
        known = sum(r.size or 0 for r in missing)
        print(f"{len(missing)} of {len(remotes)} files to download into {data_dir}"
              + (f", about {known / 2**20:,.0f} MiB" if known else ""))
    return [fetch(r, data_dir, quiet=quiet) for r in remotes]

