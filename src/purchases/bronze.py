"""Bronze: landing CSV files in the lake and inspecting them (identity, encoding, header)."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import hashlib
import io
import os
import re
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from purchases.contract import (
    BRONZE_FILE_SUFFIXES,
    DEFAULT_MAX_RECORD_BYTES,
    INPUT_COLUMNS,
    RAW_PREFIX_BYTES,
    FileRejection,
)
from purchases.errors import InputError, TransientError
from purchases.storage import BronzeObject, Lake

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LandedFile:
    path: str  # lake-relative bronze path
    sha256: str
    skipped: bool  # True when the same bytes were already at that path (a no-op)


@dataclass(frozen=True)
class OversizedRecord:
    """A record longer than the configured bound, cut out of the file the engines read."""

    line_number: int  # physical line (1-based) the record starts on
    size: int  # bytes of the record, its line break not counted
    prefix: str  # its first RAW_PREFIX_BYTES bytes (whole UTF-8 characters only)


@dataclass(frozen=True)
class BronzeFile:
    """A bronze file ready for an engine: where it is, what it is, how its columns map."""

    path: str
    ingestion_date: date
    sha256: str
    compressed: bool  # the file engines read (`read_path`) is gzip'd
    column_count: int = 0
    positions: dict[str, int] = field(default_factory=dict)  # input column -> 0-based index
    skip_lines: int = 0  # blank lines before the header
    rejection: FileRejection | None = None
    detail: str = ""
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES  # longer records are in `oversized`
    # Set only for a file holding an over-long record: a copy of it without those records
    # (lake-relative), which engines read instead; the records cut out are in `oversized`.
    sanitised_path: str = ""
    oversized: tuple[OversizedRecord, ...] = ()

    @property
    def file_id(self) -> str:
        """Identity of the file: its path and content hash (DESIGN §2)."""
        return f"{self.path}#{self.sha256}"

    @property
    def read_path(self) -> str:
        """Lake-relative path of the file engines parse: the bronze file or its sanitised copy."""
        return self.sanitised_path or self.path


def source_files(paths: list[Path]) -> list[Path]:
    """Expand the user's paths (files or folders) into the CSV files to land, sorted.

    Raises:
        InputError: a path does not exist or is not a CSV file.
    """
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            named = sorted(
                f for f in p.rglob("*")
                if f.name.lower().endswith(BRONZE_FILE_SUFFIXES)
                and not f.name.startswith((".", "_"))
                and not f.is_dir()
            )
            for f in named:  # a data file's name on what cannot be landed: never skipped quietly
                if f.is_symlink() and not f.exists():
                    raise InputError(f"{f}: a symbolic link to {os.readlink(f)}, which does "
                                     "not exist")
                if not f.is_file():
                    raise InputError(f"{f}: not a regular file")
            found.extend(named)
        elif p.is_file():
            if not p.name.lower().endswith(BRONZE_FILE_SUFFIXES):
                raise InputError(f"{p}: not a .csv or .csv.gz file")
            found.append(p)
        elif p.exists():  # /dev/null, a FIFO, a socket: nothing to copy whole and hash
            raise InputError(f"{p}: not a regular file or a folder")
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

    Raises:
        InputError: a source cannot be read (named, with how many landed before it).
    """
    landed = []
    for src in sources:
        try:
            digest = sha256_of(src)
        except OSError as exc:  # the OS's message names no file (/proc/self/mem: "I/O error")
            done = (f" ({len(landed)} file(s) before it landed; the same command lands the "
                    "rest once it can be read)") if landed else ""
            raise InputError(f"{src}: cannot read it: {exc.strerror or exc}{done}") from None
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


