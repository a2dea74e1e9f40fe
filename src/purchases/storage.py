"""Lake paths and atomic publication, on local disk or any fsspec file system (s3:// etc.).

Every change this module makes to the lake goes through one edge (Lake._changing) that turns
the file system's OSError into the product's errors: a full disk, a read-only lake or a
refused permission is a PermanentError naming the lake and the path (retrying cannot help),
a dropped connection or a timeout a TransientError (the step retries), each chained to the
OSError. PURCHASES_IO_FAULT injects those OSErrors there for tests (faults.io_fault).
"""

from __future__ import annotations

import errno
import json
import posixpath
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from purchases.contract import BRONZE_FILE_SUFFIXES
from purchases.errors import PermanentError, PurchasesError, TransientError
from purchases.faults import fault_point, io_fault

# bronze/year=YYYY/month=MM/day=DD/<name>  or the original AWS layout bronze/YYYY/MM/DD/<name>
_BRONZE_HIVE = re.compile(r"(?:^|/)bronze/year=(\d{4})/month=(\d{2})/day=(\d{2})/([^/]+)$")
_BRONZE_PLAIN = re.compile(r"(?:^|/)bronze/(\d{4})/(\d{2})/(\d{2})/([^/]+)$")


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY = frozenset({errno.EROFS})
_FORBIDDEN = frozenset({errno.EACCES, errno.EPERM})
_TRANSIENT = frozenset({
    errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED,
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAGAIN, errno.EBUSY,
})
_DOING = {"write": "writing", "mkdir": "creating the folder", "move": "moving",
          "remove": "deleting"}


def lake_write_error(exc: OSError, uri: str, op: str, rel: str) -> PurchasesError | None:
    """The product's error for an OSError met changing `rel` in the lake at `uri`, or None
    when it is none of the known kinds (then the OSError itself is the clearest report).

    The message says what went wrong where and what to do; running again is always safe
    (every write is atomic and a run publishes only at its commit, so what a failed command
    leaves is never visible), and a failed run adds that `purchases run` resumes.
    """
    doing = f"{_DOING.get(op, op)} {rel or '.'}"
    if exc.errno in _NO_SPACE:
        return PermanentError(
            f"lake {uri}: no space left on device ({doing}): free space there and run again"
        )
    if exc.errno == errno.EFBIG:
        return PermanentError(
            f"lake {uri}: file too large for the file system or this process's file-size "
            f"limit ({doing}): raise the limit (ulimit -f) and run again"
        )
    if exc.errno in _READ_ONLY:
        return PermanentError(
            f"lake {uri} is on a read-only file system ({doing}): make it writable, or point "
            "PURCHASES_LAKE (or --home) at a writable place, and run again"
        )
    if exc.errno in _FORBIDDEN or isinstance(exc, PermissionError):
        return PermanentError(
            f"lake {uri}: permission denied ({doing}): let this user write there and run again"
        )
    if exc.errno in _TRANSIENT or isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(f"lake {uri}: {exc.strerror or exc} ({doing})")
    return None


@dataclass(frozen=True)
class BronzeObject:
    """A landed bronze file: where it is and the ingestion date its path carries."""

    path: str  # lake-relative, e.g. bronze/year=2024/month=01/day=15/a.csv
    ingestion_date: date
    size: int
    version: str  # size and modification stamp (or ETag): changes whenever the bytes may have


def parse_bronze_path(path: str) -> tuple[date, str] | None:
    """Ingestion date and file name of a bronze path, or None if it is not one."""
    for pattern in (_BRONZE_HIVE, _BRONZE_PLAIN):
        m = pattern.search(path)
        if m:
            y, mo, d, name = m.groups()
            try:
                return date(int(y), int(mo), int(d)), name
            except ValueError:
                return None
    return None


def is_bronze_data_file(name: str) -> bool:
    # Hidden and underscore names are in-flight copies or markers, never data.
    return not name.startswith((".", "_")) and name.lower().endswith(BRONZE_FILE_SUFFIXES)


def _bronze_object(rel: str, info: dict[str, Any]) -> BronzeObject | None:
    parsed = parse_bronze_path(rel)
    if not parsed or not is_bronze_data_file(parsed[1]):
        return None
    size = int(info.get("size") or 0)
    stamp = info.get("mtime") or info.get("ETag") or info.get("LastModified") or ""
    return BronzeObject(rel, parsed[0], size, f"{size}:{stamp}")


