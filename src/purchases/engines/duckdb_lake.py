"""SQL over the lake for people (`purchases query`, `purchases rejects`), run by DuckDB.

The embedded stand-in for Athena. Views show what the commit log publishes, never what a
folder happens to hold: a file being moved into place, or left by a run that never committed,
is not read, and an output of a committed batch not moved yet is read where it is. A view is
built only when the query names it, so a query of `silver` opens no bronze file, and a bronze
file that cannot be read is left out of `bronze` and shown as such in `bronze_files` instead
of failing the query. The query itself is one read-only statement; once the views exist,
DuckDB may open no file but theirs (`enable_external_access=false` with `allowed_paths`), so
`read_text('/etc/shadow')` or `COPY ... TO` is refused.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import duckdb

from purchases import bronze, commit_log
from purchases.contract import (
    CUSTOMER_STATE_COLUMNS,
    GOLD_COLUMNS,
    INPUT_COLUMNS,
    QUARANTINE_COLUMNS,
    SILVER_COLUMNS,
)
from purchases.engines.duckdb_engine import (
    DuckDBEngine,
    _lit,
    _path_lit,
    _translate,
    glob_literal,
    readable_by_name,
)
from purchases.errors import InputError, PermanentError

if TYPE_CHECKING:
    from collections.abc import Callable

    from purchases.bronze import BronzeFile
    from purchases.commit_log import Commit
    from purchases.storage import Lake

log = logging.getLogger(__name__)

BRONZE_VIEWS = ("bronze", "bronze_files")
VIEWS = ("silver", "quarantine", "gold", "customers", *BRONZE_VIEWS)

BRONZE_FILES_COLUMNS: dict[str, str] = {
    "path": "VARCHAR",  # lake-relative, as `source_file` in silver and quarantine
    "ingestion_date": "DATE",
    "size_bytes": "BIGINT",
    "status": "VARCHAR",  # processed | pending | rejected (from the commit log)
    "batch_id": "BIGINT",  # the batch that processed or rejected it
    "file_rejection": "VARCHAR",
    "detail": "VARCHAR",
    # false: rejected whole, or it cannot be read (read_error) by this query's bronze view
    "in_bronze_view": "BOOLEAN",
    "read_error": "VARCHAR",
    "url": "VARCHAR",
}
BRONZE_COLUMNS: dict[str, str] = {
    "source_file": "VARCHAR",
    "ingestion_date": "DATE",
    **{c: "VARCHAR" for c in INPUT_COLUMNS},
}
GOLD_VIEW_COLUMNS: dict[str, str] = {
    **GOLD_COLUMNS,
    # From the folder names gold/year=/month=/day=/ (the batch's ingestion day).
    "year": "BIGINT",
    "month": "BIGINT",
    "day": "BIGINT",
}

# Statement types that only read. A SELECT also covers WITH, VALUES, TABLE, FROM-first,
# DESCRIBE, SHOW and SUMMARIZE (DuckDB parses those into a SELECT).
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_NAMES = {
    duckdb.StatementType.LOAD: "INSTALL/LOAD",
    duckdb.StatementType.SET: "SET/RESET/USE",
    duckdb.StatementType.CALL: "CALL/CHECKPOINT",
    duckdb.StatementType.TRANSACTION: "BEGIN/COMMIT/ROLLBACK",
}
_MAX_SKIPPED = 20  # bronze files left out at query time before giving up
_MAX_EXPLAIN_TOKENS = 64  # EXPLAIN and its options come first
_MAX_ERROR = 300  # characters of a DuckDB message shown (a CSV error can quote a huge line)


@dataclass
class _LandedFile:
    """A row of `bronze_files`; `layout` is how to parse it, None when the view skips it."""

    path: str
    url: str
    ingestion_date: date
    size: int
    status: str
    batch_id: int | None = None
    file_rejection: str | None = None
    detail: str = ""
    layout: BronzeFile | None = None
    read_error: str | None = None

    def row(self) -> tuple[Any, ...]:
        return (
            self.path,
            self.ingestion_date,
            self.size,
            self.status,
            self.batch_id,
            self.file_rejection,
            self.detail or None,
            self.layout is not None,
            self.read_error,
            self.url,
        )


class _BronzeFileFailed(Exception):
    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


class _ViewMissing(Exception):
    pass


class _PublicationMoved(Exception):
    """A staged output of an interrupted publication was moved into place meanwhile."""


def lake_query(lake: Lake, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run one read-only SQL statement over the lake's views and return its rows (as dicts,
    column name -> value); `query_result` says what the views are and what is raised."""
    with query_result(lake, sql, params, fetch_all=True) as result:
        return [dict(zip(result.columns, row, strict=True))
                for batch in result.batches() for row in batch]