def inspect(
    lake: Lake,
    obj: BronzeObject,
    *,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    scratch: str = "_runs/.inspect",
    sanitise: bool = True,
) -> BronzeFile:
    """Hash a bronze file, check it is UTF-8 text, and map its header to the input columns.

    A file that fails here is returned with `rejection` set: it is rejected as a whole.

    The same pass looks for records longer than `max_record_bytes` (DESIGN §3,
    record_too_large) at C speed: a few `rfind`/`find`/`count` calls per bound's worth of
    bytes (a fraction of what hashing costs), no CSV parsing. Only a file holding such a
    record is read again, record by record, into a sanitised copy under the lake-relative
    folder `scratch` (a run's staging; the hidden default, for callers outside a run, is
    theirs to clear) that lacks those records; engines parse the copy (`read_path`) and
    quarantine the records cut out (`oversized`). Neither engine then ever meets a huge
    record: DuckDB 2.0 drops a line over max_line_size and over 32 MiB without a trace
    (smaller ones it rejects as malformed), and Spark has no bound at all.

    The same pass notices mixed line endings (`_LineEndings`: more than one of LF, CRLF and
    a bare CR in the file). DuckDB's strict parser takes the first record's line break as
    the file's and fails the whole read on another one outside quotes, and Spark detects one
    per file too, so such a file is also read from a copy, in which every line break is LF:
    records end at LF, CRLF or a bare CR outside quotes (as Python's csv splits them), and
    what lies between is parsed as usual (a broken record is malformed_row). A file whose
    path holds a backslash is read from such a copy too. A clean file (one kind of line
    break) is read in place. With `sanitise` False (a read-only caller)
    no copy is written and the file is returned as it is.

    Raises:
        TransientError: the sanitised copy cannot be written to the lake.
    """
    compressed = obj.path.lower().endswith(".gz")
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    inflate = zlib.decompressobj(wbits=31) if compressed else None
    base = BronzeFile(obj.path, obj.ingestion_date, "", compressed)
    check = _LengthCheck(max_record_bytes)
    endings = _LineEndings()
    bad_utf8: str | None = None
    try:
        with lake.open(obj.path) as fh, _Hashing(digest) as hashing:
            while chunk := fh.read(_CHUNK):
                hashing.update(chunk)  # on another core, while this one checks the text
                if bad_utf8 is None:
                    bad_utf8 = _check_text(decoder, inflate, chunk, check, endings)
            if bad_utf8 is None:
                bad_utf8 = _check_text(decoder, inflate, b"", check, endings)
        if inflate is not None and not inflate.eof:
            raise EOFError("truncated or corrupt gzip data")
        if bad_utf8 is None:
            bad_utf8 = _utf8_error(decoder, b"", final=True)
    except (OSError, zlib.error, EOFError) as exc:
        return _reject(base, digest, FileRejection.UNREADABLE, f"cannot read it: {exc}")
    if bad_utf8:
        return _reject(base, digest, FileRejection.NOT_UTF8, bad_utf8)
    try:
        found = _read_header(lake, base, digest.hexdigest())
        found = dataclasses.replace(found, max_record_bytes=max_record_bytes)
        # A backslash in its path: DuckDB's reader takes one for a path separator wherever
        # the path holds a * ? or [ (its glob), and would never find the file.
        copy_only = endings.mixed or "\\" in lake.url(obj.path)
        if found.rejection is None and sanitise and (check.found or copy_only):
            found = _sanitise(lake, found, scratch, keep_copy=copy_only)
        return found
    except csv.Error as exc:  # a header field over csv's limit (131072 characters)
        return _reject(base, digest, FileRejection.UNREADABLE, f"cannot read its header: {exc}")
    except (OSError, EOFError, zlib.error) as exc:
        return _reject(base, digest, FileRejection.UNREADABLE, f"cannot read it: {exc}")


class _Hashing:
    """Feeds a hash on a worker thread, one chunk behind the reader: hashlib releases the GIL
    while it hashes, so the file's hash costs no time beside the text checks, which hold it.
    At most two chunks are alive (the one hashed, the one checked)."""

    def __init__(self, digest) -> None:
        self._digest = digest
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._pending: Future[None] | None = None

    def update(self, chunk: bytes) -> None:
        if self._pending is not None:
            self._pending.result()
        self._pending = self._pool.submit(self._digest.update, chunk)

    def __enter__(self) -> _Hashing:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._pending is not None:
                self._pending.result()
        finally:
            self._pool.shutdown(wait=True)


