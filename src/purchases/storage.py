"""Lake paths and atomic publication, on local disk or any fsspec file system (s3:// etc.)."""

from __future__ import annotations

import json
import posixpath
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from purchases.contract import BRONZE_FILE_SUFFIXES
from purchases.faults import fault_point

# bronze/year=YYYY/month=MM/day=DD/<name>  or the original AWS layout bronze/YYYY/MM/DD/<name>
_BRONZE_HIVE = re.compile(r"(?:^|/)bronze/year=(\d{4})/month=(\d{2})/day=(\d{2})/([^/]+)$")
_BRONZE_PLAIN = re.compile(r"(?:^|/)bronze/(\d{4})/(\d{2})/(\d{2})/([^/]+)$")


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
            self.fs.makedirs(self.root, exist_ok=True)

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

    def _tmp_sibling(self, rel: str) -> str:
        head, tail = posixpath.split(rel)
        return posixpath.join(head, f".{tail}.{uuid.uuid4().hex}.tmp")

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole object so that readers see either nothing or all of it."""
        tmp = self._tmp_sibling(rel)
        self.fs.makedirs(posixpath.dirname(self.full(rel)), exist_ok=True)
        with self.fs.open(self.full(tmp), "wb") as fh:
            fh.write(data)
        fault_point("mid_atomic_write")
        self.fs.mv(self.full(tmp), self.full(rel))

    def write_json(self, rel: str, payload: Any) -> None:
        self.write_bytes(rel, json.dumps(payload, indent=1, sort_keys=True, default=str).encode())

    def put_file(self, local_path: str, rel: str) -> None:
        """Copy a local file into the lake atomically: a half-copied file is never visible."""
        tmp = self._tmp_sibling(rel)
        self.fs.makedirs(posixpath.dirname(self.full(rel)), exist_ok=True)
        self.fs.put_file(local_path, self.full(tmp))
        self.fs.mv(self.full(tmp), self.full(rel))

    def move(self, src_rel: str, dst_rel: str) -> None:
        """Move a staged object into place; idempotent so an interrupted publish can resume."""
        src, dst = self.full(src_rel), self.full(dst_rel)
        if not self.fs.exists(src):
            return  # already moved by an earlier, interrupted publish
        self.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
        self.fs.mv(src, dst)

    def remove(self, rel: str) -> None:
        full = self.full(rel)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)

    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self.full(rel), exist_ok=True)