@dataclass
class QueryResult:
    """An executed query: its column names, and its rows fetched a batch at a time."""

    columns: list[str]
    _fetch: Callable[[int], list[tuple[Any, ...]]]

    def batches(self, size: int = 10_000) -> Iterator[list[tuple[Any, ...]]]:
        while batch := self._fetch(size):
            yield batch


@contextmanager
def query_result(
    lake: Lake, sql: str, params: list[Any] | None = None, *, memory_limit: str = "1GB",
    fetch_all: bool = False,
) -> Iterator[QueryResult]:
    """Run one read-only SQL statement over the lake's views; its rows are read from the
    result while the context is open, never all held in Python at once (unless `fetch_all`:
    then every error, a bronze file failing included, is met before the first row, and a
    file that failed is left out and the query run again).

    Views: `silver`, `quarantine`, `gold` (every published change set, with year/month/day)
    and `customers` (current per-customer state), each reading only the files the commit log
    publishes; `bronze` (the input columns as text, parsed as the pipeline parses them, of
    every bronze file not rejected whole: processed and pending ones) and `bronze_files`
    (every landed file: status processed/pending/rejected, the rejection, whether `bronze`
    read it and why not).

    Args:
        lake: the lake to read.
        sql: one SELECT (or WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); `?` marks
            take `params`.
        params: values bound to the statement's `?` marks.
        memory_limit: DuckDB's memory limit; beyond it the query spills to a private folder.
        fetch_all: fetch every row before the first is given.

    Raises:
        InputError: no SQL, more than one statement, a statement that is not read-only, a
            file outside the views, or an error in the SQL.
        TransientError, PermanentError: a file the commit log publishes cannot be read.
    """
    read_only_statement(sql)
    named = _views_named(sql)
    commits = commit_log.load_commits(lake)
    landed: list[_LandedFile] | None = None
    for _ in range(_MAX_SKIPPED + 1):
        if landed is None and named & set(BRONZE_VIEWS):
            landed = _landed_files(lake, commits)
        stack = ExitStack()
        try:
            result = stack.enter_context(_executed(
                lake, commits, landed or [], named, sql, params or [], memory_limit, fetch_all))
        except _ViewMissing:
            named = set(VIEWS)  # named in a way the tokens did not show: build them all
            continue
        except _PublicationMoved:
            continue  # look again where each output is
        except _BronzeFileFailed as exc:
            for f in landed or []:
                if f.url == exc.url:
                    f.layout, f.read_error = None, f"cannot read it now: {exc}"
            continue
        with stack:
            if "bronze" in named:
                for f in landed or []:
                    if f.read_error:
                        log.warning("bronze view leaves out %s: %s", f.path, f.read_error)
            yield result
        return
    raise PermanentError(
        # Bandit B608: a hint in an error message, never run
        f"more than {_MAX_SKIPPED} bronze files cannot be read; see `purchases query "
        '"SELECT path, read_error FROM bronze_files WHERE read_error IS NOT NULL"`'  # nosec B608
    )


def holds_no_statement(sql: str) -> bool:
    """Whether sql is only blanks, comments and semicolons (a syntax error is a statement:
    running it says what is wrong)."""
    try:
        return not _parse(sql)
    except duckdb.Error:
        return False


def read_only_statement(sql: str) -> duckdb.Statement:
    """The one read-only statement in sql, as DuckDB's parser sees it.

    Raises:
        InputError: no statement, several, a syntax error, or one that is not read-only.
    """
    try:
        statements = _parse(sql)
    except duckdb.Error as exc:
        raise InputError(f"SQL error: {_first_line(exc)}") from exc
    if not statements:
        raise InputError("no SQL given: pass one SELECT over the views " + ", ".join(VIEWS))
    if len(statements) > 1:
        raise InputError(
            f"one SQL statement at a time, got {len(statements)}: `purchases query` runs a "
            "single read-only SELECT"
        )
    statement = statements[0]
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs the statement it explains.
        inner = _explained(statement.query)
        if inner is None or inner.type != duckdb.StatementType.SELECT:
            raise InputError(
                "EXPLAIN of a statement that is not a SELECT is not allowed: "
                "`purchases query` is read-only"
            )
    if kind == duckdb.StatementType.MULTI and _first_word(statement.query) in _QUERY_WORDS:
        # DuckDB runs a PIVOT without an IN list as CREATE TYPE (an enum of the values, in
        # this throw-away in-memory catalog) then the SELECT: still a read of the views. A
        # MULTI opening with any other word (CREATE TABLE x AS PIVOT ...) is refused below.
        return statement
    if kind not in _READ_ONLY:
        name = _NAMES.get(kind, kind.name)
        if kind == duckdb.StatementType.MULTI:  # name what it is, not how DuckDB splits it
            name = _first_word(statement.query).upper()
        raise InputError(
            f"{name} is not allowed: `purchases query` runs one read-only SELECT "
            "(or WITH, VALUES, DESCRIBE, SHOW, EXPLAIN) over the lake's views"
        )
    return statement


