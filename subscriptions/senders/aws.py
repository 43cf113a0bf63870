"""What the SQS and SNS senders share: cached boto3 clients and error classification."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
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

from infra.redact import scrub
from subscriptions.senders.base import MAX_BATCH, Destination, OutgoingMessage, Sender, SendResult

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


@dataclass(frozen=True)
class TemporaryCredentials:
    """STS credentials of an assumed role; ``refresh_at`` is when to assume it again."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: float
    refresh_at: float


class CredentialsFailed(Exception):
    """The destination's credentials could not be obtained; ``result`` says why, classified."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error_code)
        self.result = result


# What a tenant is told when its role cannot be assumed. STS's own message names the platform's
# principal and is not passed on.
ROLE_REFUSED = (
    "cannot assume roleArn with this tenant's externalId: the role must exist and its trust "
    "policy must allow Event Collector's AWS principal to call sts:AssumeRole with the "
    "condition sts:ExternalId = the externalId this subscription shows"
)


class AssumedRoles:
    """Temporary credentials of tenants' roles, assumed with the platform's credentials and the
    tenant's ExternalId, kept per (role ARN, ExternalId, session name) and assumed again
    ``refresh_before`` seconds before they expire (half their lifetime when that is shorter).
    Thread-safe; one AssumeRole per key at a time, however many senders ask."""

    DURATION = 3600  # seconds; every role allows an hour (MaxSessionDuration is 1-12 h)

    def __init__(self, sts_client: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.time, refresh_before: float = 300.0) -> None:
        self._sts_client = sts_client or self._platform_sts
        self._clock = clock
        self._refresh_before = refresh_before
        self._entries: dict[tuple[str | None, str | None, str | None], TemporaryCredentials] = {}
        self._key_locks: dict[tuple[str | None, str | None, str | None], threading.Lock] = {}
        self._sts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _platform_sts(self, region: str) -> Any:
        client = self._sts.get(region)
        if client is None:
            with self._lock:
                client = self._sts.get(region)
                if client is None:
                    # The platform's own chain; boto3 applies AWS_ENDPOINT_URL[_STS] itself.
                    client = boto3.session.Session().client("sts", region_name=region,
                                                            config=_CONFIG)
                    self._sts[region] = client
        return client

    def get(self, destination: Destination) -> TemporaryCredentials:
        key = (destination.role_arn, destination.external_id, destination.session_name)
        creds = self._entries.get(key)
        if creds is not None and self._clock() < creds.refresh_at:
            return creds
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            creds = self._entries.get(key)
            if creds is not None and self._clock() < creds.refresh_at:
                return creds
            creds = self._assume(destination)
            self._entries[key] = creds
            return creds

    def _assume(self, destination: Destination) -> TemporaryCredentials:
        try:
            response = self._sts_client(destination.region).assume_role(
                RoleArn=destination.role_arn, RoleSessionName=destination.session_name,
                ExternalId=destination.external_id, DurationSeconds=self.DURATION)
        except NoCredentialsError:
            # The operator's misconfiguration, not the tenant's: retried, never deactivating.
            raise CredentialsFailed(SendResult(
                False, error_code="AssumeRole.NoCredentials", transient=True,
                error_message="the platform has no AWS credentials to assume roles with")) from None
        except Exception as exc:  # noqa: BLE001 - classified, never raised
            seen = classify(exc)
            raise CredentialsFailed(SendResult(
                False, error_code=f"AssumeRole.{seen.error_code}", transient=seen.transient,
                retry_after=seen.retry_after,
                error_message="STS AssumeRole is unavailable for now; retried on the schedule"
                if seen.transient else ROLE_REFUSED)) from None
        raw = response["Credentials"]
        now = self._clock()
        expiration = raw["Expiration"]
        expires_at = expiration.timestamp() if isinstance(expiration, datetime) else float(expiration)
        expires_at = min(expires_at, now + self.DURATION)  # never trust a clock ahead of ours
        lifetime = max(expires_at - now, 0.0)
        return TemporaryCredentials(
            access_key_id=raw["AccessKeyId"], secret_access_key=raw["SecretAccessKey"],
            session_token=raw["SessionToken"], expires_at=expires_at,
            refresh_at=now + max(lifetime - self._refresh_before, lifetime / 2))


class ClientCache:
    """One boto3 client per (service, region, key id, secret), and per assumed role one per
    (service, region, role) rebuilt when its credentials are renewed; clients are thread-safe."""

    def __init__(self, roles: AssumedRoles | None = None) -> None:
        self.roles = roles or AssumedRoles()
        self._clients: dict[tuple[str, str, str | None, str | None], Any] = {}
        self._role_clients: dict[tuple[str, ...], tuple[TemporaryCredentials, Any]] = {}
        self._lock = threading.Lock()

    def get(self, service: str, destination: Destination) -> Any:
        """The client to send with; raises CredentialsFailed when a role cannot be assumed."""
        if destination.credentials == "role":
            return self._role_client(service, destination)
        key = (service, destination.region, destination.access_key, destination.access_secret)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = _client(service, destination.region, destination.access_key,
                                     destination.access_secret)
                    self._clients[key] = client
        return client

    def _role_client(self, service: str, destination: Destination) -> Any:
        creds = self.roles.get(destination)
        key = (service, destination.region, str(destination.role_arn),
               str(destination.external_id), str(destination.session_name))
        entry = self._role_clients.get(key)
        if entry is None or entry[0] is not creds:
            with self._lock:
                entry = self._role_clients.get(key)
                if entry is None or entry[0] is not creds:
                    entry = (creds, _client(service, destination.region, creds.access_key_id,
                                            creds.secret_access_key, creds.session_token))
                    self._role_clients[key] = entry
        return entry[1]


def _client(service: str, region: str, key: str | None, secret: str | None,
            token: str | None = None) -> Any:
    kwargs: dict[str, Any] = {"region_name": region, "config": _CONFIG}
    if key:
        kwargs["aws_access_key_id"] = key
        kwargs["aws_secret_access_key"] = secret
        if token:
            kwargs["aws_session_token"] = token
    # boto3 applies AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> by itself.
    return boto3.session.Session().client(service, **kwargs)


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


# SendMessageBatch and PublishBatch refuse a request whose bodies and attributes add up to more
# than this.
MAX_BATCH_BYTES = 256 * 1024


def _size(message: OutgoingMessage) -> int:
    return len(message.body.encode()) + sum(len(k) + len(v) + 6 for k, v in
                                            message.attributes.items())


def chunks(messages: list[OutgoingMessage]) -> list[list[OutgoingMessage]]:
    """At most ten messages and 256 KiB per request, in order."""
    out: list[list[OutgoingMessage]] = [[]]
    size = 0
    for m in messages:
        s = _size(m)
        if out[-1] and (len(out[-1]) == MAX_BATCH or size + s > MAX_BATCH_BYTES):
            out.append([])
            size = 0
        out[-1].append(m)
        size += s
    return [c for c in out if c]


def _secrets(destination: Destination) -> tuple[str | None, str | None]:
    return destination.access_key, destination.access_secret


def call_batch(clients: ClientCache, service: str, destination: Destination, operation: str,
               count: int, **kwargs: Any) -> list[SendResult]:
    """Run one boto3 batch call; a failure of the whole call (making the client included)
    applies to every entry."""
    try:
        response = getattr(clients.get(service, destination), operation)(**kwargs)
    except CredentialsFailed as exc:
        return [exc.result] * count
    except Exception as exc:  # noqa: BLE001 - classified, never raised
        return [classify(exc, _secrets(destination))] * count
    return batch_results(response, count, _secrets(destination))


def call(clients: ClientCache, service: str, destination: Destination, operation: str,
         **kwargs: Any) -> SendResult:
    """Run one boto3 send; every failure (making the client included: boto3 refuses some
    region names there) becomes a classified SendResult."""
    try:
        response = getattr(clients.get(service, destination), operation)(**kwargs)
    except CredentialsFailed as exc:
        return exc.result
    except Exception as exc:  # noqa: BLE001 - classified, never raised
        return classify(exc, _secrets(destination))
    return SendResult(True, message_id=response.get("MessageId"))


class BatchingSender(Sender):
    """What the SQS and SNS senders share: one call per message, or batch calls of up to ten
    (and 256 KiB), each entry keeping its own result (a partial failure retries only the
    entries that failed). A subclass names its service, its calls and their parameters."""

    service: str
    single_call: str  # send_message | publish
    batch_call: str  # send_message_batch | publish_batch
    target_param: str  # QueueUrl | TopicArn
    body_param: str  # MessageBody | Message
    entries_param: str  # Entries | PublishBatchRequestEntries

    def __init__(self, clients: ClientCache | None = None) -> None:
        self.clients = clients or ClientCache()

    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        return call(self.clients, self.service, destination, self.single_call,
                    **{self.target_param: destination.target, self.body_param: message.body},
                    **message_kwargs(destination, message))

    def send_batch(self, destination: Destination,
                   messages: list[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        for chunk in chunks(messages):
            results += self._one_batch(destination, chunk)
        return results

    def _one_batch(self, destination: Destination,
                   messages: list[OutgoingMessage]) -> list[SendResult]:
        if len(messages) == 1:
            return [self.send(destination, messages[0])]
        entries: list[dict[str, Any]] = [
            {"Id": str(i), self.body_param: m.body, **message_kwargs(destination, m)}
            for i, m in enumerate(messages)]
        return call_batch(self.clients, self.service, destination, self.batch_call, len(entries),
                          **{self.target_param: destination.target, self.entries_param: entries})
