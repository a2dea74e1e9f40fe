"""`purchases aws package`: everything the CloudFormation template deploys, in one folder.

    purchases-<version>-py3-none-any.whl   the project; Glue 5.0 installs it
                                           (--additional-python-modules)
    glue_job.py                            every Glue job's script (aws/glue_script.py)
    lambda.zip                             the four handlers, for python3.12 on x86_64
    statemachine.asl.json                  the rendered definition (aws/asl.py)
    manifest.json                          {"version", "wheel", "files": {name: sha256}}

The wheel is built with `pip wheel --no-deps` from a clean copy of the source (pip is in every
venv, `build` is not; the copy keeps a stale `build/` folder out of the wheel and the working
tree free of build litter). `lambda.zip` holds the `lambda` extra of pyproject.toml installed
by pip for Lambda's platform (manylinux2014 x86_64, CPython 3.12, binary wheels only) plus the
project's own modules unpacked from the wheel, and never an engine (duckdb, pyspark, pyarrow).

Reproducible: the same source and the same resolved dependencies give byte-identical files.
The wheel is built with SOURCE_DATE_EPOCH; the zip's entries are sorted, dated 1980-01-01,
mode 0644, without bytecode, console scripts or install-specific files, and each RECORD lists
exactly the files the zip holds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess  # nosec B404  # runs pip with argument lists, never a shell
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from purchases.aws import asl
from purchases.errors import ConfigError, PurchasesError

LAMBDA_EXTRA = "lambda"
LAMBDA_PYTHON = "3.12"
LAMBDA_PLATFORM = "manylinux2014_x86_64"
ENGINES = ("duckdb", "pyspark", "pyarrow")
"""Top-level packages the Lambda zip must not hold (no handler imports an engine)."""
LAMBDA_ZIPPED_MAX = 50 * 1024 * 1024
LAMBDA_UNZIPPED_MAX = 250 * 1024 * 1024
"""Lambda's limits for a .zip deployment package uploaded directly / unzipped."""

WHEEL_GLOB = "purchases-*-py3-none-any.whl"
GLUE_SCRIPT = "glue_job.py"
LAMBDA_ZIP = "lambda.zip"
MANIFEST = "manifest.json"
DEFINITION = asl.DEFINITION_FILE

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01T00:00:00Z, the same date for the wheel
_FILE_MODE = 0o100644 << 16  # a regular file, rw-r--r--
_NOT_PACKAGED = ("__pycache__", ".pytest_cache", "*.pyc", "*.egg-info", "build", "dist")

Progress = Callable[[str], None]


class PackageError(PurchasesError):
    """The artifacts could not be built (pip failed, a limit is exceeded, --out is unusable)."""


@dataclass(frozen=True)
class Package:
    """What `build` wrote: the folder, the manifest's content and the Lambda zip's figures."""

    out: Path
    version: str
    wheel: str
    files: dict[str, str]  # file name -> sha256, as in manifest.json
    lambda_zipped: int
    lambda_unzipped: int
    lambda_packages: tuple[str, ...]  # the zip's top-level packages and modules


def project_root() -> Path:
    """The source checkout this `purchases` runs from (pyproject.toml beside src/purchases).

    Raises:
        ConfigError: purchases is installed from a wheel, without its source.
    """
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "src" / "purchases").is_dir():
        return root
    raise ConfigError(
        "purchases aws package builds from the project's source checkout, and this purchases "
        f"is installed without it ({Path(__file__).resolve().parents[1]}): run it from a "
        "checkout's venv (`make install`)")


