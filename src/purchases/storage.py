"""Lake paths and atomic publication, on local disk or any fsspec file system (s3:// etc.).

Every change this module makes to the lake goes through one edge (Lake._changing) that turns
the file system's OSError into the product's errors: a full disk, a read-only lake or a
refused permission is a PermanentError naming the lake and the path (retrying cannot help),
a dropped connection or a timeout a TransientError (the step retries), each chained to the
OSError. PURCHASES_IO_FAULT injects those OSErrors there for tests (faults.io_fault).

On S3 the endpoint, region and credentials are the standard AWS settings (AWS_ENDPOINT_URL,
AWS_REGION or AWS_DEFAULT_REGION, the credential chain), read by botocore under s3fs: no
product setting. A missing bucket, missing or refused credentials and a wrong region are
told once, when the Lake is opened (one HeadBucket), and on any later read or change
(lake_store_error), as one line naming the lake and the fix.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.registry import known_implementations

from purchases.contract import BRONZE_FILE_SUFFIXES
from purchases.errors import ConfigError, PermanentError, PurchasesError, TransientError
from purchases.faults import fault_point, io_fault
from purchases.masking import shown_url

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


# S3 error codes (botocore ClientError, kept by s3fs as the OSError's cause) by what to do.
_S3_WRONG_REGION = frozenset({
    "PermanentRedirect", "TemporaryRedirect", "Redirect", "301", "307",
    "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
})
_S3_BAD_CREDENTIALS = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException",
})
_S3_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
_S3_BUSY = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                      "OperationAborted", "500", "502", "503", "504"})
_CREDENTIALS_FIX = ("set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run "
                    "with an IAM role")


def _client_error(exc: BaseException) -> Any:
    """The botocore ClientError behind exc (s3fs raises an OSError caused by it), or None."""
    for candidate in (exc, exc.__cause__):
        if candidate is not None and hasattr(candidate, "response") and isinstance(
            getattr(candidate, "response", None), dict
        ):
            return candidate
    return None


def _configured_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "none set"


def lake_store_error(exc: BaseException, uri: str, doing: str) -> PurchasesError | None:
    """The product's error for an object store's refusal met `doing` something in the lake
    at `uri`, or None when exc is not one (a plain missing key stays FileNotFoundError, an
    existing key met by an exclusive create FileExistsError: callers act on those).

    Covers what botocore raises under s3fs: no credentials, refused credentials, a wrong or
    malformed region, a missing bucket, access denied (permanent, the message says which
    setting to fix) and an unreachable or overloaded endpoint (transient).
    """
    try:
        from botocore import exceptions as boto
    except ImportError:  # no S3 support installed: nothing of botocore's can arrive here
        return None
    bucket = uri.split("://", 1)[-1].split("/", 1)[0]
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError |
                  boto.CredentialRetrievalError | boto.TokenRetrievalError):
        return ConfigError(f"lake {uri}: no usable AWS credentials ({exc}): {_CREDENTIALS_FIX}")
    if isinstance(exc, boto.ProfileNotFound):
        return ConfigError(f"lake {uri}: {exc}: fix AWS_PROFILE (or unset it)")
    if isinstance(exc, boto.NoRegionError | boto.InvalidRegionError):
        return ConfigError(f"lake {uri}: {exc}: set AWS_REGION to the bucket's region, "
                           "e.g. AWS_REGION=ap-southeast-2")
    if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
        return TransientError(f"lake {uri}: cannot reach {endpoint} ({doing}): {exc}; check "
                              "the network or AWS_ENDPOINT_URL and run again")
    error = _client_error(exc)
    if error is None:
        return None
    detail = error.response.get("Error") or {}
    code = str(detail.get("Code") or "")
    headers = (error.response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    if code == "NoSuchBucket":
        return ConfigError(f"lake {uri}: bucket {bucket} does not exist ({doing}): create it "
                           "(aws s3 mb s3://" + bucket + ") or fix the bucket in PURCHASES_LAKE")
    if code in _S3_WRONG_REGION:
        region = headers.get("x-amz-bucket-region") or detail.get("Region")
        where = f"is in {region}" if region else "is in another region"
        return ConfigError(
            f"lake {uri}: bucket {bucket} {where}, not the configured region "
            f"{_configured_region()} ({doing}): set AWS_REGION (and AWS_DEFAULT_REGION) to "
            f"{region or 'the bucket region'}"
        )
    if code in _S3_BAD_CREDENTIALS:
        return ConfigError(f"lake {uri}: S3 refused the AWS credentials ({code}, {doing}): "
                           f"{_CREDENTIALS_FIX} that are valid for this account")
    if code in _S3_DENIED:
        return PermanentError(f"lake {uri}: access denied ({code}, {doing}): allow these AWS "
                              f"credentials s3:ListBucket, GetObject, PutObject and "
                              f"DeleteObject on s3://{bucket}, or use others")
    if code in _S3_BUSY:
        return TransientError(f"lake {uri}: S3 is busy or failing ({code}, {doing}); run again")
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
    if not parsed or not is_bronze_data_file(parsed[1]) or info.get("type") == "other":
        # "other": a FIFO, socket or device put in the lake by hand (ingest lands regular
        # files only); opening a FIFO would hang every run and query.
        return None
    size = int(info.get("size") or 0)
    stamp = info.get("mtime") or info.get("ETag") or info.get("LastModified") or ""
    return BronzeObject(rel, parsed[0], size, f"{size}:{stamp}")


def not_a_folder(path: str | os.PathLike[str], *, missing: str = "does not exist") -> str | None:
    """Why `path` is not a folder (`missing`, or "is a file, not a folder"), or None."""
    if os.path.isdir(path):
        return None
    return "is a file, not a folder" if os.path.exists(path) else missing


def file_in_the_way(path: Path) -> Path | None:
    """The file standing where `path` or one of its folders should be (None: no such file);
    mkdir would say only "File exists"."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


