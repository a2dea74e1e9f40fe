"""AWS API clients configured the standard AWS way, for every module that calls AWS."""

from __future__ import annotations

import os
from typing import Any

from purchases.errors import ConfigError


def aws_client(service: str, region: str | None = None) -> Any:
    """A botocore client configured the standard AWS way: endpoint (AWS_ENDPOINT_URL),
    region (`region` when the resource's ARN names it, else AWS_REGION, else
    AWS_DEFAULT_REGION or the profile's), the credential chain.

    botocore, not boto3: it comes with the s3 extra (under s3fs); boto3 need not be installed.

    Raises:
        ConfigError: botocore is not installed, or no region is set anywhere.
    """
    try:
        import botocore.session
        from botocore.exceptions import NoRegionError
    except ImportError:
        raise ConfigError(f"AWS {service} needs botocore: pip install 'purchases[s3]'") from None
    # A fresh session: a shared one would keep the credentials it first found. botocore reads
    # AWS_DEFAULT_REGION only; AWS_REGION (what Lambda and Glue set) wins, as in other SDKs.
    try:
        return botocore.session.get_session().create_client(
            service, region_name=region or os.environ.get("AWS_REGION") or None)
    except NoRegionError:
        raise ConfigError(f"AWS {service}: no region is set: set AWS_REGION (or "
                          "AWS_DEFAULT_REGION, or a region in the AWS profile)") from None


def arn_region(arn: str) -> str | None:
    """The region an ARN names (arn:partition:service:region:account:...), else None: a
    resource must be asked for in its own region, whatever the default is."""
    parts = arn.split(":", 5)
    return parts[3] or None if len(parts) == 6 and parts[0] == "arn" else None
