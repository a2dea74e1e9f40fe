"""URLs as they may be shown: in a message, a log line, the run history.

One rule for every URL the product shows (the serving database's, the lake's, OpenLineage's):
a password in `user:password@`, any query or path parameter that may carry a secret, by its
name or by its value (`?password=`, `?api_key=`, `;password=`, `options=-c password=...`),
a bare query token (`?abc123`) and a fragment never appear. A string given as a URL but
malformed (no `://`) is masked by the same rule: it is most often a URL with a typo.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|key|auth|cred|sig|jwt|bearer|session|private", re.IGNORECASE)
"""A parameter whose name or value matches may carry a secret: libpq's password and
sslpassword, a driver's passwd, an access token, an API key, a presigned URL's signature
(X-Amz-Signature, Azure's sig), a JWT, a session token."""

MASK = "***"

# name=value inside a path: `;password=x` (JDBC-style and matrix parameters).
_PATH_PARAMETER = re.compile(r"(?P<name>[^;/=&?]+)=(?P<value>[^;/&]*)")


def is_secret(name: str, value: str) -> bool:
    """Whether the parameter `name=value` may carry a secret."""
    return bool(SECRET_PARAMETER.search(name) or SECRET_PARAMETER.search(value))


def _shown_pair(name: str, value: str, written: str) -> str:
    """`written` (name=value as it stands in the URL), or name=MASK when it may be a secret."""
    return f"{name}={MASK}" if is_secret(unquote_plus(name), unquote_plus(value)) else written


def _shown_parameter(match: re.Match[str]) -> str:
    return _shown_pair(match["name"], match["value"], match[0])


def _shown_query(query: str) -> str:
    """Each `name=value` kept as written unless it may carry a secret (its whole value, `/`
    included); a bare item (no `=`) is a token as often as a flag, so it is masked."""
    shown = []
    for item in query.split("&"):
        name, equals, value = item.partition("=")
        shown.append(_shown_pair(name, value, item) if equals else MASK if item else item)
    return "&".join(shown)


def _split(url: str) -> tuple[str, str, str, str, str | None, str | None]:
    """scheme, `://` (or "" when malformed), authority, path (with its leading `/`), query
    and fragment (None when absent)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, hash_sign, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    return (scheme, sep, authority, slash + path, query if question else None,
            fragment if hash_sign else None)


def shown_url(url: str) -> str:
    """`url` without the credentials of its authority (user:password@ goes, the host stays),
    with every secret-looking parameter value, bare query token and fragment replaced by
    MASK. A malformed URL (no `://`) shows `***@` where its credentials were."""
    scheme, sep, authority, path, query, fragment = _split(url)
    if "@" in authority:
        host = authority.rpartition("@")[2]
        authority = host if sep else f"{MASK}@{host}"
    shown = scheme + sep + authority + _PATH_PARAMETER.sub(_shown_parameter, path)
    if query is not None:
        shown += "?" + _shown_query(query)
    if fragment is not None:
        shown += "#" + (MASK if fragment else "")  # a token in a fragment is common
    return shown


def scrubbed(text: str, url: str) -> str:
    """`text` (a library's error message, which may quote `url` or parts of it) with `url`
    shown as `shown_url` shows it, and each secret of `url` masked wherever else it appears
    (a client's message quotes the path and query it sent)."""
    text = text.replace(url, shown_url(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):  # a secret holding another
        text = text.replace(secret, MASK)
    return text


def _secrets(url: str) -> set[str]:
    """What `shown_url` hides of `url`: its credentials (user:password, and the password
    alone), secret parameter values, bare query tokens, the fragment; each also decoded. A
    part shorter than 3 characters is left: masking it would mask ordinary words instead."""
    _, _, authority, path, query, fragment = _split(url)
    found = set()
    if "@" in authority:
        credentials = authority.rpartition("@")[0]
        found |= {credentials, credentials.rpartition(":")[2]}
    items = re.split(r"[;/]", path) + (query or "").split("&")
    for name, equals, value in (item.partition("=") for item in items):
        if equals and is_secret(unquote_plus(name), unquote_plus(value)):
            found.add(value)
    found |= {item for item in (query or "").split("&") if "=" not in item}  # bare tokens
    found.add(fragment or "")
    found |= {unquote_plus(part) for part in found}
    return {part for part in found if len(part) >= 3}


__all__ = ["MASK", "SECRET_PARAMETER", "is_secret", "scrubbed", "shown_url"]
