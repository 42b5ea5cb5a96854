"""Official dataset archives (``CUB_200_2011.tgz``, ``Stanford_Online_Products.zip``, ...) as
``data.root``: verified against ``data.sha256`` when given, then unpacked once into
``data/extracted/<archive name>/``. Nothing is ever downloaded.

Extraction is defensive because an archive is foreign input: a member whose path is absolute or
climbs out of the target (``../``), a link pointing outside it, or a device file stops the
extraction with one line naming the member (tar: Python's ``filter="data"``; zip: checked here).
So does an archive that would unpack to more than ``data.max_unpacked_gb`` or to more than
``data.max_compression_ratio`` times its own size (a decompression bomb): zip is checked against
its directory before anything is written, tar member by member as it unpacks (its sizes are only
known then), so no more than the limit is ever written. Files are unpacked into a temporary
folder that replaces the target only when complete (a refused archive leaves nothing), and a
marker records the archive's size and mtime (and verified hash), so an unchanged archive is not
unpacked again.
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dml.data.config import DataConfig
from dml.errors import DatasetError
from dml.io import atomic_dir, file_sha256, read_json, write_json

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
MARKER = ".dml-extracted.json"
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class Limits:
    """What an archive may unpack to: ``data.max_unpacked_gb`` and ``data.max_compression_ratio``."""

    max_bytes: int
    max_ratio: float

    @classmethod
    def of(cls, cfg: DataConfig) -> Limits:
        return cls(int(cfg.max_unpacked_gb * 1e9), cfg.max_compression_ratio)


DEFAULT_LIMITS = Limits.of(DataConfig())


def _size(count: int) -> str:
    """Bytes for a person: ``29.9 KB``, ``150.0 MB``."""
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} TB"


def size_guard(archive: Path, limits: Limits) -> Callable[[str, int], None]:
    """A check to call with each member's (name, unpacked size) in order: it raises as soon as the
    running total passes either limit (the ratio is to the archive's size, so a total that passes
    it never comes back under)."""
    packed = max(archive.stat().st_size, 1)
    total = 0

    def add(name: str, size: int) -> None:
        nonlocal total
        total += max(size, 0)
        if total > limits.max_bytes:
            raise DatasetError(f"{archive}: unpacks to more than data.max_unpacked_gb: {limits.max_bytes / 1e9:g} "
                               f"({_size(total)} with member {name!r}); refusing it (raise the limit if the dataset is that large)")
        if total > limits.max_ratio * packed:
            raise DatasetError(f"{archive}: unpacks to more than {limits.max_ratio:g} times its {_size(packed)} "
                               f"(data.max_compression_ratio; {_size(total)} with member {name!r}); refusing it as a decompression bomb")

    return add


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (tarfile lists every method it tried, one per line)."""
    text = str(err)
    if text.startswith("file could not be opened successfully"):
        return "not a gzip, bzip2, xz or plain tar file"
    return f"{type(err).__name__}: {' '.join(text.split())[:200]}"


def archive_suffix(path: Path) -> str | None:
    """The archive suffix of ``path`` (".tgz", ".tar.gz", ...), or None for any other file."""
    name = path.name.lower()
    return next((suffix for suffix in ARCHIVE_SUFFIXES if name.endswith(suffix)), None)


def verify_sha256(path: Path, expected: str) -> None:
    got = file_sha256(path)
    if got != expected.lower():
        raise DatasetError(f"data.sha256: {path} has sha256 {got}, expected {expected.lower()} (a different or damaged download)")


def _unsafe_name(name: str) -> str | None:
    """Why a member name must not be extracted, or None."""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"^[A-Za-z]:", normal):
        return "absolute path"
    if ".." in PurePosixPath(normal).parts:
        return "path climbs out of the target folder"
    return None


