"""A standard OAuth 2.0 client library (authlib) against the token endpoint, served over HTTP:
it gets a token, and it reads the endpoint's errors (RFC 6749 section 5.2). The rest of the API
answers 401 with its own error shape and a Bearer challenge (RFC 6750 section 3)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from werkzeug.serving import make_server

from tenants.auth import Credentials, create_tenant
from tests.conftest import free_port, order_event


@pytest.fixture
def served(embedded: Any) -> Iterator[tuple[str, Credentials]]:
    with embedded.extensions["ec.runtime"].sessions() as session:
        creds = create_tenant(session, "oauth-shop")
        session.commit()
    port = free_port()
    server = make_server("127.0.0.1", port, embedded, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", creds
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_authlib_gets_a_token_that_the_api_takes(served: tuple[str, Credentials],
                                                 auth_method: str) -> None:
    base, creds = served
    session = OAuth2Session(creds.client_id, creds.client_secret,
                            token_endpoint_auth_method=auth_method)
    token = session.fetch_token(f"{base}/api/v1/auth/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0
    resp = session.post(f"{base}/api/v1/events", json=order_event(),
                        headers={"X-TWC-Tenant": "oauth-shop"}, timeout=10)
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(("change", "code"), [
    ({"client_secret": "wrong"}, "invalid_client"),
    ({"client_id": "ec_000000000000000000000000"}, "invalid_client"),
    ({"scope": "events:read admin"}, "invalid_scope"),
    ({"grant_type": "password"}, "unsupported_grant_type"),
], ids=["wrong-secret", "unknown-client", "unknown-scope", "other-grant"])
def test_authlib_reads_the_endpoints_errors(served: tuple[str, Credentials],
                                            change: dict[str, str], code: str) -> None:
    base, creds = served
    session = OAuth2Session(change.get("client_id", creds.client_id),
                            change.get("client_secret", creds.client_secret),
                            scope=change.get("scope"))
    kwargs: dict[str, Any] = {"grant_type": change.get("grant_type", "client_credentials")}
    if kwargs["grant_type"] == "password":
        kwargs.update(username="u", password="p")
    with pytest.raises(OAuthError) as raised:
        session.fetch_token(f"{base}/api/v1/auth/token", **kwargs)
    # Then the library saw the RFC's error code and a description (nothing of the secret)
    assert raised.value.error == code
    assert raised.value.description
    assert creds.client_secret not in str(raised.value.description)


def test_the_rest_of_the_api_keeps_its_error_shape_with_a_bearer_challenge(
        served: tuple[str, Credentials]) -> None:
    base, _creds = served
    missing = requests.get(f"{base}/api/v1/events", headers={"X-TWC-Tenant": "oauth-shop"},
                           timeout=10)
    wrong = requests.get(f"{base}/api/v1/events", timeout=10,
                         headers={"X-TWC-Tenant": "oauth-shop", "Authorization": "Bearer x.y.z"})
    for resp in (missing, wrong):
        assert resp.status_code == 401
        assert set(resp.json()["error"]) == {"code", "message", "details"}
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
