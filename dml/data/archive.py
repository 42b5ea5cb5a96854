"""Official dataset archives (``CUB_200_2011.tgz``, ``Stanford_Online_Products.zip``, ...) as
``data.root``: verified against ``data.sha256`` when given, then unpacked once into
``data/extracted/<archive name>/``. Nothing is ever downloaded.

Extraction is defensive because an archive is foreign input: a member whose path is absolute or
climbs out of the target (``../``), a link pointing outside it, or a device file stops the
extraction with one line naming the member (tar: Python's ``filter="data"``; zip: checked here).
Files are unpacked into a temporary folder that replaces the target only when complete, and a
marker records the archive's size and mtime (and verified hash), so an unchanged archive is not
unpacked again.
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from dml.errors import DatasetError
from dml.io import atomic_dir, file_sha256, read_json, write_json

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
MARKER = ".dml-extracted.json"
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error)


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


def _tar_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """``filter="data"`` (links outside, special files, unsafe modes), and absolute names refused
    rather than silently made relative, as for zip."""
    reason = _unsafe_name(member.name)
    if reason:
        raise tarfile.AbsolutePathError(member) if reason == "absolute path" else tarfile.OutsideDestinationError(member, member.name)
    return tarfile.data_filter(member, dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter=_tar_filter)
    except tarfile.FilterError as err:
        raise DatasetError(f"{archive}: refusing member {err.tarinfo.name!r}: {_REASONS.get(type(err).__name__, str(err))}") from None
    except _READ_ERRORS as err:
        raise DatasetError(f"{archive}: unreadable tar archive ({type(err).__name__}: {err})") from None


_REASONS = {
    "AbsolutePathError": "absolute path",
    "OutsideDestinationError": "path climbs out of the target folder",
    "AbsoluteLinkError": "link to an absolute path",
    "LinkOutsideDestinationError": "link pointing outside the target folder",
    "SpecialFileError": "device, pipe or other special file",
}


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                reason = _unsafe_name(info.filename)
                if reason is None and stat.S_ISLNK(info.external_attr >> 16):
                    reason = "symbolic link (links in zip archives are not extracted)"
                if reason:
                    raise DatasetError(f"{archive}: refusing member {info.filename!r}: {reason}")
            zf.extractall(dest)
    except _READ_ERRORS as err:
        raise DatasetError(f"{archive}: unreadable zip archive ({type(err).__name__}: {err})") from None


def extract(archive: Path, target: Path, sha256: str | None = None) -> Path:
    """``archive`` unpacked into ``target`` (verified first when ``sha256`` is given); a no-op when
    ``target`` holds a complete extraction of the same archive file."""
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
        (_extract_zip if archive_suffix(archive) == ".zip" else _extract_tar)(archive, tmp)
        write_json(tmp / MARKER, stamp)
    return target


def resolve_root(root: Path, sha256: str | None, extracted: Path) -> Path:
    """The folder to read a dataset from: ``root`` itself, or the archive ``root`` unpacked under
    ``extracted/<archive name without suffix>/``."""
    suffix = archive_suffix(root)
    if root.is_file() and suffix:
        return extract(root, extracted / root.name[: -len(suffix)], sha256)
    if sha256:
        raise DatasetError(f"data.sha256: {root} is not an archive ({', '.join(ARCHIVE_SUFFIXES)}); nothing to verify, set data.sha256: null")
    if root.is_file():
        raise DatasetError(f"data.root: {root} is a file but not a dataset archive ({', '.join(ARCHIVE_SUFFIXES)}) or folder")
    return root
