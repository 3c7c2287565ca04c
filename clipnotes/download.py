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
    digest, expected = sha256_file(part), expected_sha256(remote, data_dir)
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



# ----------------------------------------------------------------------------- what `paper` needs
#: Files fetched here. CIFAR-10.1's checksums are TensorFlow Datasets' (url_checksums/cifar10_1.txt);
#: CIFAR-10.2 publishes none (its .npy files were replaced by .npz in 2021, so the URL pins the
#: commit that still has them) and the first download's sha256 is recorded.
CIFAR10_SHIFT_FILES: tuple[Remote, ...] = (
    Remote("https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/cifar10.1_v6_data.npy",
           "CIFAR-10.1/cifar10.1_v6_data.npy", 6_144_128,
           "2997188e5816f5bd545dc77771b6227828c28146049fcecf3fa10775474cacc6",
           "github.com/modestyachts/CIFAR-10.1; sha256: tensorflow/datasets url_checksums/cifar10_1.txt"),
    Remote("https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/cifar10.1_v6_labels.npy",
           "CIFAR-10.1/cifar10.1_v6_labels.npy", 8_128,
           "ae40beda001693674edc94d925ee8268cfe68905f8f9aff800c8dcdfcd6c9448",
           "github.com/modestyachts/CIFAR-10.1; sha256: tensorflow/datasets url_checksums/cifar10_1.txt"),
    Remote("https://github.com/modestyachts/cifar-10.2/raw/61b0e3ac09809a2351379fb54331668cc9c975c4/cifar102_test.npy",
           "CIFAR-10.2/cifar102_test.npy", None, None,
           "github.com/modestyachts/cifar-10.2 at 61b0e3a (before the switch to .npz); no published checksum"),
)

#: What each chapter's `paper` path reads: datasets (by loader) and open_clip weights.
CHAPTER_NEEDS: dict[str, tuple[str, ...]] = {
    "01": ("weights:ViT-B-32-quickgelu",),
    "02": ("cifar10", "cifar100", "weights:ViT-B-32-quickgelu"),
    "03": ("cifar10", "cifar100", "weights:ViT-B-32-quickgelu"),
    "04": ("eurosat", "coop-split:EuroSAT", "weights:ViT-B-16-quickgelu"),
    "05": ("cifar10", "cifar10-shifts", "weights:ViT-B-32-quickgelu"),
    "06": ("cifar10", "cifar10-shifts", "weights:ViT-B-32-quickgelu"),
    "07": ("cifar10", "cifar10-shifts", "weights:ViT-B-32-quickgelu"),
    "08": ("pacs", "weights:ViT-B-16-quickgelu"),
    "09": ("cifar10", "cifar10-shifts", "weights:ViT-B-32-quickgelu"),
    "10": ("cifar10", "cifar10-shifts", "weights:ViT-B-32-quickgelu"),
    "11": ("eurosat", "coop-split:EuroSAT", "weights:ViT-B-16-quickgelu"),
    "12": ("pacs", "weights:ViT-B-16-quickgelu"),
    "13": ("cifar10", "eurosat", "coop-split:EuroSAT", "weights:ViT-B-32-quickgelu"),
}

#: Hosted where a plain HTTP client cannot fetch them (Google Drive): the command says where.
BY_HAND = {
    "coop-split": "CoOp's split file {name}: the link in github.com/KaiyangZhou/CoOp DATASETS.md; put "
                  "split_zhou_{name}.json beside the images ({folder})",
    "pacs": "PACS: the link in DomainBed's domainbed/scripts/download.py (github.com/facebookresearch/DomainBed); "
            "extract it so that {folder}/<domain>/<class>/ holds the images",
}


def needs(chapters: Sequence[str]) -> list[str]:
    """The datasets and weights the `paper` path of ``chapters`` (``"all"`` or numbers) reads."""
    chosen = sorted(CHAPTER_NEEDS) if not chapters or "all" in chapters else [c.zfill(2)[:2] for c in chapters]
    unknown = [c for c in chosen if c not in CHAPTER_NEEDS]
    if unknown:
        raise ClipnotesError(f"no chapter {', '.join(unknown)}; use chapter numbers {', '.join(CHAPTER_NEEDS)} or 'all'")
    return list(dict.fromkeys(item for c in chosen for item in CHAPTER_NEEDS[c]))


def fetch_need(item: str, profile, quiet: bool = False) -> str:
    """Get one need into ``profile.data_dir`` (or open_clip's cache); returns a line for the report."""
    from torchvision import datasets as tv

    from . import data
    root = Path(profile.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    kind, _, name = item.partition(":")
    if kind == "weights":
        from .models import paper_weights
        return f"ok      {name} weights: {paper_weights(name, 'openai', Path(profile.cache_dir), download=True)}"
    if kind in ("cifar10", "cifar100"):            # torchvision checks its archive's published md5
        (tv.CIFAR10 if kind == "cifar10" else tv.CIFAR100)(str(root), train=True, download=True)
        return f"ok      {kind} (torchvision, md5 checked) in {root}"
    if kind == "cifar10-shifts":
        paths = download(CIFAR10_SHIFT_FILES, root, quiet=quiet)
        return f"ok      CIFAR-10.1 and CIFAR-10.2 (sha256 recorded in {_record_file(root)}): {paths[0].parent.parent}"
    if kind == "eurosat":                           # torchvision's copy, md5 checked, lands in eurosat/2750
        tv.EuroSAT(str(root), download=True)
        return f"ok      EuroSAT (torchvision, md5 checked) in {root / 'eurosat'}"
    if kind == "coop-split":
        folder, _, split_file = data.COOP_DATASETS[name]
        if (root / folder / split_file).exists():
            return f"ok      {split_file} in {root / folder}"
        return "by hand " + BY_HAND["coop-split"].format(name=name, folder=root / folder)
    if kind == "pacs":
        if (root / "PACS").is_dir():
            return f"ok      PACS in {root / 'PACS'}"
        return "by hand " + BY_HAND["pacs"].format(folder=root / "PACS")
    raise ClipnotesError(f"unknown download item {item!r}")


def present(item: str, profile) -> tuple[bool, str]:
    """Whether one need is already in place (nothing is fetched): ``(ok, where or what is missing)``."""
    from . import data
    root = Path(profile.data_dir)
    kind, _, name = item.partition(":")
    try:
        if kind == "weights":
            from .models import paper_weights
            return True, paper_weights(name, "openai", Path(profile.cache_dir), download=False)
        if kind in ("cifar10", "cifar100"):
            data.cifar(kind, root, train=True)
            return True, str(root)
        if kind == "cifar10-shifts":
            data.cifar10_shift("cifar10.1", root), data.cifar10_shift("cifar10.2", root)
            return True, str(root)
        if kind == "eurosat":
            folder = root / data.COOP_DATASETS["EuroSAT"][0] / data.COOP_DATASETS["EuroSAT"][1]
            return folder.is_dir(), str(folder)
        if kind == "coop-split":
            folder, _, split_file = data.COOP_DATASETS[name]
            return (root / folder / split_file).exists(), str(root / folder / split_file)
        if kind == "pacs":
            return (root / "PACS").is_dir(), str(root / "PACS")
    except ClipnotesError as e:
        return False, str(e)
    raise ClipnotesError(f"unknown download item {item!r}")
