"""URLs as the product shows them: no password, no secret-looking query value."""

from __future__ import annotations

import pytest

from purchases.masking import shown_url


@pytest.mark.parametrize(("url", "shown"), [
    ("http://127.0.0.1:9/x?password=S3cret", "http://127.0.0.1:9/x?password=***"),
    ("http://u:S3cret@h:5000/api/v1?api_key=S3cret&x=1", "http://h:5000/api/v1?api_key=***&x=1"),
    ("https://h/?apikey=S3cret&token=S3cret&auth=S3cret", "https://h/?apikey=***&token=***&auth=***"),
    ("https://h/?dsn=host%3Dx+password%3DS3cret", "https://h/?dsn=***"),  # named in a value
    ("https://h/o?X-Amz-Signature=S3cret&X-Amz-Date=1", "https://h/o?X-Amz-Signature=***&X-Amz-Date=1"),
    ("s3://AKIA:S3cret@bucket/p", "s3://bucket/p"),
    ("http://h/#access_token=S3cret", "http://h/#***"),
    ("http://h/a?q=plain", "http://h/a?q=plain"),
    ("a/local/path?x", "a/local/path?x"),
])
def test_credentials_never_show(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "S3cret" not in shown_url(url)