def build(out: Path, *, source: Path | None = None, progress: Progress | None = None) -> Package:
    """Build every artifact into `out` (created if needed); returns what was written.

    Files are replaced one by one, the manifest last; an older purchases wheel in `out` is
    removed. Two builds into one folder at once take turns.

    Raises:
        PackageError: `out` is not a writable folder, pip failed (its last line is in the
            message), or the Lambda zip holds an engine or exceeds Lambda's size limits.
        ConfigError: no source checkout.
    """
    say = progress or (lambda _line: None)
    root = source or project_root()
    inside = out.expanduser().absolute()
    if inside.resolve().is_relative_to((root / "src").resolve()):
        # e.g. src/purchases/aws: glue_job.py would replace the module of that name.
        raise PackageError(f"--out {inside} is inside the source ({root / 'src'}): "
                           "choose a folder outside it (default dist/aws)")
    out = writable_folder(out)
    key = hashlib.sha256(str(out).encode()).hexdigest()[:16]
    # The lock lives outside `out`, which is uploaded as it is.
    with FileLock(str(Path(tempfile.gettempdir()) / f"purchases-package-{key}.lock")), \
            tempfile.TemporaryDirectory(prefix="purchases-package-") as tmp:
        work = Path(tmp)
        say("building the wheel (pip wheel --no-deps)")
        wheel = build_wheel(root, work / "wheel")
        version = wheel.name.split("-")[1]
        say(f"installing the Lambda dependencies for Python {LAMBDA_PYTHON} "
            f"{LAMBDA_PLATFORM} (pip install --target)")
        target = work / "lambda"
        install_lambda(lambda_requirements(root), wheel, target)
        zipped = work / LAMBDA_ZIP
        unzipped = write_zip(target, zipped)
        size = zipped.stat().st_size
        if size > LAMBDA_ZIPPED_MAX or unzipped > LAMBDA_UNZIPPED_MAX:
            raise PackageError(
                f"{LAMBDA_ZIP} is {_mb(size)} zipped, {_mb(unzipped)} unzipped: over Lambda's "
                f"limits ({_mb(LAMBDA_ZIPPED_MAX)} / {_mb(LAMBDA_UNZIPPED_MAX)}); trim the "
                f"[{LAMBDA_EXTRA}] extra of pyproject.toml")
        built = {
            wheel.name: wheel.read_bytes(),
            GLUE_SCRIPT: (Path(__file__).with_name("glue_script.py")).read_bytes(),
            LAMBDA_ZIP: zipped.read_bytes(),
            DEFINITION: asl.render(asl.to_asl()).encode(),
        }
        files = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(built.items())}
        manifest = {"version": version, "wheel": wheel.name, "files": files}
        built[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        say(f"writing {out}")
        for name, data in built.items():  # the manifest last: it describes the files before it
            write_whole(out / name, data)
        for old in out.glob(WHEEL_GLOB):
            if old.name != wheel.name:
                old.unlink()
        packages = top_level(_packaged(target))
    return Package(out, version, wheel.name, files, size, unzipped, packages)


def top_level(names: Sequence[str]) -> tuple[str, ...]:
    """The importable top-level packages and modules among zip names (no .dist-info)."""
    tops = set()
    for name in names:
        first = name.split("/", 1)[0]
        if first.endswith((".dist-info", ".pth")):
            continue
        tops.add(first.split(".", 1)[0] if "/" not in name else first)
    return tuple(sorted(tops))


def lambda_requirements(root: Path) -> list[str]:
    """The `lambda` extra of pyproject.toml: what the handlers import, besides the project."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        return list(project["optional-dependencies"][LAMBDA_EXTRA])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{root / 'pyproject.toml'}: no [project.optional-dependencies] "
                          f"{LAMBDA_EXTRA} list ({type(exc).__name__}: {exc})") from None


def build_wheel(root: Path, into: Path) -> Path:
    """The project wheel, built by pip from a clean copy of the source; returns its path."""
    copy = into.parent / "source"
    shutil.copytree(root / "src", copy / "src", ignore=shutil.ignore_patterns(*_NOT_PACKAGED))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, copy / name)
    _pip(["wheel", "--no-deps", "--wheel-dir", str(into), str(copy)], "build the wheel",
         env={"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}, shown=(str(copy), str(root)))
    wheels = sorted(into.glob(WHEEL_GLOB))
    if len(wheels) != 1:
        raise PackageError(f"pip wheel made {[w.name for w in into.iterdir()]}, not one "
                           "purchases-*-py3-none-any.whl")
    return wheels[0]


def install_lambda(requirements: Sequence[str], wheel: Path, target: Path) -> None:
    """Install the requirements for Lambda's platform into `target`, then the project's own
    modules (the pure-Python wheel, unpacked as an installer would)."""
    _pip(["install", "--target", str(target), "--platform", LAMBDA_PLATFORM,
          "--implementation", "cp", "--python-version", LAMBDA_PYTHON,
          "--only-binary=:all:", "--no-compile", "--no-warn-script-location",
          *requirements], "install the Lambda dependencies")
    with zipfile.ZipFile(wheel) as whl:
        if any(".data/" in n for n in whl.namelist()):  # would need an installer's spreading
            raise PackageError(f"{wheel.name} has a .data folder: not a pure-Python wheel")
        # pip would add direct_url.json naming this temporary wheel: not reproducible.
        whl.extractall(target)
    engines = sorted(p.name for p in target.iterdir() if p.name.split(".")[0] in ENGINES)
    if engines:
        raise PackageError(f"the Lambda zip would hold {', '.join(engines)}: drop what pulls "
                           f"it in from the [{LAMBDA_EXTRA}] extra of pyproject.toml")


def write_zip(folder: Path, path: Path) -> int:
    """Zip `folder` reproducibly (module doc) into `path`; returns the unzipped size."""
    names = sorted(_packaged(folder))
    kept = set(names)
    total = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in names:
            data = (folder / name).read_bytes()
            if name.endswith(".dist-info/RECORD"):
                data = _record_of(data, name, kept)
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr, info.create_system = _FILE_MODE, 3  # 3: Unix, so modes apply
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=9)
            total += len(data)
    return total


def _packaged(folder: Path) -> list[str]:
    """Files of an install that belong in the zip, as zip names (posix, relative)."""
    names = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.parts[0] == "bin" or "__pycache__" in rel.parts:
            continue  # console scripts have this machine's interpreter in their first line
        if rel.suffix == ".pyc" or rel.name == "direct_url.json":
            continue
        names.append(rel.as_posix())
    return names


def _record_of(data: bytes, name: str, kept: set[str]) -> bytes:
    """A RECORD reduced to the files the zip holds (it lists scripts and bytecode too)."""
    rows = []
    for row in csv.reader(io.StringIO(data.decode())):
        if row and (os.path.normpath(row[0]).replace(os.sep, "/") in kept or row[0] == name):
            rows.append(row)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(sorted(rows))
    return text.getvalue().encode()


def _pip(args: list[str], what: str, env: dict[str, str] | None = None,
         shown: tuple[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    done = subprocess.run(  # nosec B603  # a fixed pip command line, no shell
        cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        said = pip_error(done.stdout + done.stderr)
        if shown:  # the user's folder, not the temporary copy pip was given
            said = said.replace(*shown)
        raise PackageError(f"pip could not {what}: {said}")


def pip_error(output: str) -> str:
    """pip's own last line that says what went wrong: its last ERROR line, else its last line
    that is not a hint, a note or a warning."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors:
        # A build backend's failure: its own last words come before pip's marker.
        marker = max((i for i, line in enumerate(lines) if line == "[end of output]"),
                     default=0)
        return errors[-1] + (f" ({lines[marker - 1]})" if marker else "")
    said = [line for line in lines if not line.startswith(
        ("WARNING:", "[notice]", "hint:", "note:", "╰─>"))]
    return said[-1] if said else "pip failed without saying why"


def writable_folder(out: Path) -> Path:
    """`out` as an absolute folder, created if needed, that this process can write.

    Raises:
        PackageError: it is a file, or cannot be created or written (named as --out).
    """
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise PackageError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise PackageError(f"--out {out} is not a folder this user can write "
                           f"({exc.strerror or type(exc).__name__})") from None
    return out


def write_whole(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file beside it, then a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


__all__ = ["Package", "PackageError", "build", "build_wheel", "install_lambda",
           "lambda_requirements", "project_root", "top_level", "writable_folder", "write_whole",
           "write_zip"]