_QUERY_WORDS = {"pivot", "select", "with", "from", "("}


def _first_word(text: str) -> str:
    tokens = _tokens(text)
    return tokens[0][2].lower() if tokens else ""


def _explained(text: str) -> duckdb.Statement | None:
    """The statement an EXPLAIN shows: the first tail of it, past EXPLAIN and its options
    (`ANALYZE`, `(ANALYZE, FORMAT json)`), that parses as one statement."""
    for start, _, _ in _tokens(text)[1:_MAX_EXPLAIN_TOKENS]:
        try:
            statements = _parse(text[start:])
        except duckdb.Error:
            continue
        if len(statements) == 1:
            return statements[0]
    return None


def _views_named(sql: str) -> set[str]:
    """The lake views the statement names as identifiers; all of them when it names none
    (SHOW TABLES, or a name inside a string such as query_table('silver'))."""
    named = {
        word.strip('"').lower()
        for _, kind, word in _tokens(sql)
        if kind == duckdb.token_type.identifier
    } & set(VIEWS)
    return named or set(VIEWS)


def _tokens(text: str) -> list[tuple[int, duckdb.token_type, str]]:
    """(offset, kind, text) of each token DuckDB's tokenizer finds, comments left out."""
    tokens = duckdb.tokenize(text)
    ends = [start for start, _ in tokens[1:]] + [len(text)]
    return [
        (start, kind, text[start:end].strip())
        for (start, kind), end in zip(tokens, ends, strict=True)
        if kind != duckdb.token_type.comment
    ]


def _parse(sql: str) -> list[duckdb.Statement]:
    with duckdb.connect(":memory:") as con:
        return con.extract_statements(sql)


@contextmanager
def _executed(
    lake: Lake,
    commits: list[Commit],
    landed: list[_LandedFile],
    named: set[str],
    sql: str,
    params: list[Any],
    memory_limit: str,
    fetch_all: bool,
) -> Iterator[QueryResult]:
    # A private spill folder: DuckDB lets a query read its temp directory even with external
    # access off, and the shared /tmp must stay out of reach.
    spill = tempfile.mkdtemp(prefix="purchases-query-")
    engine = DuckDBEngine(lake, memory_limit=memory_limit, temp_directory=spill)
    try:
        allowed, staged = _create_views(engine, lake, commits, landed, named)
        con = engine.con
        # Order matters: the views are bound (and the lake's fsspec file system registered)
        # first; from here on no file outside `allowed` opens and no setting changes. The
        # readers check the escaped pattern they were given as well as the file it names.
        con.execute("SET allowed_paths = ?", [sorted(allowed | {glob_literal(u) for u in allowed})])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            cursor = con.execute(sql, params)
            rows = cursor.fetchall() if fetch_all else None
        except duckdb.Error as exc:
            raise _query_error(exc, landed, named, staged) from exc

        def fetch(size: int) -> list[tuple[Any, ...]]:
            if rows is not None:
                batch = rows[:size]
                del rows[:size]
                return batch
            try:  # DuckDB computes later rows as they are fetched: errors come here too
                return cursor.fetchmany(size)
            except duckdb.Error as exc:
                raise _mid_result(_query_error(exc, landed, named, staged)) from exc

        yield QueryResult([d[0] for d in cursor.description or []], fetch)
    finally:
        engine.close()
        shutil.rmtree(spill, ignore_errors=True)


