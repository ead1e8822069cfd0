"""avel's download cache: published files fetched once, hash-checked, kept under one folder.

The cache folder is `$AVEL_CACHE` when set, else the platform's user cache (`$XDG_CACHE_HOME/avel`,
default `~/.cache/avel`). Every published file avel can fetch (backbone weights, the AVE authors'
trained networks) is a `CachedFile`: what it is, its URL, where it lives in the cache and its
published hash. `fetch` downloads what is missing into a temporary name, checks the hash and only
then renames it, so a partial or corrupt download never counts as present. Without a network it
prints one line per missing file (what it is, the URL, and where to put it) and raises one error.

Light on purpose (no torch): `avel models` lists the cache without loading any network.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avel.errors import AvelError
from avel.io import atomic_path, output_lock, remove_temporaries

CACHE_ENV = "AVEL_CACHE"  # overrides the cache folder
OFFLINE_ENV = "AVEL_OFFLINE"  # set (non-empty): never try the network
DOWNLOAD_TIMEOUT_S = 60  # s: network timeout per read
CHUNK_BYTES = 1 << 20  # bytes per read while downloading / hashing
GIT_BLOB = "git-blob-sha1"  # SHA-1 of b"blob <size>\0" + content: the id git (and GitHub) gives a file


def cache_root() -> Path:
    """The cache folder: $AVEL_CACHE, else $XDG_CACHE_HOME/avel, else ~/.cache/avel."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "avel"


@dataclass(frozen=True)
class CachedFile:
    """A published file avel can download: what it is, where from, where it goes, how to check it."""

    what: str  # human description, e.g. "the AVE authors' A+V-att network"
    url: str  # where it is published
    relpath: str  # path inside the cache folder, e.g. "models/AV_att.pt"
    algorithm: str  # hashlib name ("sha256", "md5") or "git-blob-sha1"
    digest: str | None  # published hex digest (a prefix is enough); None: cannot be verified, local file only
    size_mb: float  # approximate size (MB), for messages

    @property
    def path(self) -> Path:
        return cache_root() / self.relpath

    @property
    def downloadable(self) -> bool:
        return self.digest is not None

    def where(self) -> str:
        """One line saying what it is, where to get it and where to put it."""
        return f"{self.what} (~{self.size_mb:g} MB): download {self.url} and put it at {self.path}"


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (memoised per path, size and modification time: weight files are large)."""
    st = Path(path).stat()
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, algorithm)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int, algorithm: str) -> str:
    if algorithm == GIT_BLOB:
        h = hashlib.sha1()
        h.update(b"blob %d\0" % size)
    else:
        h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def matches(item: CachedFile, path: Path) -> bool:
    """Whether the file at `path` has the item's published hash."""
    return item.digest is not None and file_digest(path, item.algorithm).startswith(item.digest)


def is_cached(item: CachedFile) -> bool:
    """Present under its final name (temporary download names never count)."""
    return item.path.is_file()


def open_url(url: str) -> Any:
    """An open HTTP(S) response (tests replace this to simulate a network)."""
    return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)


class NoNetwork(Exception):
    """The network could not be reached (or AVEL_OFFLINE is set)."""


class MissingFiles(AvelError):
    """Files avel needs are not in the cache and cannot be downloaded now; `files` lists them."""

    def __init__(self, files: list[CachedFile], reason: str, hint: str = "") -> None:
        self.files = files
        hint = f"; {hint}" if hint else ""
        super().__init__(f"{reason}: {len(files)} file(s) missing, each listed above with its URL and where to "
                         f"put it{hint}", cache_root())


def fetch(items: Iterable[CachedFile], log: Callable[[str], None] | None = None,
          hint: str = "") -> dict[CachedFile, Path]:
    """Make every item present in the cache (download, verify, rename); returns item -> path.

    Items already cached are used as they are. The cache folder is locked (avel.io.output_lock) while
    anything is written. When files cannot be downloaded (no network, AVEL_OFFLINE, or no verifiable
    hash), logs one line per missing file (what it is, the URL, where to put it) and raises
    MissingFiles (`hint`: an alternative the caller offers, appended to its message).
    """
    log = log or _stderr
    items = list(dict.fromkeys(items))
    missing = [i for i in items if not is_cached(i)]

    def give_up(files: list[CachedFile], reason: str) -> MissingFiles:
        for item in files:
            log(f"missing {item.where()}")
        return MissingFiles(files, reason, hint)

    if missing:
        local_only = [i for i in missing if not i.downloadable]
        if local_only:
            raise give_up(local_only, "published without a hash avel can verify, so never downloaded")
        if os.environ.get(OFFLINE_ENV):
            raise give_up(missing, f"offline ({OFFLINE_ENV} is set)")
        with output_lock(cache_root()):
            for folder in {item.path.parent for item in missing}:
                remove_temporaries(folder)  # what a killed download left: never counted, now deleted
            for n, item in enumerate(missing):
                if is_cached(item):  # another process finished it before we took the lock
                    continue
                try:
                    download(item, log=log)
                except NoNetwork as exc:
                    raise give_up(missing[n:], f"no network ({exc})") from None
    return {i: i.path for i in items}


def _stderr(msg: str) -> None:
    print(f"avel: {msg}", file=sys.stderr)


def download(item: CachedFile, log: Callable[[str], None] | None = None) -> Path:
    """Download one item to a temporary name, verify its hash, rename; a mismatch deletes it and says so."""
    log = log or _stderr
    target = item.path
    try:
        resp = open_url(item.url)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise NoNetwork(getattr(exc, "reason", None) or exc) from None
    with resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        try:
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as f, _download_progress() as bar:
                    task = bar.add_task(f"downloading {item.what}", total=total)
                    while True:
                        try:
                            chunk = resp.read(CHUNK_BYTES)
                        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                            raise NoNetwork(f"download interrupted: {exc}") from None
                        if not chunk:
                            break
                        f.write(chunk)
                        bar.advance(task, len(chunk))
                got = file_digest(tmp, item.algorithm)
                if not got.startswith(item.digest or ""):
                    raise AvelError(f"the {item.algorithm} of {item.url} as downloaded, {got[:16]}..., does not match "
                                    f"the published {item.digest}: deleted (the server sent something else; try "
                                    "again later)", target)
        except OSError as exc:  # disk full, read-only folder
            raise AvelError(f"cannot write to the cache: {exc.strerror or exc}", target.parent) from None
    log(f"downloaded {item.what} to {target}")
    return target


def _download_progress() -> Any:
    """A byte-counting progress display on stderr (avel.progress: a rich bar on a terminal, plain lines
    otherwise)."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from avel.progress import stderr_progress

    return stderr_progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True)
