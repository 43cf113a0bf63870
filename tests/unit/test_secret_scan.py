"""The suite-wide scan (tests/conftest.py) catches a secret in a log line or an HTTP response."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SECRET, scan_response, secrets_in

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzz"
CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.mark.parametrize("body", [
    json.dumps({"accessSecret": AWS_SECRET}),
    json.dumps({"accessSecret": AWS_SECRET}).replace("/", "\\/"),  # JSON-escaped slashes
    "secret=" + AWS_SECRET.replace("/", "%2F"),  # URL-encoded
    f"prefix{SECRET}suffix",
])
def test_a_known_secret_in_a_body_is_reported_without_printing_it(body: str) -> None:
    found = scan_response("response to GET /x", [("Content-Type", "text/plain")], body.encode())
    assert len(found) == 1 and found[0].startswith("response to GET /x: body: ")
    assert AWS_SECRET not in found[0] and SECRET not in found[0]


def test_a_known_secret_in_a_header_is_reported_with_the_header_name() -> None:
    found = scan_response("response to GET /x", [("X-Debug", f"key={SECRET}")], b"{}")
    assert found == [f"response to GET /x: header X-Debug: {SECRET[:4]}…({len(SECRET)} chars)"]


def test_a_minted_client_secret_is_a_secret_and_ordinary_answers_are_not(acme: object) -> None:
    # Given a tenant created through tenants.auth (the embedded fixture creates acme and globex)
    from tests import conftest

    assert conftest._client_secrets, "create_tenant's client secrets are remembered"
    minted = next(iter(conftest._client_secrets))
    # Then that client secret is found in a response, and an access token or an id is not
    assert secrets_in(json.dumps({"client_secret": minted}))
    assert not secrets_in(json.dumps({"access_token": "eyJhbGciOi.x.y", "id": "ec_123"}))


LEAKY_TESTS = '''
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import requests
from flask import Flask

PLANTED = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzz"


def app():
    app = Flask("leaky")
    app.add_url_rule("/body", "body", lambda: {"echo": PLANTED})
    app.add_url_rule("/header", "header", lambda: ("", 204, {"X-Debug": PLANTED}))
    app.add_url_rule("/clean", "clean", lambda: {"ok": True})
    return app


def test_body_leak():
    assert app().test_client().get("/body").status_code == 200


def test_header_leak():
    assert app().test_client().get("/header").status_code == 204


def test_leak_from_a_thread():
    t = threading.Thread(target=lambda: app().test_client().get("/body"))
    t.start()
    t.join()


def test_requests_leak():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = PLANTED.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert requests.get(f"http://127.0.0.1:{server.server_port}/", timeout=5).ok
    finally:
        server.shutdown()


def test_log_leak():
    import logging

    logging.getLogger("leaky").warning("connecting with %s", PLANTED)


def test_clean():
    assert app().test_client().get("/clean").json == {"ok": True}
'''


def test_the_suite_fails_the_test_whose_response_or_log_carries_a_planted_secret(
        pytester: pytest.Pytester) -> None:
    # Given this suite's conftest and tests whose app or server answers with a known secret,
    # or that log it
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    # When they run
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    # Then each test that received the secret fails, naming where it was; the clean one passes
    result.assert_outcomes(passed=1, failed=5)
    out = result.stdout.str()
    summary = out.split("short test summary")[-1]
    for test in ("body_leak", "header_leak", "leak_from_a_thread", "requests_leak", "log_leak"):
        assert f"FAILED test_leaky.py::test_{test} - Failed: 1 secret leak(s)" in summary
    hint = f"wJal…({len(AWS_SECRET)} chars)"
    for line in (f"response to GET /body: body: {hint}",
                 f"response to GET /header: header X-Debug: {hint}",
                 "response to GET http://127.0.0.1:",
                 f"log record leaky: connecting with {hint}"):
        assert line in out
    assert "FAILED test_leaky.py::test_clean" not in summary
    # And the reports name the secret by a hint, never print it (pytest's own captured-log
    # section still shows the log record)
    # section still shows the log record). Counted in the failure reports only: with CI set,
    # pytest prints the short summary's lines whole, so each report shows up there again.
    details = out.split("short test summary")[0]
    reports = [x for x in details.splitlines() if x.startswith(("response to ", "log record "))]
    assert len(reports) == 5 and not [x for x in reports if AWS_SECRET in x]