def _query_error(
    exc: duckdb.Error, landed: list[_LandedFile], named: set[str], staged: set[str]
) -> Exception:
    message = str(exc)
    if isinstance(exc, duckdb.IOException) and any(u in message for u in staged):
        return _PublicationMoved()
    if "bronze" in named and isinstance(
        exc, duckdb.IOException | duckdb.InvalidInputException | duckdb.HTTPException
    ):
        # A file the view reads failed (gone, or changed in place since listing). The
        # longest URL the message names (a.csv is a prefix of a.csv.gz).
        failed = [f.url for f in landed if f.layout is not None and f.url in message]
        if failed:
            return _BronzeFileFailed(max(failed, key=len), _first_line(exc))
    if isinstance(exc, duckdb.CatalogException) and named != set(VIEWS):
        return _ViewMissing()
    if isinstance(exc, duckdb.PermissionException):
        return InputError(
            f"`purchases query` reads only the lake's views ({', '.join(VIEWS)}): "
            f"{_first_line(exc)}"
        )
    if isinstance(exc, duckdb.IOException | duckdb.HTTPException | duckdb.OutOfMemoryException):
        return _translate(exc)
    return InputError(f"SQL error: {_first_line(exc)}")


def _mid_result(error: Exception) -> Exception:
    """What a user is told of an error met after rows were given out (no retry then)."""
    if isinstance(error, _BronzeFileFailed):
        return InputError(f"a bronze file failed while the query read it ({error}): run it "
                          "again, and it is left out if it still fails")
    if isinstance(error, _PublicationMoved | _ViewMissing):
        return InputError("the lake changed while the query read it: run it again")
    return error


def _first_line(exc: BaseException) -> str:
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line if len(line) <= _MAX_ERROR else line[:_MAX_ERROR] + "..."


# --- views ---------------------------------------------------------------------------------


def _create_views(
    engine: DuckDBEngine,
    lake: Lake,
    commits: list[Commit],
    landed: list[_LandedFile],
    named: set[str],
) -> tuple[set[str], set[str]]:
    """Create the named views. Returns the URLs they read (all the query may open) and those
    of them still in staging."""
    allowed: set[str] = set()
    moving = _unmoved_outputs(lake, commits)

    def urls(paths: list[str]) -> list[str]:
        found = [lake.url(moving.get(p, p)) for p in paths]
        allowed.update(found)
        return found

    for layer, columns in (("silver", SILVER_COLUMNS), ("quarantine", QUARANTINE_COLUMNS)):
        if layer in named:
            published = commit_log.published_files(commits, layer)
            engine.register_parquet(layer, urls(published), columns)
    if "customers" in named:
        engine.register_parquet(
            "customers", urls(commit_log.customer_state_files(commits)), CUSTOMER_STATE_COLUMNS
        )
    if "gold" in named:
        engine.create_view("gold", _gold_sql(commit_log.published_files(commits, "gold"), urls))
    if named & set(BRONZE_VIEWS):
        engine.register_rows("bronze_files", BRONZE_FILES_COLUMNS, [f.row() for f in landed])
        readable = [f for f in landed if f.layout is not None]
        allowed.update(f.url for f in readable)
        engine.create_view("bronze", _bronze_sql(readable))
    return allowed, {lake.url(src) for src in moving.values()}


def _unmoved_outputs(lake: Lake, commits: list[Commit]) -> dict[str, str]:
    """Published path -> staged path of the outputs a committed batch has not moved yet.

    A run killed after its commit record leaves them in staging until the next run finishes
    the publication (commit_log.recover); meanwhile a query reads them there. Only batches
    whose staging folder still exists are looked at: one listing, whatever the history.
    """
    staging = set(lake.list_children(commit_log.RUNS_STAGING_DIR))
    return {
        dst: src for c in commits if c.run_id in staging for src, dst in c.moves if lake.exists(src)
    }


def _gold_sql(paths: list[str], urls: Callable[[list[str]], list[str]]) -> str:
    """Every published gold file, with year/month/day of the folder it is published in
    (taken from that path, so a file still in staging gets them too)."""
    if not paths:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in GOLD_VIEW_COLUMNS.items())
        return f"SELECT {cols} WHERE false"
    found = urls(paths)
    days = []
    for path, url in zip(paths, found, strict=True):
        part = dict(p.split("=", 1) for p in path.split("/") if "=" in p)
        days.append(f"({_lit(url)}, {int(part['year'])}, {int(part['month'])}, {int(part['day'])})")
    listing = "[" + ", ".join(_path_lit(u) for u in found) + "]"
    cols = ", ".join(f"g.{c}" for c in GOLD_COLUMNS)
    days_cols = ", ".join(f"CAST(p.{c} AS BIGINT) AS {c}" for c in ("year", "month", "day"))
    # Bandit B608: urls quoted by _lit, numbers from int(), columns are contract constants
    return (
        f"SELECT {cols}, {days_cols} "  # nosec B608
        f"FROM read_parquet({listing}, filename=true) AS g "
        f"JOIN (VALUES {', '.join(days)}) AS p(url, year, month, day) ON g.filename = p.url"
    )