_LAKE_HINT = "a lake (--lake, PURCHASES_LAKE) is a local folder or s3://bucket/prefix"
# `s3:/x`, `file:`, `memory:x`: a scheme fsspec knows without its two slashes (fsspec takes
# some for a local folder named "s3:", others for the current folder). Not a drive letter.
_NO_TWO_SLASHES = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):(?P<slash>/?)(?!/)")


def lake_url_problem(uri: str) -> str | None:
    """Why a lake URL names no lasting, writable place (None when it may): checked before
    fsspec reads it, which takes `file://` for the current folder and `s3:/x` for a local
    folder named `s3:`."""
    bad = _NO_TWO_SLASHES.match(uri)
    if bad and bad["scheme"].lower() in known_implementations:
        slashes = "one slash" if bad["slash"] else "no slashes"
        return f"looks like a URL with {slashes} after the scheme (s3://bucket/prefix has two)"
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return None
    scheme = scheme.lower()
    authority = rest.split("/", 1)[0]
    if scheme in ("file", "local") and authority:
        # fsspec reads file://localhost/p and file://p as the relative path localhost/p, p
        return f"names a host or a relative path: give {scheme}:///absolute/path, or the path"
    if "@" in authority:
        return ("carries credentials (user:password@): give them the store's own way, for S3 "
                "the AWS environment variables, a profile or a role")
    if "?" in rest or "#" in rest:
        return "has a query or fragment (?, #), which a lake URL never needs"
    if scheme not in ("file", "local") and ("*" in rest or "[" in rest):
        # fsspec's object stores expand patterns when they copy and move: a run's outputs
        # under lake[1]/ were never found (a local folder's name is taken as written)
        return "holds * or [, which the store's client reads as a pattern: rename the prefix"
    if scheme in ("s3", "s3a") and not authority:
        return "names no bucket: give s3://bucket/prefix"
    if not rest.strip("/"):
        return "names no place after the scheme"
    if scheme == "memory":
        return "is in this process's memory: nothing would be kept between commands"
    if scheme in ("http", "https"):
        return "is read-only over HTTP(S): a lake is written to"
    return None


def day_parts(day: date) -> dict[str, str]:
    """`day` as the year, month and day of a partition path or a run's input: always four,
    two and two digits (strftime's %Y writes year 999 as "999", a path no listing matches)."""
    year, month, dom = day.isoformat().split("-")
    return {"year": year, "month": month, "day": dom}


def day_folders(day: date) -> str:
    """year=YYYY/month=MM/day=DD."""
    return "/".join(f"{k}={v}" for k, v in day_parts(day).items())


