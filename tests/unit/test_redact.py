"""No signed header, credential or signature in an SDK error's text reaches an error message, an
attempt log entry or a log line (issue 11).

The exceptions here are real botocore ones: the first is raised by boto3 itself, signing a
request for a region with a newline against a port nothing listens on (the HTTP layer refuses
the Authorization header before connecting); the others are built with the text botocore and AWS
put in them. ``tests/integration/test_subscriptions.py`` checks the same through moto, the test
send route and the attempt log.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, ParamValidationError

from config.logging import JsonFormatter
from infra.redact import scrub
from subscriptions.senders.aws import batch_results, classify
from subscriptions.senders.base import Destination, OutgoingMessage
from subscriptions.senders.sns import SnsSender
from subscriptions.senders.sqs import SqsSender

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzz"
SIGNATURE = "96a0eafeb8e3b0f42bf685bb2718ca9ce0ea694ce469c3cd6743814ad2d25dfa"
TOKEN = "FwoGZXIvYXdzEJr//////////wEaDO3Kq1Vvexampletoken"


def leaks(text: str | None) -> list[str]:
    """What of the credentials and signing material ``text`` carries."""
    text = text or ""
    found = [name for name, value in (("key id", KEY_ID), ("secret", SECRET),
                                      ("signature", SIGNATURE), ("session token", TOKEN))
             if value in text]
    found += [marker for marker in ("Credential=", "Signature=", "SignedHeaders=")
              if marker in text and f"{marker}[redacted]" not in text]
    if "AWS4-HMAC-SHA256" in text and "AWS4-HMAC-SHA256 [redacted]" not in text:
        found.append("Authorization value")
    return found


def real_signing_error(region: str = "us-east-1\n") -> Exception:
    """What boto3 raises when the region breaks the Authorization header (no network used)."""
    client = boto3.session.Session().client(
        "sqs", region_name=region, endpoint_url="http://127.0.0.1:9",
        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1))
    try:
        client.send_message(QueueUrl="http://127.0.0.1:9/123456789012/q", MessageBody="x")
    except Exception as exc:  # noqa: BLE001 - the exception under test
        return exc
    raise AssertionError("boto3 sent a request with a newline in its region")


def test_boto3_puts_the_key_id_and_signature_in_its_exception_text() -> None:
    # (the premise: the raw text carries them, so every consumer must scrub)
    exc = real_signing_error()
    assert isinstance(exc, HTTPClientError)
    assert KEY_ID in str(exc) and "Signature=" in str(exc)


def _exceptions() -> dict[str, Exception]:
    auth = (f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20261201/us-east-1/sqs/aws4_request, "
            f"SignedHeaders=content-type;host;x-amz-date, Signature={SIGNATURE}")
    return {
        "a real signing failure": real_signing_error(),
        "an HTTP client error quoting headers": HTTPClientError(error=ValueError(
            f"Invalid header: {{'Authorization': b'{auth}', 'X-Amz-Date': b'20261201T000000Z', "
            f"'X-Amz-Security-Token': b'{TOKEN}'}}")),
        "an AWS error message quoting the request": ClientError(
            {"Error": {"Code": "SignatureDoesNotMatch", "Message":
                       f"The request signature we calculated does not match. Authorization: "
                       f"{auth} aws_access_key_id={KEY_ID} aws_secret_access_key={SECRET}"},
             "ResponseMetadata": {"HTTPStatusCode": 403}}, "SendMessage"),
        "a parameter error naming the credentials": ParamValidationError(
            report=f"Invalid type for parameter X-Amz-Credential={KEY_ID}/20261201, "
                   f"X-Amz-Signature={SIGNATURE}, secret_key: {SECRET}"),
    }


@pytest.mark.parametrize("name", list(_exceptions()))
def test_classify_scrubs_the_sdk_error_text(name: str) -> None:
    exc = _exceptions()[name]
    assert leaks(str(exc)), "the premise: the raw text carries secrets"
    # When the sender classifies the failure
    result = classify(exc, known=(KEY_ID, SECRET))
    # Then the message it records and returns carries none of it
    assert not result.ok
    assert leaks(result.error_message) == [], result.error_message
    assert leaks(result.error_code) == []


def test_classify_scrubs_key_ids_it_was_not_told_about() -> None:
    # (the platform's own credentials come from the environment: the sender does not know them)
    result = classify(real_signing_error())
    assert leaks(result.error_message) == [], result.error_message


def test_a_batch_entry_error_is_scrubbed() -> None:
    response = {"Failed": [{"Id": "0", "Code": "InvalidParameterValue", "SenderFault": True,
                            "Message": f"bad attribute Credential={KEY_ID}/x Signature={SIGNATURE}"}]}
    [result] = batch_results(response, 1)
    assert leaks(result.error_message) == [], result.error_message


@pytest.mark.parametrize("sender", [SqsSender, SnsSender])
@pytest.mark.parametrize("region", ["us-east-1\n", "us-east-1\r", "us east 1"])
def test_a_sender_never_raises_for_a_bad_region_and_never_leaks(sender: Any, region: str) -> None:
    # Given a destination stored with a region boto3 cannot use (a row from before validation
    # was fixed), on an endpoint nothing listens on
    target = ("http://127.0.0.1:9/123456789012/q" if sender is SqsSender
              else "arn:aws:sns:us-east-1:123456789012:t")
    destination = Destination("SQS" if sender is SqsSender else "SNS", target, region, KEY_ID,
                              SECRET)
    # When a message and a batch are sent
    one = sender().send(destination, OutgoingMessage("{}", {"tenant": "acme"}))
    many = sender().send_batch(destination, [OutgoingMessage("{}", {"tenant": "acme"})] * 2)
    # Then each is a failed result (not an exception) whose text carries no credential
    for result in [one, *many]:
        assert not result.ok
        assert leaks(result.error_message) == [], result.error_message


def test_scrub_keeps_ordinary_error_text() -> None:
    text = "An error occurred (AWS.SimpleQueueService.NonExistentQueue): The queue does not exist."
    assert scrub(text) == text
    assert scrub("network error") == "network error"


def test_a_log_line_never_carries_a_credential_or_signature() -> None:
    # Given a log record quoting an SDK exception (message and traceback)
    exc = real_signing_error()
    try:
        raise exc
    except Exception:  # noqa: BLE001
        import sys

        record = logging.LogRecord("delivery", logging.ERROR, __file__, 1,
                                   "send failed: %s", (exc,), sys.exc_info())
    # When the JSON formatter writes it
    line = JsonFormatter().format(record)
    # Then the line carries neither the key id nor the signature
    assert leaks(line) == [], line
    assert "send failed" in line and "HTTPClientError" in line
