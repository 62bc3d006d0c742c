"""The landing zone in object storage: ``s3://bucket/prefix`` or ``s3://bucket/key.csv``.

boto3 with the standard credential chain. The endpoint of an S3-compatible store
comes from ``--s3-endpoint-url`` or the standard ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` variables (boto3 reads those itself). Listing is paginated;
objects are read one by one when their batch is processed, never copied to disk.
Throttling and dropped connections are retried by botocore (adaptive mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from cafe_etl.errors import SourceError
from cafe_etl.sources.base import LandingFile

EXPORT_SUFFIX = ".csv"
_RETRIES = {"max_attempts": 8, "mode": "adaptive"}


def split(location: str) -> tuple[str, str]:
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SourceError(f"not an S3 location: {location} (expected s3://bucket/prefix)")
    return parsed.netloc, parsed.path.lstrip("/")


@lru_cache(maxsize=8)
def client(endpoint_url: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries=_RETRIES, connect_timeout=5, read_timeout=60)
    return boto3.client("s3", endpoint_url=endpoint_url or None, config=config)


def _explain(exc: Exception, location: str) -> SourceError:
    """botocore's errors, in the user's terms, on one line."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError):
        return SourceError("no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                           "or an instance role")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return SourceError(f"cannot reach the S3 endpoint for {location}: {exc}")
    if isinstance(exc, bx.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        bucket = split(location)[0]
        if code in ("NoSuchBucket",):
            return SourceError(f"bucket {bucket} does not exist ({location})")
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return SourceError(f"access denied to {location}: check the credentials and the bucket policy")
        if code in ("NoSuchKey", "404", "NotFound"):
            return SourceError(f"no object at {location}")
        return SourceError(f"S3 refused {location}: {code or exc}")
    return SourceError(f"S3 error for {location}: {exc}")


def _landing_file(bucket: str, key: str, size: int, modified: float, etag: str | None,
                  endpoint_url: str | None) -> LandingFile:
    location = f"s3://{bucket}/{key}"

    def read() -> bytes:
        try:
            return client(endpoint_url).get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001 - botocore raises many kinds; each becomes one line
            raise _explain(exc, location) from None

    return LandingFile(location=location, size=size, modified=modified, read=read,
                       etag=(etag or "").strip('"') or None)


def is_export(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.lower().endswith(EXPORT_SUFFIX) and not name.startswith(".")


def at(location: str, endpoint_url: str | None = None) -> LandingFile | None:
    """The object at ``location``, if it is still there."""
    bucket, key = split(location)
    try:
        head = client(endpoint_url).head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001
        error = _explain(exc, location)
        if str(error).startswith("no object"):
            return None
        raise error from None
    return _landing_file(bucket, key, head["ContentLength"], head["LastModified"].timestamp(), head.get("ETag"),
                         endpoint_url)


def listing(bucket: str, prefix: str, endpoint_url: str | None = None,
            start_after: str | None = None) -> Iterator[LandingFile]:
    """Every export under ``prefix`` (after the key ``start_after``, when given), page by page."""
    pages = client(endpoint_url).get_paginator("list_objects_v2")
    arguments = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        arguments["StartAfter"] = start_after
    try:
        for page in pages.paginate(**arguments):
            for item in page.get("Contents", ()):
                if is_export(item["Key"]):
                    yield _landing_file(bucket, item["Key"], item["Size"], item["LastModified"].timestamp(),
                                        item.get("ETag"), endpoint_url)
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, f"s3://{bucket}/{prefix}") from None


def discover(spec: str, endpoint_url: str | None = None) -> Iterator[LandingFile]:
    bucket, key = split(spec)
    if key and is_export(key):
        found = at(spec, endpoint_url)
        if found is None:
            raise SourceError(f"no object at {spec}")
        yield found
        return
    yield from listing(bucket, key, endpoint_url)