def _plain(inflate, chunk: bytes) -> Iterator[bytes]:
    """The text bytes a read chunk holds, inflated in pieces of at most _CHUNK bytes (so a
    highly compressed huge line is never inflated in one go)."""
    if inflate is None:
        if chunk:
            yield chunk
        return
    data = inflate.decompress(chunk, _CHUNK)
    while data:
        yield data
        data = inflate.decompress(inflate.unconsumed_tail, _CHUNK)


def _check_text(
    decoder, inflate, chunk: bytes, check: _LengthCheck, endings: _LineEndings
) -> str | None:
    for data in _plain(inflate, chunk):
        error = _utf8_error(decoder, data)
        if error:
            return error
        check.feed(data)
        endings.feed(data)
    return None


class _LineEndings:
    """Tells whether a file mixes line breaks (LF, CRLF, bare CR), at C speed.

    Bytes are counted wherever they are, quoted fields included: a quoted line break of
    another kind only costs the file a normalised copy, which reads the same. A file without
    any CR (the common case) costs one memchr per piece.
    """

    def __init__(self) -> None:
        self.lf = self.cr = self.crlf = 0
        self._lf_seen = False
        self._ends_cr = False  # the last piece ended on CR (a CRLF may straddle pieces)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if b"\r" not in data and not self._ends_cr:
            if not self._lf_seen and b"\n" in data:
                self._lf_seen = True
            return
        self.cr += data.count(b"\r")
        self.lf += data.count(b"\n")
        self.crlf += data.count(b"\r\n") + (self._ends_cr and data[0] == _LF)
        self._ends_cr = data[-1] == _CR

    @property
    def mixed(self) -> bool:
        if not self.cr:  # LF only (or no line break at all)
            return False
        # An LF in a piece without CR (its predecessor not ending on one) is a bare LF.
        bare_lf = self._lf_seen or self.lf > self.crlf
        return (self.cr > self.crlf) + bare_lf + (self.crlf > 0) > 1


def _utf8_error(decoder, data: bytes, final: bool = False) -> str | None:
    try:
        decoder.decode(data, final)
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text ({exc.reason} near byte {exc.start})"
    return None


def _line_break_before(data: bytes, lo: int, hi: int) -> int:
    """Index of the last CR or LF in data[lo:hi], or -1."""
    lf = data.rfind(b"\n", lo, hi)
    return max(lf, data.rfind(b"\r", max(lf + 1, lo), hi))  # a CR after it, if any


