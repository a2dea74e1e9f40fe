"""Parameter parsers shared by the command-line modules."""

from __future__ import annotations

from pathlib import Path

import typer


def given_path(text: str | Path) -> Path:
    """A path typed on the command line; an empty one ("", or only spaces) is refused.

    Typer takes "" for the current folder: `generate --out ""` wrote its files there, and
    `watch ""` watched it. Nobody types "" to mean ".", so it is a usage error naming the
    option instead.
    """
    if isinstance(text, str) and not text.strip():
        raise typer.BadParameter("is empty: give a path (. for the current folder)")
    return Path(text)


def given_text(text: str) -> str:
    """A value typed on the command line that names something (a lake URL, a database URL);
    an empty one was taken for "not given", the default used without a word."""
    if not text.strip():
        raise typer.BadParameter("is empty: give a value, or leave the option out")
    return text