class Lake:
    """The lake rooted at a URI; every path handed around is relative to that root."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.fs, root = url_to_fs(self.uri, **(storage_options or {}))
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)
        if self.is_local:
            self._makedirs("")

    # --- naming --------------------------------------------------------------------------

    def full(self, rel: str) -> str:
        """File-system path (without protocol) of a lake-relative path."""
        return posixpath.join(self.root, rel) if rel else self.root

    def url(self, rel: str) -> str:
        """URL of a lake-relative path that engines can open (a plain path when local)."""
        if self.is_local:
            return self.full(rel)
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        return f"{protocol}://{self.full(rel)}"

    @staticmethod
    def bronze_dir(day: date) -> str:
        return f"bronze/year={day:%Y}/month={day:%m}/day={day:%d}"

    @staticmethod
    def gold_dir(day: date) -> str:
        return f"gold/year={day:%Y}/month={day:%m}/day={day:%d}"

    # --- reading -------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.full(rel))

    def list_files(self, rel: str) -> list[str]:
        """Lake-relative paths of every file below rel (empty when rel does not exist)."""
        base = self.full(rel)
        if not self.fs.exists(base):
            return []
        prefix = self.root + "/"
        return sorted(p[len(prefix) :] for p in self.fs.find(base) if p.startswith(prefix))

    def list_children(self, rel: str) -> list[str]:
        """Names of the entries (files or folders) directly below rel, sorted; hidden ones
        (in-flight temporaries) left out."""
        base = self.full(rel)
        if not self.fs.exists(base):
            return []
        names = (posixpath.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False))
        return sorted(n for n in names if n and not n.startswith("."))

    def list_bronze(self) -> list[BronzeObject]:
        """Every landed bronze data file, in (ingestion date, path) order."""
        found = []
        base = self.full("bronze")
        if not self.fs.exists(base):
            return []
        prefix = self.root + "/"
        for full, info in self.fs.find(base, detail=True).items():
            obj = _bronze_object(full[len(prefix) :], info)
            if obj is not None:
                found.append(obj)
        return sorted(found, key=lambda o: (o.ingestion_date, o.path))

    def bronze_object(self, rel: str) -> BronzeObject | None:
        """The landed bronze data file at rel, or None when there is none (one stat, no list)."""
        try:
            info = self.fs.info(self.full(rel))
        except FileNotFoundError:
            return None
        return _bronze_object(rel, info) if info.get("type") != "directory" else None

    def open(self, rel: str, mode: str = "rb") -> Any:
        return self.fs.open(self.full(rel), mode)

    def read_json(self, rel: str) -> Any:
        with self.fs.open(self.full(rel), "rb") as fh:
            return json.loads(fh.read())

    def iter_json(self, rel_dir: str) -> Iterator[tuple[str, Any]]:
        for rel in self.list_files(rel_dir):
            if rel.endswith(".json"):
                yield rel, self.read_json(rel)

    # --- atomic writing --------------------------------------------------------------------

    @contextmanager
    def _changing(self, op: str, rel: str) -> Iterator[None]:
        """The one edge every change to the lake passes: fault injection, error translation."""
        try:
            io_fault(op, rel)
            yield
        except OSError as exc:
            translated = lake_write_error(exc, self.uri, op, rel)
            if translated is None:
                raise
            raise translated from exc

    def _makedirs(self, rel: str) -> None:
        full = self.full(rel)
        if self.is_local and self.fs.isdir(full):
            return  # nothing to change (and a read-only file system allows that much)
        with self._changing("mkdir", rel):
            self.fs.makedirs(full, exist_ok=True)

    def _tmp_sibling(self, rel: str) -> str:
        head, tail = posixpath.split(rel)
        return posixpath.join(head, f".{tail}.{uuid.uuid4().hex}.tmp")

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole object so that readers see either nothing or all of it."""
        tmp = self._tmp_sibling(rel)
        self._makedirs(posixpath.dirname(rel))
        try:
            with self._changing("write", rel), self.fs.open(self.full(tmp), "wb") as fh:
                fh.write(data)
            fault_point("mid_atomic_write")
            with self._changing("move", rel):
                self.fs.mv(self.full(tmp), self.full(rel))
        except PurchasesError:
            self._discard(tmp)  # e.g. a disk full mid-write leaves a partial temporary file
            raise

    def write_json(self, rel: str, payload: Any) -> None:
        self.write_bytes(rel, json.dumps(payload, indent=1, sort_keys=True, default=str).encode())

    def put_file(self, local_path: str, rel: str) -> None:
        """Copy a local file into the lake atomically: a half-copied file is never visible."""
        tmp = self._tmp_sibling(rel)
        self._makedirs(posixpath.dirname(rel))
        try:
            with self._changing("write", rel):
                self.fs.put_file(local_path, self.full(tmp))
            with self._changing("move", rel):
                self.fs.mv(self.full(tmp), self.full(rel))
        except PurchasesError:
            self._discard(tmp)
            raise

    def move(self, src_rel: str, dst_rel: str) -> None:
        """Move a staged object into place; idempotent so an interrupted publish can resume."""
        src, dst = self.full(src_rel), self.full(dst_rel)
        if not self.fs.exists(src):
            return  # already moved by an earlier, interrupted publish
        self._makedirs(posixpath.dirname(dst_rel))
        with self._changing("move", dst_rel):
            self.fs.mv(src, dst)

    def remove(self, rel: str) -> None:
        full = self.full(rel)
        if self.fs.exists(full):
            with self._changing("remove", rel):
                self.fs.rm(full, recursive=True)

    def _discard(self, rel: str) -> None:
        # Best effort: the error being reported matters more than a hidden temporary file.
        with suppress(OSError, PurchasesError):
            self.remove(rel)

    def makedirs(self, rel: str) -> None:
        self._makedirs(rel)
