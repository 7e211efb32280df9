"""Blobs in any S3-compatible bucket, through aioboto3 and presigned URLs.

Upload URLs sign `Content-Type`, `Content-Length` and `x-amz-checksum-sha256`, so a real S3 refuses
a body of another size or hash, as the local backend does. The client is built once in `open()`
and released in `close()`: every call reuses its connection pool.
"""

import base64
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aioboto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from fleetstate.blobs.store import (
    CHUNK_SIZE,
    UPLOADS_PREFIX,
    BlobInfo,
    PresignedUpload,
    check_expiry,
    check_key,
    check_sha256,
    check_upload_terms,
)
from fleetstate.domain.clock import rfc3339
from fleetstate.errors import NotFound, StoreClosed

logger = logging.getLogger(__name__)

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts


class S3BlobStore:
    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        url_expiry_s: int = 900,
    ) -> None:
        self.bucket = bucket
        self._endpoint_url = endpoint_url
        self._region = region
        # None credentials let botocore's standard chain (AWS_* env, profiles, roles) decide.
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._url_expiry_s = url_expiry_s
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        # Path-style addressing: a custom endpoint (MinIO, moto, 127.0.0.1) has no DNS per bucket.
        config = BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path" if self._endpoint_url else "auto"},
        )
        client_cm = self._session.client(
            "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=config
        )
        self._client = await self._stack.enter_async_context(client_cm)

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StoreClosed
        return self._client

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists already."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) not in _MISSING:
                raise
        else:
            return
        extra: dict[str, Any] = {}
        if self._region != "us-east-1":  # us-east-1 is the one region that takes no constraint
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await self.client.create_bucket(Bucket=self.bucket, **extra)
        except ClientError as exc:
            # Created concurrently by another of our processes: just as good.
            if _error_code(exc) != "BucketAlreadyOwnedByYou":
                raise

    # --- presigned URLs ----------------------------------------------------------------------

    async def presign_put(
        self,
        key: str,
        *,
        size: int,
        sha256_hex: str,
        content_type: str,
        expires_in: int | None = None,
    ) -> PresignedUpload:
        check_upload_terms(size, content_type)
        seconds = check_expiry(expires_in, self._url_expiry_s)
        checksum = base64.b64encode(bytes.fromhex(check_sha256(sha256_hex))).decode()
        params = {
            "Bucket": self.bucket,
            "Key": check_key(key),
            "ContentType": content_type,
            "ContentLength": size,
            "ChecksumSHA256": checksum,
        }
        expires_at = rfc3339(datetime.fromtimestamp(time.time() + seconds, UTC))
        url = await self.client.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=seconds
        )
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(size),
            "x-amz-checksum-sha256": checksum,
        }
        return PresignedUpload(url=url, method="PUT", headers=headers, expires_at=expires_at)

    async def presign_get(self, key: str, *, expires_in: int | None = None) -> str:
        url = await self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": check_key(key)},
            ExpiresIn=check_expiry(expires_in, self._url_expiry_s),
        )
        return str(url)

    # --- objects -----------------------------------------------------------------------------

    async def stat(self, key: str) -> BlobInfo | None:
        try:
            head = await self.client.head_object(
                Bucket=self.bucket, Key=check_key(key), ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise
        return BlobInfo(
            key=key,
            size=int(head["ContentLength"]),
            modified_at=head["LastModified"].astimezone(UTC),
            sha256=_hex_checksum(head.get("ChecksumSHA256")),
        )

    async def sha256_of(self, key: str) -> str:
        digest = hashlib.sha256()
        async for chunk in self.iter_bytes(key):
            digest.update(chunk)
        return digest.hexdigest()

    async def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise NotFound("blob", key) from exc
            raise
        body = response["Body"]
        async with body:  # releases the HTTP connection even if the consumer stops early
            async for chunk in body.iter_chunks(chunk_size):
                yield chunk

    async def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> BlobInfo:
        await self.client.put_object(
            Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type
        )
        return BlobInfo(
            key=key,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            modified_at=datetime.now(UTC),
        )

    async def move(self, src: str, dst: str) -> None:
        # S3 has no rename: copy (server side, up to 5 GB in one call), then delete the source.
        source = {"Bucket": self.bucket, "Key": check_key(src)}
        try:
            await self.client.copy_object(Bucket=self.bucket, Key=check_key(dst), CopySource=source)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise NotFound("blob", src) from exc
            raise
        await self.delete(src)

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    async def cleanup_expired_uploads(self, older_than: datetime) -> int:
        stale: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=UPLOADS_PREFIX):
            stale.extend(
                item["Key"]
                for item in page.get("Contents", [])
                if item["LastModified"] < older_than
            )
        failed = 0
        for start in range(0, len(stale), _DELETE_BATCH):
            batch = [{"Key": key} for key in stale[start : start + _DELETE_BATCH]]
            answer = await self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            for error in answer.get("Errors", []):
                failed += 1
                logger.warning("could not delete %s: %s", error.get("Key"), error.get("Message"))
        return len(stale) - failed


def _error_code(exc: Exception) -> str:
    response: dict[str, Any] = getattr(exc, "response", {})
    return str(response.get("Error", {}).get("Code", ""))


def _hex_checksum(value: str | None) -> str | None:
    """The hex SHA-256 from S3's base64 checksum; None for a multipart (composite) one."""
    if not value or "-" in value:
        return None
    return base64.b64decode(value).hex()
