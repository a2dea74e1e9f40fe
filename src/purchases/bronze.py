"""Bronze: landing CSV files in the lake and inspecting them (identity, encoding, header)."""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from purchases.contract import BRONZE_FILE_SUFFIXES, INPUT_COLUMNS, FileRejection
from purchases.errors import InputError
from purchases.storage import BronzeObject, Lake

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LandedFile:
    path: str  # lake-relative bronze path
    sha256: str
    skipped: bool  # True when the same bytes were already at that path (a no-op)


@dataclass(frozen=True)
class BronzeFile:
    """A bronze file ready for an engine: where it is, what it is, how its columns map."""

    path: str
    ingestion_date: date
    sha256: str
    compressed: bool
    column_count: int = 0
    positions: dict[str, int] = field(default_factory=dict)  # input column -> 0-based index
    skip_lines: int = 0  # blank lines before the header
    rejection: FileRejection | None = None
    detail: str = ""

    @property
    def file_id(self) -> str:
        """Identity of the file: its path and content hash (DESIGN §2)."""
        return f"{self.path}#{self.sha256}"


def source_files(paths: list[Path]) -> list[Path]:
    """Expand the user's paths (files or folders) into the CSV files to land, sorted.

    Raises:
        InputError: a path does not exist or is not a CSV file.
    """
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.name.lower().endswith(BRONZE_FILE_SUFFIXES)
                    and not f.name.startswith((".", "_"))
                )
            )
        elif p.is_file():
            if not p.name.lower().endswith(BRONZE_FILE_SUFFIXES):
                raise InputError(f"{p}: not a .csv or .csv.gz file")
            found.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def land(lake: Lake, sources: list[Path], day: date) -> list[LandedFile]:
    """Copy files into bronze/year=/month=/day=/ atomically; the same bytes again are a no-op.

    A landed file is never overwritten, since it may not have been processed yet: different
    bytes under a name already taken land as `<stem>~<sha256 prefix><suffix>`, a new file.
    """
    landed = []
    for src in sources:
        digest = sha256_of(src)
        rel = f"{Lake.bronze_dir(day)}/{src.name}"
        if lake.exists(rel) and sha256_of_lake(lake, rel) != digest:
            stem, dot, suffix = src.name.partition(".")
            rel = f"{Lake.bronze_dir(day)}/{stem}~{digest[:12]}{dot}{suffix}"
        if lake.exists(rel):
            landed.append(LandedFile(rel, digest, skipped=True))
            continue
        lake.put_file(str(src), rel)
        landed.append(LandedFile(rel, digest, skipped=False))
    return landed


def sha256_of_lake(lake: Lake, rel: str) -> str:
    digest = hashlib.sha256()
    with lake.open(rel) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inspect(lake: Lake, obj: BronzeObject) -> BronzeFile:
    """Hash a bronze file, check it is UTF-8 text, and map its header to the input columns.

    A file that fails here is returned with `rejection` set: it is rejected as a whole.
    """
    compressed = obj.path.lower().endswith(".gz")
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    inflate = zlib.decompressobj(wbits=31) if compressed else None
    base = BronzeFile(obj.path, obj.ingestion_date, "", compressed)
    bad_utf8: str | None = None
    try:
        with lake.open(obj.path) as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                if bad_utf8 is None:
                    bad_utf8 = _check_utf8(decoder, inflate, chunk)
        if inflate is not None and not inflate.eof:
            raise EOFError("truncated or corrupt gzip data")
        if bad_utf8 is None:
            bad_utf8 = _check_utf8(decoder, None, b"", final=True)
    except (OSError, zlib.error, EOFError) as exc:
        return _reject(base, digest, FileRejection.UNREADABLE, f"cannot read it: {exc}")
    if bad_utf8:
        return _reject(base, digest, FileRejection.NOT_UTF8, bad_utf8)
    try:
        return _read_header(lake, base, digest.hexdigest())
    except (OSError, EOFError, zlib.error) as exc:
        return _reject(base, digest, FileRejection.UNREADABLE, f"cannot read it: {exc}")


def _check_utf8(decoder, inflate, chunk: bytes, final: bool = False) -> str | None:
    data = inflate.decompress(chunk) if inflate is not None else chunk
    try:
        decoder.decode(data, final)
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text ({exc.reason} near byte {exc.start})"
    return None


def _reject(base: BronzeFile, digest, reason: FileRejection, detail: str) -> BronzeFile:
    return BronzeFile(
        base.path,
        base.ingestion_date,
        digest.hexdigest() if not isinstance(digest, str) else digest,
        base.compressed,
        rejection=reason,
        detail=detail,
    )


def _read_header(lake: Lake, base: BronzeFile, sha: str) -> BronzeFile:
    with lake.open(base.path) as raw:
        stream = gzip.GzipFile(fileobj=raw) if base.compressed else raw
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        skip = 0
        header: list[str] | None = None
        # Only the header is read here; the engine parses the body.
        for record in csv.reader(text):
            if record and any(cell.strip() for cell in record):
                header = record
                break
            skip += 1
    if header is None:
        return _reject(base, sha, FileRejection.EMPTY, "empty file: no header row")
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        key = " ".join(name.split()).lower()
        positions.setdefault(key, index)  # repeated header names: the first wins
    missing = [c for c in INPUT_COLUMNS if c not in positions]
    if missing:
        return _reject(
            base,
            sha,
            FileRejection.MISSING_COLUMNS,
            f"missing required column(s): {', '.join(missing)}",
        )
    return BronzeFile(
        base.path,
        base.ingestion_date,
        sha,
        base.compressed,
        column_count=len(header),
        positions={c: positions[c] for c in INPUT_COLUMNS},
        skip_lines=skip,
    )