def _tar_filter(guard: Callable[[str, int], None]) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    """``filter="data"`` (links outside, special files, unsafe modes), absolute names refused
    rather than silently made relative, as for zip, and each member's size counted by ``guard``
    before it is written."""

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        reason = _unsafe_name(member.name)
        if reason:
            raise tarfile.AbsolutePathError(member) if reason == "absolute path" else tarfile.OutsideDestinationError(member, member.name)
        safe = tarfile.data_filter(member, dest)
        if safe is not None and safe.isfile():
            guard(safe.name, safe.size)
        return safe

    return check


def _extract_tar(archive: Path, dest: Path, limits: Limits) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter=_tar_filter(size_guard(archive, limits)))
    except tarfile.FilterError as err:
        raise DatasetError(f"{archive}: refusing member {err.tarinfo.name!r}: {_REASONS.get(type(err).__name__, str(err))}") from None
    except _READ_ERRORS as err:
        raise DatasetError(f"{archive}: unreadable tar archive ({_one_line(err)})") from None


_REASONS = {
    "AbsolutePathError": "absolute path",
    "OutsideDestinationError": "path climbs out of the target folder",
    "AbsoluteLinkError": "link to an absolute path",
    "LinkOutsideDestinationError": "link pointing outside the target folder",
    "SpecialFileError": "device, pipe or other special file",
}


def _extract_zip(archive: Path, dest: Path, limits: Limits) -> None:
    """Every member checked against the zip's directory before anything is written (the sizes
    it declares bound what ``zipfile`` writes)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            guard = size_guard(archive, limits)
            for info in zf.infolist():
                reason = _unsafe_name(info.filename)
                if reason is None and stat.S_ISLNK(info.external_attr >> 16):
                    reason = "symbolic link (links in zip archives are not extracted)"
                if reason:
                    raise DatasetError(f"{archive}: refusing member {info.filename!r}: {reason}")
                guard(info.filename, info.file_size)
            zf.extractall(dest)
    except _READ_ERRORS as err:
        raise DatasetError(f"{archive}: unreadable zip archive ({_one_line(err)})") from None


def extract(archive: Path, target: Path, sha256: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Path:
    """``archive`` unpacked into ``target`` (verified first when ``sha256`` is given); a no-op when
    ``target`` holds a complete extraction of the same archive file. A refused archive leaves
    nothing in ``target`` (nor a previous extraction changed)."""
    info = archive.stat()
    stamp = {"archive": archive.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    marker = target / MARKER
    recorded = read_json(marker) if marker.is_file() else {}
    if {k: recorded.get(k) for k in stamp} == stamp:
        if sha256 and recorded.get("sha256") != sha256.lower():
            verify_sha256(archive, sha256)
            write_json(marker, {**recorded, "sha256": sha256.lower()})
        return target
    if sha256:
        verify_sha256(archive, sha256)
        stamp["sha256"] = sha256.lower()
    with atomic_dir(target) as tmp:
        (_extract_zip if archive_suffix(archive) == ".zip" else _extract_tar)(archive, tmp, limits)
        write_json(tmp / MARKER, stamp)
    return target


def resolve_root(root: Path, sha256: str | None, extracted: Path, limits: Limits = DEFAULT_LIMITS,
                 file_ok: bool = False) -> Path:
    """What to read a dataset from: ``root`` itself (a folder; a file too when ``file_ok``: a
    manifest, verified when ``sha256`` is given), or the archive ``root`` unpacked under
    ``extracted/<archive name without suffix>/``."""
    if not root.exists():
        raise DatasetError(f"data.root: {root} does not exist")
    suffix = archive_suffix(root)
    if root.is_file() and suffix:
        return extract(root, extracted / root.name[: -len(suffix)], sha256, limits)
    if root.is_file() and file_ok:
        if sha256:
            verify_sha256(root, sha256)
        return root
    if sha256:
        raise DatasetError(f"data.sha256: {root} is not an archive ({', '.join(ARCHIVE_SUFFIXES)}); nothing to verify, set data.sha256: null")
    if root.is_file():
        raise DatasetError(f"data.root: {root} is a file but not a dataset archive ({', '.join(ARCHIVE_SUFFIXES)}) or folder")
    return root