class Lake:
    """The lake rooted at a URI; every path handed around is relative to that root."""

    def __init__(
        self, uri: str, storage_options: dict[str, Any] | None = None, *, create: bool = True
    ) -> None:
        """With `create` False (a command that only reads), a local lake folder that does not
        exist is a ConfigError naming it, instead of being created empty."""
        problem = lake_url_problem(uri)
        if problem:  # shown masked: the URL may be refused for the secret it carries
            raise ConfigError(f"lake {shown_url(uri)} {problem}; {_LAKE_HINT}")
        self.uri = uri.rstrip("/")
        options = dict(storage_options or {})
        self.is_s3 = self.uri.split("://", 1)[0].lower() in ("s3", "s3a")
        if self.is_s3 and os.environ.get("AWS_REGION"):
            # botocore reads AWS_DEFAULT_REGION only; AWS_REGION (what Lambda, Glue and the
            # other AWS SDKs set) wins, as it does there.
            client = dict(options.get("client_kwargs") or {})
            client.setdefault("region_name", os.environ["AWS_REGION"])
            options["client_kwargs"] = client
        # No listings cache: other writers (other processes, other machines) change the lake
        # under us, and a cached listing would hide a commit record they just created (this
        # process would then plan a batch id that is taken, again and again).
        options.setdefault("use_listings_cache", False)
        try:
            self.fs, root = url_to_fs(self.uri, **options)
        except (ImportError, ValueError) as exc:  # a scheme fsspec has no (installed) store for
            raise ConfigError(f"lake {self.uri}: {exc}; {_LAKE_HINT} (or another fsspec URL "
                              "whose package is installed)") from None
        except OSError as exc:  # a store that connects at once (ftp://) and cannot
            raise ConfigError(f"lake {self.uri}: cannot open it: {exc.strerror or exc}") from None
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)
        absent = None
        if self.is_local and not create:
            absent = not_a_folder(self.root, missing="does not exist: nothing was ingested there")
        if absent:
            raise ConfigError(f"lake {self.uri} {absent} (check --home / PURCHASES_HOME, or "
                              "--lake / PURCHASES_LAKE)")
        if self.is_local:
            self._makedirs("")
        elif self.is_s3:
            self._check_bucket()

    def _check_bucket(self) -> None:
        """Fail now, in one line, when the bucket is missing or cannot be used with these
        credentials and this region: a listing of a missing bucket would look empty, and a
        write would be refused only once a run had done its work."""
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:  # HeadBucket has no body: 404 is all S3 says
            raise ConfigError(
                f"lake {self.uri}: bucket {bucket} does not exist: create it (aws s3 mb "
                f"s3://{bucket}) or fix the bucket in PURCHASES_LAKE"
            ) from None
        except Exception as exc:
            translated = lake_store_error(exc, self.uri, "opening the lake")
            if translated is None:
                raise
            raise translated from exc

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
        return "bronze/" + day_folders(day)

    @staticmethod
    def gold_dir(day: date) -> str:
        return "gold/" + day_folders(day)

    # --- reading -------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        with self._reading(rel):
            return self.fs.exists(self.full(rel))

    def list_files(self, rel: str) -> list[str]:
        """Lake-relative paths of every file below rel (empty when rel does not exist)."""
        base = self.full(rel)
        try:
            with self._reading(rel):
                found = self.fs.find(base)
        except FileNotFoundError:  # emptied in between: on S3 a folder ends with its last key
            return []
        prefix = self.root + "/"
        return sorted(p[len(prefix) :] for p in found if p.startswith(prefix))

    def list_children(self, rel: str) -> list[str]:
        """Names of the entries (files or folders) directly below rel, sorted; hidden ones
        (in-flight temporaries) left out."""
        base = self.full(rel)
        try:
            with self._reading(rel):
                listed = self.fs.ls(base, detail=False)
        except FileNotFoundError:  # emptied in between (another run published its last move)
            return []
        names = (posixpath.basename(p.rstrip("/")) for p in listed)
        return sorted(n for n in names if n and not n.startswith("."))

    def list_bronze(self) -> list[BronzeObject]:
        """Every landed bronze data file, in (ingestion date, path) order."""
        found = []
        base = self.full("bronze")
        try:
            with self._reading("bronze"):
                listed = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        prefix = self.root + "/"
        for full, info in listed.items():
            obj = _bronze_object(full[len(prefix) :], info)
            if obj is not None:
                found.append(obj)
        return sorted(found, key=lambda o: (o.ingestion_date, o.path))

    def bronze_object(self, rel: str) -> BronzeObject | None:
        """The landed bronze data file at rel, or None when there is none (one stat, no list)."""
        try:
            with self._reading(rel):
                info = self.fs.info(self.full(rel))
        except FileNotFoundError:
            return None
        return _bronze_object(rel, info) if info.get("type") != "directory" else None

    def open(self, rel: str, mode: str = "rb") -> Any:
        with self._reading(rel):
            return self.fs.open(self.full(rel), mode)

    def read_json(self, rel: str) -> Any:
        # One whole-object GET: a file handle on S3 checks the ETag it first saw on every
        # read, so a record another run replaces meanwhile (a run record, a marker) would
        # fail the read with FileExpired instead of giving the old or the new version.
        with self._reading(rel):
            return json.loads(self.fs.cat_file(self.full(rel)))

    def read_json_if_exists(self, rel: str) -> Any | None:
        """read_json, or None when there is no such file, without an exists() first: on S3
        that saves a HEAD per record read (s3fs's read makes its own)."""
        try:
            return self.read_json(rel)
        except FileNotFoundError:
            return None

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
        except Exception as exc:
            translated = lake_store_error(exc, self.uri, f"{_DOING.get(op, op)} {rel or '.'}")
            if translated is None and isinstance(exc, OSError):
                translated = lake_write_error(exc, self.uri, op, rel)
            if translated is None:
                raise
            raise translated from exc

    @contextmanager
    def _reading(self, rel: str) -> Iterator[None]:
        """The edge reads pass: an object store's refusal (credentials, region, endpoint)
        becomes the product's error; a missing file stays FileNotFoundError."""
        try:
            yield
        except Exception as exc:
            translated = lake_store_error(exc, self.uri, f"reading {rel or '.'}")
            if translated is None:
                raise
            raise translated from exc

    def _makedirs(self, rel: str) -> None:
        full = self.full(rel)
        if self.is_local and self.fs.isdir(full):
            return  # nothing to change (and a read-only file system allows that much)
        if self.is_s3:
            return  # S3 has no folders; and s3fs's makedirs would create a missing bucket
        with self._changing("mkdir", rel):
            self.fs.makedirs(full, exist_ok=True)

    def _tmp_sibling(self, rel: str) -> str:
        head, tail = posixpath.split(rel)
        return posixpath.join(head, f".{tail}.{uuid.uuid4().hex}.tmp")

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole object so that readers see either nothing or all of it."""
        if not self.is_local:
            # One PUT is atomic on an object store, where a temporary object and a move would
            # cost a copy, a delete and the lookups around them; dying in the middle of a
            # PUT is dying before it.
            fault_point("mid_atomic_write")
            with self._changing("write", rel):
                self.fs.pipe_file(self.full(rel), data)
            return
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

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create `rel` holding `data` unless it exists; True when this call created it.

        Exactly one of any number of writers racing on one path wins, on any machine: on
        local disk the bytes go to a temporary file that is hard-linked to the name (a link
        is atomic and fails if the name exists); on S3 one PutObject with `If-None-Match: *`
        (S3 rejects it with 412 once the key exists). Readers never see a half-written file.
        """
        self._makedirs(posixpath.dirname(rel))
        if not self.is_local:
            try:
                with self._changing("write", rel):
                    self.fs.pipe_file(self.full(rel), data, mode="create")
            except FileExistsError:
                return False
            return True
        tmp = self._tmp_sibling(rel)
        try:
            with self._changing("write", rel), self.fs.open(self.full(tmp), "wb") as fh:
                fh.write(data)
            fault_point("mid_atomic_write")
            with self._changing("move", rel):
                os.link(self.full(tmp), self.full(rel))
        except FileExistsError:
            return False
        finally:
            self._discard(tmp)
        return True

    def write_json(self, rel: str, payload: Any) -> None:
        self.write_bytes(rel, json.dumps(payload, indent=1, sort_keys=True, default=str).encode())

    def put_file(self, local_path: str, rel: str) -> None:
        """Copy a local file into the lake atomically: a half-copied file is never visible."""
        if not self.is_local:  # atomic as it is (see write_bytes); a multipart upload too
            with self._changing("write", rel):
                self.fs.put_file(local_path, self.full(rel))
            return
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
        try:
            with self._changing("move", dst_rel):
                self.fs.mv(src, dst)
        except FileNotFoundError:
            # Another process finishing the same publication moved it first.
            if not self.fs.exists(dst):
                raise

    def remove(self, rel: str) -> None:
        full = self.full(rel)
        if self.fs.exists(full):
            with self._changing("remove", rel):
                self.fs.rm(full, recursive=True)

    def _discard(self, rel: str) -> None:
        # Best effort: the error being reported matters more than a hidden temporary file
        # (on an unreachable store botocore's own errors arrive here too: keep the first).
        with suppress(Exception):
            self.remove(rel)

    def makedirs(self, rel: str) -> None:
        self._makedirs(rel)