class _LengthCheck:
    """Tells whether a file may hold a record longer than `limit` bytes, at C speed.

    Fed the file's text in pieces. From the start of a record it looks `limit` bytes ahead
    for the last line break outside quotes, by quote parity (an even number of quotes since
    the record began; a doubled quote counts twice): a window without one means a long
    record. Parity reads well-formed CSV exactly; a stray quote inside an unquoted field can
    only make it report a long record that is not there, which the exact, slower pass of
    `_RecordCutter` then sorts out (it cuts nothing). It cannot miss a long physical line.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.found = False
        self._offset = 0  # bytes fed so far
        self._start = 0  # offset of the current record's first byte
        self._parity = 0  # quotes from _start to _offset, mod 2

    def feed(self, data: bytes) -> None:
        if self.found:
            return
        n, base = len(data), self._offset
        self._offset += n
        while True:
            lo = max(self._start - base, 0)
            parity = self._parity if self._start < base else 0
            hi = self._start - base + self.limit + 1  # a line break before hi ends it in time
            q = self._last_boundary(data, lo, min(hi, n), parity)
            if hi > n:  # the window reaches past this piece: carry on with the next one
                if q < 0:
                    self._parity = parity ^ _quote_parity(data, lo, n)
                else:
                    self._start, self._parity = base + q + 1, _quote_parity(data, q + 1, n)
                return
            if q < 0:
                self.found = True
                return
            self._start = base + q + 1

    @staticmethod
    def _last_boundary(data: bytes, lo: int, hi: int, parity: int) -> int:
        q = _line_break_before(data, lo, hi)
        if q < 0:
            return -1
        parity ^= _quote_parity(data, lo, q)
        while parity:  # q is inside a quoted field: step back to the line break before it
            r = _line_break_before(data, lo, q)
            if r < 0:
                return -1
            parity ^= _quote_parity(data, r, q)
            q = r
        return q


def _quote_parity(data: bytes, lo: int, hi: int) -> int:
    # find (memchr) first: a stretch without quotes, the common case, is not counted.
    return data.count(b'"', lo, hi) & 1 if data.find(b'"', lo, hi) >= 0 else 0


_QUOTE, _CR, _LF, _COMMA = 0x22, 0x0D, 0x0A, 0x2C
_BOM = codecs.BOM_UTF8
_RECORD_EVENT = re.compile(rb'[\r\n"]')


class _RecordCutter:
    """Splits CSV text into records as RFC 4180 readers do, and cuts out the long ones.

    Fed the file's text in pieces, it returns the bytes to keep: every record of at most
    `limit` bytes (its line break not counted, as DuckDB's max_line_size counts), and the
    first `keep` records (blank lines before the header, and the header) whatever their size.
    A quote opens a quoted field only at a field's start (elsewhere it is a literal
    character, as DuckDB, Spark and Python's csv read it); inside one, a doubled quote is a
    quote and a single one closes it. A record ends at CR, LF or CRLF outside quotes.
    With `normalise`, every line break kept (quoted ones too) is written as LF, so the
    output has one kind only. Memory: one record of at most `limit` bytes plus one piece.
    """

    def __init__(self, limit: int, keep: int, *, normalise: bool = False) -> None:
        self.limit, self.keep, self.normalise = limit, keep, normalise
        self.cut: list[OversizedRecord] = []
        self.longest_kept = 0  # of the first `keep` records
        self._out: list[bytes] = []
        self._index = 0  # records so far, blank ones included (as csv.reader counts them)
        self._line = 1  # physical line at the current position
        self._start_line = 1  # physical line the current record starts on
        self._record = bytearray()  # the current record, while within the bound
        self._size = 0  # bytes of the current record
        self._too_long = False  # the current record is over the bound: only its prefix kept
        self._prefix = b""
        self._quoted = False
        self._quote_pending = False  # a piece ended on a quote inside a quoted field
        self._prev = _LF  # last byte seen: a line break before the file is a field start
        self._after_cr: bool | None = None  # a record ended on CR (True: it was kept)
        self._first = True

    def feed(self, data: bytes) -> bytes:
        i, n = 0, len(data)
        if self._first and n:
            self._first = False
            if data.startswith(_BOM):  # readers drop it: the header starts after it
                self._consume(data[:3])
                self._prev, i = _LF, 3
        while i < n:
            if self._after_cr is not None:
                if data[i] == _LF:  # the LF of a CRLF: part of the line break just seen
                    if self._after_cr and not self.normalise:
                        self._out.append(b"\n")
                    self._prev, i = _LF, i + 1
                self._after_cr = None
                continue
            if self._quote_pending:
                self._quote_pending = False
                if data[i] == _QUOTE:  # a doubled quote
                    self._consume(data[i : i + 1])
                    i += 1
                else:
                    self._quoted = False
                continue
            if self._quoted:
                j = data.find(b'"', i)
                if j < 0:
                    self._consume(data[i:])
                    break
                self._consume(data[i : j + 1])
                if j + 1 == n:
                    self._quote_pending = True
                    break
                if data[j + 1] == _QUOTE:
                    self._consume(data[j + 1 : j + 2])
                    i = j + 2
                else:
                    self._quoted = False
                    i = j + 1
                continue
            m = _RECORD_EVENT.search(data, i)
            if m is None:
                self._consume(data[i:])
                break
            j = m.start()
            if data[j] == _QUOTE:
                before = data[j - 1] if j > i else self._prev
                self._consume(data[i : j + 1])
                self._quoted = before in (_COMMA, _CR, _LF)
                i = j + 1
            else:
                self._consume(data[i:j])
                self._end_record(data[j])
                i = j + 1
        out = b"".join(self._out)
        self._out.clear()
        return out

    def finish(self) -> bytes:
        """The bytes still to keep at the end of the file (a last record without a line break)."""
        if self._size:
            self._end_record(None)
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _consume(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        if not self._too_long:
            if self._size <= self.limit or self._index < self.keep:
                self._record += self._normalised(data) if self.normalise else data
            else:
                self._too_long = True
                self._prefix = bytes(self._record[:RAW_PREFIX_BYTES])
                self._record = bytearray()  # let the memory go
        if self._too_long and len(self._prefix) < RAW_PREFIX_BYTES:
            self._prefix += data[: RAW_PREFIX_BYTES - len(self._prefix)]
        # Physical lines inside a quoted field: CR, LF and CRLF each end one.
        self._line += data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
        if self._prev == _CR and data[0] == _LF:
            self._line -= 1
        self._prev = data[-1]

    def _normalised(self, data: bytes) -> bytes:
        """Quoted line breaks as LF; called before `_prev` moves past data."""
        if self._prev == _CR and data[0] == _LF:
            data = data[1:]  # a CRLF split between pieces: its CR was written as LF
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def _end_record(self, line_break: int | None) -> None:
        kept = not self._too_long
        if self._index < self.keep:
            self.longest_kept = max(self.longest_kept, self._size)
        if kept:
            self._out.append(bytes(self._record))
            if line_break is not None:
                self._out.append(b"\n" if self.normalise else bytes((line_break,)))
        else:
            prefix = self._prefix.decode("utf-8", "ignore")  # a character cut in two goes
            self.cut.append(OversizedRecord(self._start_line, self._size, prefix))
        self._record, self._size, self._too_long, self._prefix = bytearray(), 0, False, b""
        self._index += 1
        if line_break is not None:
            self._line += 1
            self._prev = line_break
            self._after_cr = kept if line_break == _CR else None
        self._start_line = self._line


def _sanitise(lake: Lake, f: BronzeFile, scratch: str, *, keep_copy: bool = False) -> BronzeFile:
    """Copy the file without its records over the bound, every line break as LF, recording
    what was cut out.

    Returns the file unchanged when there is nothing to cut (a stray quote misled the fast
    check) unless `keep_copy` (its line breaks needed normalising), and rejected whole when
    its header (or a blank line before it) is that long: no engine could parse it.
    """
    target = f"{scratch}/{f.sha256[:16]}.csv"
    cutter = _RecordCutter(f.max_record_bytes, keep=f.skip_lines + 1, normalise=True)
    inflate = zlib.decompressobj(wbits=31) if f.compressed else None
    try:
        lake.makedirs(scratch)
        with lake.open(f.path) as raw, lake.open(target, "wb") as out:
            while chunk := raw.read(_CHUNK):
                for data in _plain(inflate, chunk):
                    out.write(cutter.feed(data))
            for data in _plain(inflate, b""):
                out.write(cutter.feed(data))
            out.write(cutter.finish())
    except OSError as exc:
        # The file read whole a moment ago: this is the lake (full, read-only, unreachable),
        # not the file, so the step fails and is retried rather than the file rejected.
        raise TransientError(f"cannot write {target} (a copy of {f.path}): {exc}") from exc
    if cutter.longest_kept > f.max_record_bytes:
        lake.remove(target)
        return _reject(f, f.sha256, FileRejection.UNREADABLE,
                       f"its header row is {cutter.longest_kept} bytes long, more than "
                       f"PURCHASES_MAX_RECORD_BYTES ({f.max_record_bytes})")
    if not cutter.cut and not keep_copy:
        lake.remove(target)
        return f
    return dataclasses.replace(
        f, sanitised_path=target, compressed=False, oversized=tuple(cutter.cut)
    )


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


def read_layout(lake: Lake, obj: BronzeObject, sha256: str) -> BronzeFile:
    """How to parse a file the pipeline has already inspected: its header only is read.

    For readers of processed files (the lake query's bronze view), whose bytes a run checked
    whole. A file that cannot be read now comes back with `rejection` set.
    """
    base = BronzeFile(obj.path, obj.ingestion_date, sha256, obj.path.lower().endswith(".gz"))
    try:
        return _read_header(lake, base, sha256)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:
        return _reject(base, sha256, FileRejection.UNREADABLE, f"cannot read it: {exc}")
