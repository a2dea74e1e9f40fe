"""URLs as the product shows them: no password, no secret-looking query value."""

from __future__ import annotations

import pytest

from purchases.masking import scrubbed, shown_url


@pytest.mark.parametrize(("url", "shown"), [
    ("http://127.0.0.1:9/x?password=S3cret", "http://127.0.0.1:9/x?password=***"),
    ("http://u:S3cret@h:5000/api/v1?api_key=S3cret&x=1", "http://h:5000/api/v1?api_key=***&x=1"),
    ("https://h/?apikey=S3cret&token=S3cret&auth=S3cret", "https://h/?apikey=***&token=***&auth=***"),
    ("https://h/?dsn=host%3Dx+password%3DS3cret", "https://h/?dsn=***"),  # named in a value
    ("https://h/o?X-Amz-Signature=S3cret&X-Amz-Date=1", "https://h/o?X-Amz-Signature=***&X-Amz-Date=1"),
    ("s3://AKIA:S3cret@bucket/p", "s3://bucket/p"),
    ("http://h/#access_token=S3cret", "http://h/#***"),
    ("http://h/a?q=plain", "http://h/a?q=plain"),
    ("http://h/x?sig=S3cret&se=2030", "http://h/x?sig=***&se=2030"),  # Azure's SAS
    ("http://h/x?jwt=S3cret", "http://h/x?jwt=***"),
    ("http://h/x?token=ab/S3cret", "http://h/x?token=***"),  # the whole value, / included
    ("http://h/x?S3cretBareToken", "http://h/x?***"),  # a bare item is as often a token
    ("s3://bucket/x?S3cret", "s3://bucket/x?***"),
    ("http://h/a?q=plain&flag", "http://h/a?q=plain&***"),
    ("jdbc://h/db;user=me;password=S3cret", "jdbc://h/db;user=me;password=***"),
    ("http://h/p%20q?bearer=S3cret", "http://h/p%20q?bearer=***"),  # kept as written
    # Malformed (no ://): masked by the same rule, credentials shown as ***@.
    ("user:S3cret@127.0.0.1:9", "***@127.0.0.1:9"),
    ("http:user:S3cret@h", "***@h"),
    ("h:9/x?api_key=S3cret", "h:9/x?api_key=***"),
    ("a/local/path?S3cret", "a/local/path?***"),
])
def test_credentials_never_show(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "S3cret" not in shown_url(url)


@pytest.mark.parametrize(("url", "message", "said"), [
    # The OpenLineage client's own messages: the URL whole, or the path and query it sent.
    ("http:user:S3cret@h", "Need valid url for OpenLineageClient, passed http:user:S3cret@h",
     "Need valid url for OpenLineageClient, passed ***@h"),
    ("http://h:9/x?api_key=S3cret&env=prod",
     "Max retries exceeded with url: /x/api/v1/lineage?api_key=S3cret&env=prod",
     "Max retries exceeded with url: /x/api/v1/lineage?api_key=***&env=prod"),
    ("http://u:S3cret@h:9", "auth u:S3cret refused; S3cret again", "auth *** refused; *** again"),
    ("http://h/?token=ab", "token ab refused: an http error", "token ab refused: an http error"),
])
def test_a_message_quoting_a_url_shows_none_of_its_secrets(
    url: str, message: str, said: str
) -> None:
    # A secret under 3 characters is left: masking it would mangle the message's own words.
    assert scrubbed(message, url) == said
