"""Where every benchmark file is read from: one search order for all loaders, and the checksum check.

A data file is named by its path relative to a data directory (``gsm8k/test.jsonl``, ``glue/SST-2/dev.tsv``;
the layout of the repository's ``data/``). For each file separately, the first of these that holds it wins:

1. the directory given explicitly (``--data-dir``);
2. ``$MISS_DATA_DIR``;
3. the repository's ``data/``;
4. the Hugging Face hub, only for a caller that has a hub route and may use it (``locate(..., hub=True)``
   then returns None and the caller reads the hub).

A file found in a directory whose ``MANIFEST.sha256`` (``sha256sum`` format, paths relative to that
directory) lists it is checked against that digest the first time a process reads it: a changed or
truncated file raises ``DataChecksumError`` naming the file and both digests. A directory without a
manifest (a user's own copies) is read as it is. A file found nowhere raises ``MissingDataError``, which
names the file, every directory searched, and how to get it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_DATA_DIR = REPO_ROOT / "data"
ENV_VAR = "MISS_DATA_DIR"
MANIFEST = "MANIFEST.sha256"


class DataFileError(Exception):
    """An input file that cannot be used as it is (missing, or not the file the manifest describes)."""


class MissingDataError(DataFileError, FileNotFoundError):
    """Required data files found in none of the searched directories."""

    def __init__(self, files: Iterable[str], searched: Iterable[SearchDir], how: str | None = None) -> None:
        self.files = list(files)
        self.searched = list(searched)
        places = "; ".join(f"{d.path} ({d.origin})" for d in self.searched) or "nothing (no data directory)"
        super().__init__(f"missing data file{'s' if len(self.files) > 1 else ''}: {', '.join(self.files)}\n"
                         f"  searched, in this order: {places}\n  to get {'them' if len(self.files) > 1 else 'it'}: "
                         f"{how or fetch_hint(self.files)}")


class DataChecksumError(DataFileError, ValueError):
    """A data file whose SHA-256 differs from its directory's manifest."""

    def __init__(self, path: Path, manifest: Path, expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(f"data file {path} does not match {manifest}: expected sha256 {expected}, got {actual} "
                         "(edited or truncated?). Restore it (for the repository's data/: `git checkout -- data/`) "
                         "or read your own copy from a directory without a manifest (--data-dir DIR).")


def fetch_hint(files: Iterable[str]) -> str:
    """How to get files of the ``data/`` layout: the repository's copy when it has one, else
    ``scripts/fetch_data.py`` (which writes every file of the layout, and the full GLUE train sets)."""
    files = list(files)
    manifest = _manifest_of(REPO_DATA_DIR)
    stored = manifest[1] if manifest else {}
    groups = sorted({f.split("/", 1)[0] for f in files})
    full_glue = " --full-glue" if any(f.startswith("glue/") and f not in stored for f in files) else ""
    fetch = (f"`python scripts/fetch_data.py --out DIR --only {' '.join(groups)}{full_glue}` (from the Hugging Face "
             f"hub) and pass `--data-dir DIR` (or set {ENV_VAR}=DIR)")
    if any(f in stored for f in files):
        return f"restore the repository's copy with `git checkout -- data/`, or write one with {fetch}"
    return f"write {'them' if len(files) > 1 else 'it'} with {fetch}"


@dataclass(frozen=True)
class SearchDir:
    path: Path
    origin: str          # why it is searched: "--data-dir", "$MISS_DATA_DIR" or "the repository's data/"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[SearchDir]:
    """The directories searched for every file, in order (a directory named twice is searched once)."""
    candidates = [(data_dir, "--data-dir"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}"),
                  (REPO_DATA_DIR, "the repository's data/")]
    dirs: list[SearchDir] = []
    for path, origin in candidates:
        if path is None:
            continue
        path = Path(path).expanduser().resolve()
        # a mistyped directory must not fall through silently to the repository's copies
        if origin != candidates[-1][1] and not path.is_dir():
            raise DataFileError(f"{origin} {path}: no such directory")
        if all(d.path != path for d in dirs):
            dirs.append(SearchDir(path, origin))
    return dirs


def locate(relative: str, data_dir: str | os.PathLike | None = None, *, hub: bool = False,
           how: str | None = None) -> Path | None:
    """The checked path of ``relative`` in the first searched directory that has it.

    When no directory has it: None if ``hub`` (the caller reads the hub instead), else ``MissingDataError``
    (``how`` replaces the default advice on getting the file).
    """
    found = locate_first((relative,), data_dir)
    if found is None and not hub:
        raise MissingDataError([relative], search_dirs(data_dir), how)
    return found


def locate_first(alternatives: Iterable[str], data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first of ``alternatives`` (relative paths, most wanted first) in the first directory holding any.

    Directories keep their order (an explicit directory beats the repository's copy whichever of the
    alternatives each holds); None when no directory holds any of them.
    """
    alternatives = list(alternatives)
    for d in search_dirs(data_dir):
        for relative in alternatives:
            path = d.path / relative
            if path.is_file():
                verify(path, d.path, relative)
                return path
    return None


def require(files: Iterable[str], data_dir: str | os.PathLike | None = None, *,
            how: str | None = None) -> dict[str, Path]:
    """Every file of ``files`` located and checked; one ``MissingDataError`` lists all that are missing."""
    found = {f: locate_first((f,), data_dir) for f in dict.fromkeys(files)}
    missing = [f for f, path in found.items() if path is None]
    if missing:
        raise MissingDataError(missing, search_dirs(data_dir), how)
    return found  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- checksums
def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256}`` of a ``sha256sum``-format file (``<hex>  <path>``, ``*`` for binary mode)."""
    path = Path(path)
    entries = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        if not sep or len(digest) != 64 or name[:1] not in (" ", "*"):
            raise DataFileError(f"{path}:{n}: not a sha256sum line: {line[:100]!r}")
        entries[name[1:]] = digest.lower()
    return entries


def write_manifest(root: str | os.PathLike, files: Iterable[str]) -> Path:
    """Write ``root/MANIFEST.sha256`` listing ``files`` (relative to ``root``), sorted; returns its path."""
    root = Path(root)
    lines = [f"{sha256_file(root / f)}  {f}\n" for f in sorted(set(files))]
    target = root / MANIFEST
    tmp = target.with_name(f".{MANIFEST}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, target)
    return target


_manifests: dict[tuple[Path, int, int], dict[str, str]] = {}
_digests: dict[Path, tuple[int, int, str]] = {}      # path -> (size, mtime_ns, sha256) when last hashed


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of ``path``, hashed once per process and version of the file (size and mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    cached = _digests.get(path)
    if cached is None or cached[:2] != (st.st_size, st.st_mtime_ns):
        cached = (st.st_size, st.st_mtime_ns, sha256_file(path))
        _digests[path] = cached
    return cached[2]


def _manifest_of(root: Path) -> tuple[Path, dict[str, str]] | None:
    path = root / MANIFEST
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _manifests:
        _manifests[key] = read_manifest(path)
    return path, _manifests[key]


def verify(path: Path, root: Path, relative: str) -> None:
    """Check ``root/relative`` against ``root``'s manifest, once per process and version of the file."""
    manifest = _manifest_of(root)
    if manifest is None or relative not in manifest[1]:
        return
    actual = file_digest(path)
    if actual != manifest[1][relative]:
        raise DataChecksumError(path, manifest[0], manifest[1][relative], actual)


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when inside it (records and tables stay free of machine paths)."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What a record keeps about a data file it read: where (``display_path``) and its SHA-256."""
    return {"path": display_path(path), "sha256": file_digest(path)}
