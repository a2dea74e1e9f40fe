"""AWS API clients configured the standard AWS way, for every module that calls AWS."""

from __future__ import annotations

import os
from typing import Any

from purchases.errors import ConfigError


def aws_client(service: str) -> Any:
    """A botocore client configured the standard AWS way: endpoint (AWS_ENDPOINT_URL),
    region (AWS_REGION, else AWS_DEFAULT_REGION or the profile's), the credential chain.

    botocore, not boto3: it comes with the s3 extra (under s3fs); boto3 need not be installed.

    Raises:
        ConfigError: botocore is not installed.
    """
    try:
        import botocore.session
    except ImportError:
        raise ConfigError(f"AWS {service} needs botocore: pip install 'purchases[s3]'") from None
    # A fresh session: a shared one would keep the credentials it first found. botocore reads
    # AWS_DEFAULT_REGION only; AWS_REGION (what Lambda and Glue set) wins, as in other SDKs.
    return botocore.session.get_session().create_client(
        service, region_name=os.environ.get("AWS_REGION") or None)
