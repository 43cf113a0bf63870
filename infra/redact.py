"""Scrub what an SDK's error text may carry: signed headers, credentials, signatures.

botocore puts whatever the HTTP layer refused into its exception text: a region with a newline
made ``http.client`` refuse the ``Authorization`` header, and boto3's error repeated it (the
access key id, the credential scope, the signed headers and the signature). Such text reaches
error messages, the attempt log and log lines only through ``scrub``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

# An Authorization header value, from its scheme to the end of the quoted value (or the text).
_AUTH_VALUE = re.compile(r"AWS4-HMAC-SHA256\b[^'\"]*", re.ASCII)
# name=value / name: value / 'name': 'value' for names that carry credentials or signatures.
_SECRETISH = re.compile(
    r"(?i)(\b(?:authorization|credential|signature|signedheaders|x-amz-[a-z0-9-]+|"
    r"[a-z_-]*(?:secret|token|password|access[_-]?key)[a-z_-]*)\b['\"]?\s*[:=]\s*b?['\"]?)"
    r"([^'\"\s,;&)]+)", re.ASCII)
# AWS access key ids (and the other unique ids of the same shape: AIDA, AROA, ...).
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)"
                     r"[A-Z0-9]{12,}\b", re.ASCII)
_SIGNATURE = re.compile(r"\b[0-9a-f]{64}\b", re.ASCII)  # a SigV4 signature (hex SHA-256)
# Text without any of these needs no scrubbing (the common case: checked by substring, cheaply).
_MARKERS = ("AWS4-", "redential", "ignature", "X-Amz", "x-amz", "X-AMZ", "uthorization",
            "UTHORIZATION", "ecret", "ECRET", "oken", "OKEN", "ccess_key", "ccessKey", "ccess-key",
            "ccess key", "ccess Key", "ccesskey", "ACCESS", "assword",
            "AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "APKA", "AROA",
            "ASCA")
_MARKER = re.compile("|".join(re.escape(m) for m in _MARKERS))  # one C-level pass


def needs_scrub(text: str) -> bool:
    """False when ``text`` holds nothing ``scrub`` would take out (but ``known`` values)."""
    return _MARKER.search(text) is not None


def scrub(text: str, known: Iterable[str | None] = ()) -> str:
    """``text`` without the values of ``known`` (e.g. a destination's key id and secret), any
    Authorization header value, credential, signature, X-Amz-* header value or key id."""
    for value in known:
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    if not needs_scrub(text):
        return text
    text = _AUTH_VALUE.sub("AWS4-HMAC-SHA256 " + REDACTED, text)
    text = _SECRETISH.sub(lambda m: m.group(1) + REDACTED, text)
    text = _KEY_ID.sub(REDACTED, text)
    return _SIGNATURE.sub(REDACTED, text)