def _bronze_sql(files: list[_LandedFile]) -> str:
    """The bronze view: every readable file's records, columns picked by its own header.

    Files with the same layout share one read_csv; each record is tied back to its file by
    the URL read_csv reports, so `source_file` is the lake path silver and quarantine use.
    """
    if not files:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in BRONZE_COLUMNS.items())
        return f"SELECT {cols} WHERE false"
    groups: dict[tuple[Any, ...], list[_LandedFile]] = {}
    for f in files:
        assert f.layout is not None
        layout = f.layout
        key = (
            layout.column_count,
            tuple(layout.positions[c] for c in INPUT_COLUMNS),
            layout.skip_lines,
            layout.compressed,
        )
        groups.setdefault(key, []).append(f)
    scans = []
    for group in groups.values():
        layout = group[0].layout
        assert layout is not None
        listing = "[" + ", ".join(_path_lit(f.url) for f in group) + "]"
        picked = ", ".join(f"c{layout.positions[c]} AS {c}" for c in INPUT_COLUMNS)
        scans.append(
            f"SELECT filename AS url, {picked} FROM read_csv({listing}, {_csv_options(layout)})"  # nosec B608  # urls via _lit
        )
    inputs = ", ".join(f"r.{c}" for c in INPUT_COLUMNS)
    return (
        # Bandit B608: urls quoted by _lit, columns are contract constants
        f"SELECT f.path AS source_file, f.ingestion_date, {inputs} "  # nosec B608
        f"FROM ({' UNION ALL '.join(scans)}) AS r JOIN bronze_files AS f ON f.url = r.url"
    )


def _csv_options(layout: BronzeFile) -> str:
    """The pipeline's CSV settings (DuckDBEngine._load_csv), except that a record the parser
    rejects is left out here (the run quarantines it as malformed_row / record_too_large)."""
    columns = "{" + ", ".join(f"'c{k}': 'VARCHAR'" for k in range(layout.column_count)) + "}"
    return (
        "auto_detect=false, header=true, delim=',', quote='\"', escape='\"', "
        f"skip={layout.skip_lines}, columns={columns}, strict_mode=true, "
        "ignore_errors=true, filename=true, "
        f"compression='{'gzip' if layout.compressed else 'none'}'"
    )


def _landed_files(lake: Lake, commits: list[Commit]) -> list[_LandedFile]:
    """Every landed bronze file with its commit-log status and how to parse it (if at all)."""
    from purchases.steps import pending_files  # the one definition of "pending"

    pending = {o.path for o in pending_files(lake, commits)}
    latest: dict[str, tuple[int, commit_log.FileOutcome]] = {}
    for c in commits:
        for outcome in c.files:
            latest[outcome.path] = (c.batch_id, outcome)
    found = []
    for obj in lake.list_bronze():
        entry = _LandedFile(obj.path, lake.url(obj.path), obj.ingestion_date, obj.size, "pending")
        done = latest.get(obj.path)
        if obj.path in pending or done is None:
            # Not run yet: checked whole, as the run will check it. No record bound and no
            # copy: a run writes a copy without over-long records or mixed line breaks, a
            # read-only query must write nothing (the view's parser leaves such a record
            # out itself; a file DuckDB cannot parse at all is left out as read_error).
            layout = bronze.inspect(lake, obj, max_record_bytes=sys.maxsize, sanitise=False)
        else:
            entry.batch_id, outcome = done
            if outcome.file_rejection:
                entry.status, entry.file_rejection = "rejected", outcome.file_rejection
                entry.detail = outcome.detail
                found.append(entry)
                continue
            entry.status = "processed"
            # The run read these bytes whole already; only the header is needed again.
            layout = bronze.read_layout(lake, obj, outcome.sha256)
        if layout.rejection is not None:
            entry.read_error = f"{layout.rejection}: {layout.detail}"
        elif not readable_by_name(entry.url):
            entry.read_error = ("its name holds a backslash, which DuckDB cannot read in a path "
                                "with * ? or [ (a run reads it from a copy)")
        else:
            entry.layout = layout
        found.append(entry)
    return found
