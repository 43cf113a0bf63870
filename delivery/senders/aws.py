"""What the SQS and SNS senders share: cached boto3 clients and error classification."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from delivery.redact import scrub
from delivery.sender import Destination, OutgoingMessage, SendResult

# botocore's DEBUG output carries request headers (the access key id among them): never let
# it reach our logs, whatever LOG_LEVEL says.
for _name in ("botocore", "boto3", "urllib3", "s3transfer"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# Our own schedule retries (and records) every attempt, so boto3 tries once.
_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"total_max_attempts": 1},
                 max_pool_connections=32)

TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "ServiceUnavailable",
    "ServiceUnavailableException", "InternalError", "InternalFailure", "InternalErrorException",
    "RequestTimeout", "RequestTimeoutException", "KMSThrottlingException", "SlowDown",
    "RequestLimitExceeded", "EC2ThrottledException", "KmsThrottled", "KMSThrottling",
    "KMS.ThrottlingException",
    "AWS.SimpleQueueService.KmsThrottled", "KMSInternalException", "KmsInternal",
}


class ClientCache:
    """One boto3 client per (service, region, key id, secret); clients are thread-safe."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, str | None, str | None], Any] = {}
        self._lock = threading.Lock()

    def get(self, service: str, destination: Destination) -> Any:
        key = (service, destination.region, destination.access_key, destination.access_secret)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    kwargs: dict[str, Any] = {"region_name": destination.region, "config": _CONFIG}
                    if destination.access_key:
                        kwargs["aws_access_key_id"] = destination.access_key
                        kwargs["aws_secret_access_key"] = destination.access_secret
                    # boto3 applies AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> by itself.
                    client = boto3.session.Session().client(service, **kwargs)
                    self._clients[key] = client
        return client


def classify(exc: Exception, known: Iterable[str | None] = ()) -> SendResult:
    """Turn a boto3 failure into a SendResult (transient or permanent), without secrets: every
    text that comes from the SDK or AWS is scrubbed of ``known`` (the destination's key id and
    secret) and of any signed header, credential, signature or key id (delivery/redact.py)."""
    known = tuple(known)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = scrub(str(error.get("Code") or "ClientError"), known)[:128]
        message = scrub(str(error.get("Message") or ""), known)
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        headers = {k.lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()}
        retry_after = None
        if headers.get("retry-after", "").strip().isdigit():
            retry_after = float(headers["retry-after"])
        transient = code in TRANSIENT_CODES or status >= 500 or status == 429
        return SendResult(False, error_code=code, error_message=message[:500], transient=transient,
                          retry_after=retry_after)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError |
                  ConnectionClosedError):
        return SendResult(False, error_code=type(exc).__name__, error_message="network error",
                          transient=True)
    if isinstance(exc, NoCredentialsError):
        return SendResult(False, error_code="NoCredentials",
                          error_message="no AWS credentials: set keys on the subscription or the "
                          "platform's credential chain", transient=False)
    if isinstance(exc, BotoCoreError):
        return SendResult(False, error_code=type(exc).__name__,
                          error_message=scrub(str(exc), known)[:300], transient=True)
    return SendResult(False, error_code=type(exc).__name__, error_message="unexpected error",
                      transient=True)


def message_kwargs(destination: Destination, message: OutgoingMessage) -> dict[str, Any]:
    """What SQS SendMessage and SNS Publish share: string attributes and the FIFO ids."""
    kwargs: dict[str, Any] = {"MessageAttributes": {
        k: {"DataType": "String", "StringValue": v} for k, v in message.attributes.items()}}
    if destination.fifo:
        kwargs["MessageGroupId"] = message.group_id
        kwargs["MessageDeduplicationId"] = message.deduplication_id
    return kwargs


def batch_results(response: dict[str, Any], count: int,
                  known: Iterable[str | None] = ()) -> list[SendResult]:
    """Per-entry results of SendMessageBatch / PublishBatch (entry ids are "0".."n-1")."""
    results = [SendResult(False, error_code="MissingFromBatchResponse",
                          error_message="the batch response did not mention this entry",
                          transient=True) for _ in range(count)]
    for ok in response.get("Successful", []):
        results[int(ok["Id"])] = SendResult(True, message_id=ok.get("MessageId"))
    for bad in response.get("Failed", []):
        code = scrub(str(bad.get("Code") or "BatchEntryFailed"), known)[:128]
        transient = not bad.get("SenderFault") or code in TRANSIENT_CODES
        message = scrub(str(bad.get("Message") or ""), known)[:500]
        results[int(bad["Id"])] = SendResult(False, error_code=code, error_message=message,
                                             transient=transient)
    return results


def _secrets(destination: Destination) -> tuple[str | None, str | None]:
    return destination.access_key, destination.access_secret


def call_batch(clients: ClientCache, service: str, destination: Destination, operation: str,
               count: int, **kwargs: Any) -> list[SendResult]:
    """Run one boto3 batch call; a failure of the whole call (making the client included)
    applies to every entry."""
    try:
        response = getattr(clients.get(service, destination), operation)(**kwargs)
    except Exception as exc:  # noqa: BLE001 - classified, never raised
        return [classify(exc, _secrets(destination))] * count
    return batch_results(response, count, _secrets(destination))


def call(clients: ClientCache, service: str, destination: Destination, operation: str,
         **kwargs: Any) -> SendResult:
    """Run one boto3 send; every failure (making the client included: boto3 refuses some
    region names there) becomes a classified SendResult."""
    try:
        response = getattr(clients.get(service, destination), operation)(**kwargs)
    except Exception as exc:  # noqa: BLE001 - classified, never raised
        return classify(exc, _secrets(destination))
    return SendResult(True, message_id=response.get("MessageId"))
