"""URLs as they may be shown: in a message, a log line, the run history.

One rule for every URL the product shows (the serving database's, the lake's, OpenLineage's):
a password in `user:password@` and any query parameter that may carry a secret, by its name
or by its value (`?password=`, `?api_key=`, `options=-c password=...`), never appear.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature",
                              re.IGNORECASE)
"""A query parameter whose name or value matches may carry a secret: libpq's password and
sslpassword, a driver's passwd, an access token, an API key, a presigned URL's signature."""

MASK = "***"


def is_secret(name: str, value: str) -> bool:
    """Whether the query parameter `name=value` may carry a secret."""
    return bool(SECRET_PARAMETER.search(name) or SECRET_PARAMETER.search(value))


def shown_url(url: str) -> str:
    """`url` without the credentials of its authority (user:password@ goes, the host stays)
    and with every secret-looking query value replaced by MASK. Not a URL (no `://`): as is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, hash_sign, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    shown = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    if question:
        pairs = parse_qsl(query, keep_blank_values=True)
        shown += question + urlencode(
            [(k, MASK if is_secret(k, v) else v) for k, v in pairs], safe="*")
    if hash_sign:
        shown += hash_sign + (MASK if fragment else "")  # a token in a fragment is common
    return shown


__all__ = ["MASK", "SECRET_PARAMETER", "is_secret", "shown_url"]
