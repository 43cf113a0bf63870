"""Bearer tokens, the X-TWC-Tenant header, scopes, tenant isolation and the token endpoint."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest
from sqlalchemy import select

from tenants.auth import SCOPES, Credentials, check_secret, create_tenant, mint_token, verify_token
from tenants.models import ApiClient
from tests.conftest import SECRET, Caller, as_posted, drain, mint, order_event
from tests.support.events import assert_error, stored_total


def assert_oauth_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    """The token endpoint's error in the OAuth 2.0 form (RFC 6749 section 5.2), not cached."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == code
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert resp.headers["Cache-Control"] == "no-store"
    return dict(body)

ALL_SCOPES = " ".join(sorted(SCOPES))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": "eventcollector", "sub": "test", "tenant": "acme",
            "scope": ALL_SCOPES, "iat": now, "nbf": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


BAD_TOKENS = {
    "garbage": lambda: "not-a-jwt",
    "three garbage parts": lambda: "aaa.bbb.ccc",
    "signed with another key": lambda: mint_token(
        "another-signing-secret-" + "y" * 32, tenant="acme", client_id="x",
        scopes=frozenset(SCOPES), ttl_seconds=600),
    "expired": lambda: mint_token(
        SECRET, tenant="acme", client_id="x", scopes=frozenset(SCOPES), ttl_seconds=60,
        now=time.time() - 7200),
    "alg none": lambda: jwt.encode(claims(), None, algorithm="none"),
    "alg none, signature kept": lambda: (
        jwt.encode(claims(), None, algorithm="none")
        + mint("acme").rsplit(".", 1)[1]),
    "HS512 with the right key": lambda: jwt.encode(claims(), SECRET, algorithm="HS512"),
    "future iat": lambda: mint_token(
        SECRET, tenant="acme", client_id="x", scopes=frozenset(SCOPES), ttl_seconds=7200,
        now=time.time() + 3600),
    "future iat, no nbf": lambda: jwt.encode(
        claims(iat=int(time.time()) + 3600, nbf=None), SECRET, algorithm="HS256"),
    "wrong issuer": lambda: jwt.encode(claims(iss="someone-else"), SECRET, algorithm="HS256"),
    "no exp": lambda: jwt.encode(claims(exp=None), SECRET, algorithm="HS256"),
    "no tenant claim": lambda: jwt.encode(claims(tenant=None), SECRET, algorithm="HS256"),
    "tenant claim not a string": lambda: jwt.encode(claims(tenant=["acme"]), SECRET,
                                                    algorithm="HS256"),
}


@pytest.mark.filterwarnings("ignore:The HMAC key is .* below the minimum recommended length")
@pytest.mark.parametrize("make_token", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
def test_a_bad_token_is_a_401_and_nothing_is_accepted(acme: Caller, make_token: Any) -> None:
    # Given a token that is malformed, forged, expired, unsigned or not yet valid
    headers = {"Authorization": f"Bearer {make_token()}", "X-TWC-Tenant": "acme"}
    # When it is used to post an event and to read
    post = acme.client.post("/api/v1/events", json=order_event(id="bad-tok"), headers=headers)
    read = acme.client.get("/api/v1/events", headers=headers)
    # Then both are 401 with a Bearer challenge
    for resp in (post, read):
        assert_error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # And the event was not accepted
    assert stored_total(acme) == 0
    assert acme.get("/api/v1/events/bad-tok").status_code == 404


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", "Token abc",
                                           "Basic " + base64.b64encode(b"a:b").decode()])
def test_a_missing_bearer_token_is_a_401(acme: Caller, authorization: str | None) -> None:
    # Given no Authorization header, an empty one, or another scheme
    headers = {"X-TWC-Tenant": "acme"}
    if authorization is not None:
        headers["Authorization"] = authorization
    # When an event is posted
    resp = acme.client.post("/api/v1/events", json=order_event(), headers=headers)
    # Then 401
    error = assert_error(resp, 401, "unauthorized")
    assert "Bearer" in error["message"]
    assert stored_total(acme) == 0


def test_expired_token_says_it_expired(acme: Caller) -> None:
    # Given a token that expired an hour ago
    token = mint_token(SECRET, tenant="acme", client_id="x", scopes=frozenset(SCOPES),
                       ttl_seconds=60, now=time.time() - 7200)
    # When it is used
    resp = acme.client.get("/api/v1/events",
                           headers={"Authorization": f"Bearer {token}", "X-TWC-Tenant": "acme"})
    # Then the message says so (and never echoes the token)
    error = assert_error(resp, 401, "unauthorized")
    assert "expired" in error["message"]
    assert token not in resp.get_data(as_text=True)


def test_the_bearer_scheme_is_case_insensitive(acme: Caller) -> None:
    # Given "bearer" in lower case
    headers = {"Authorization": f"bearer {acme.token}", "X-TWC-Tenant": "acme"}
    # When an event is posted
    resp = acme.client.post("/api/v1/events", json=order_event(), headers=headers)
    # Then it is accepted
    assert resp.status_code == 201


def test_missing_tenant_header_is_a_400_naming_it(acme: Caller) -> None:
    # Given a valid token but no X-TWC-Tenant header
    headers = {"Authorization": f"Bearer {acme.token}"}
    # When an event is posted and the list read
    post = acme.client.post("/api/v1/events", json=order_event(), headers=headers)
    read = acme.client.get("/api/v1/events", headers=headers)
    # Then both are 400 naming the header
    for resp in (post, read):
        error = assert_error(resp, 400, "missing_tenant")
        assert [d["field"] for d in error["details"]] == ["X-TWC-Tenant"]
    assert stored_total(acme) == 0


@pytest.mark.parametrize("tenant", ["ac me", "-acme", "acme/../globex", "a" * 65])
def test_malformed_tenant_header_is_a_400(acme: Caller, tenant: str) -> None:
    # Given a malformed X-TWC-Tenant
    headers = {"Authorization": f"Bearer {acme.token}", "X-TWC-Tenant": tenant}
    # When an event is posted
    resp = acme.client.post("/api/v1/events", json=order_event(), headers=headers)
    # Then 400 naming the header
    error = assert_error(resp, 400, "invalid_tenant")
    assert [d["field"] for d in error["details"]] == ["X-TWC-Tenant"]


def test_tenant_header_other_than_the_tokens_tenant_is_a_403(acme: Caller) -> None:
    # Given acme's token and the header naming globex
    headers = {"Authorization": f"Bearer {acme.token}", "X-TWC-Tenant": "globex"}
    # When it posts and reads
    post = acme.client.post("/api/v1/events", json=order_event(id="x-1"), headers=headers)
    read = acme.client.get("/api/v1/events", headers=headers)
    # Then 403 tenant_mismatch, and nothing was stored for either tenant
    for resp in (post, read):
        assert_error(resp, 403, "tenant_mismatch")
    assert stored_total(acme) == 0
    assert stored_total(Caller(acme.client, "globex", mint("globex"))) == 0


def test_a_token_without_events_write_cannot_post(acme: Caller) -> None:
    # Given an acme token holding only events:read
    reader = Caller(acme.client, "acme", mint("acme", frozenset({"events:read"})))
    # When it posts an event and a batch
    single = reader.post_event(order_event())
    batch = reader.client.post("/api/v1/events/batch", json={"events": [order_event()]},
                               headers=reader.headers())
    # Then both are 403 naming the scope, and it can still read
    for resp in (single, batch):
        error = assert_error(resp, 403, "insufficient_scope")
        assert "events:write" in error["message"]
    assert reader.get("/api/v1/events").status_code == 200
    assert stored_total(acme) == 0


def test_a_token_without_events_read_cannot_read(acme: Caller) -> None:
    # Given an acme token holding only events:write, and one accepted event
    writer = Caller(acme.client, "acme", mint("acme", frozenset({"events:write"})))
    event_id = writer.post_event(order_event()).get_json()["id"]
    drain(acme.client.application)
    # When it reads through every read route
    paths = ["/api/v1/events", f"/api/v1/events/{event_id}", "/api/event", "/api/event/1"]
    # Then each is 403 naming events:read
    for path in paths:
        error = assert_error(writer.get(path), 403, "insufficient_scope")
        assert "events:read" in error["message"]


# --- tenant isolation --------------------------------------------------------------------------

def test_another_tenants_event_is_a_404_like_an_unknown_one(acme: Caller, globex: Caller) -> None:
    # Given an acme event, looked at before and after it is stored
    event_id = acme.post_event(order_event(id="acme-secret")).get_json()["id"]
    ol_headers = {"Authorization": f"Bearer {globex.token}"}
    unknown = globex.get("/api/v1/events/no-such-event")
    for stage in ("accepted", "stored"):
        if stage == "stored":
            drain(acme.client.application)
        # When globex asks for it by id, through both APIs, and by sequence number
        v1 = globex.get(f"/api/v1/events/{event_id}")
        ol = globex.client.get(f"/api/event/{event_id}", headers=ol_headers)
        ol_seq = globex.client.get("/api/event/1", headers=ol_headers)
        # Then it is 404, with the very body an unknown id gets
        for resp in (v1, ol, ol_seq):
            assert_error(resp, 404, "not_found")
            assert resp.get_json() == unknown.get_json(), stage
    # And acme itself finds it by both ids
    assert acme.get(f"/api/v1/events/{event_id}").status_code == 200
    assert acme.client.get("/api/event/1",
                           headers={"Authorization": f"Bearer {acme.token}"}).status_code == 200


def test_lists_never_show_another_tenants_events(acme: Caller, globex: Caller) -> None:
    # Given two acme events and one globex event
    acme.post_event(order_event(id="a-1"))
    acme.post_event(order_event(id="a-2", entity_id="shared-entity"))
    globex.post_event(order_event(id="g-1", entity_id="shared-entity"))
    drain(acme.client.application)
    # When each tenant lists, filtered or not, through both APIs
    def v1(caller: Caller, **params: Any) -> list[str]:
        body = caller.get("/api/v1/events", query_string=params).get_json()
        return [e["id"] for e in body["events"]] + [f"total={body['total']}"]

    def ol(caller: Caller) -> list[str]:
        body = caller.client.get("/api/event",
                                 headers={"Authorization": f"Bearer {caller.token}"}).get_json()
        return [e["uuid"] for e in body["events"]] + [f"total={body['total']}"]

    # Then each sees its own only
    assert v1(acme) == ["a-1", "a-2", "total=2"]
    assert v1(globex) == ["g-1", "total=1"]
    assert v1(acme, entity_id="shared-entity") == ["a-2", "total=1"]
    assert v1(globex, entity_id="shared-entity") == ["g-1", "total=1"]
    assert v1(globex, from_id=1, direction="DESC") == ["total=1"]
    assert ol(acme) == ["a-1", "a-2", "total=2"]
    assert ol(globex) == ["g-1", "total=1"]


def test_open_loyalty_routes_take_the_tenant_from_the_token(acme: Caller) -> None:
    # Given an acme event
    acme.post_event(order_event(id="ol-1"))
    drain(acme.client.application)
    bearer = {"Authorization": f"Bearer {acme.token}"}
    # When /api/event is read with the token only, with a matching and a mismatching header
    plain = acme.client.get("/api/event", headers=bearer)
    matching = acme.client.get("/api/event", headers={**bearer, "X-TWC-Tenant": "acme"})
    mismatching = acme.client.get("/api/event", headers={**bearer, "X-TWC-Tenant": "globex"})
    no_token = acme.client.get("/api/event")
    # Then the token alone is enough, a contradicting header is refused, no token is a 401
    assert plain.status_code == 200 and plain.get_json()["total"] == 1
    assert matching.get_json() == plain.get_json()
    assert_error(mismatching, 403, "tenant_mismatch")
    assert_error(no_token, 401, "unauthorized")


# --- token endpoint ----------------------------------------------------------------------------

@pytest.fixture
def shop(embedded: Any) -> Credentials:
    """A tenant created the way the CLI does, with its client credentials."""
    with embedded.extensions["ec.runtime"].sessions() as session:
        creds = create_tenant(session, "shop")
        session.commit()
        return creds


def token_request(client: Any, **form: str) -> Any:
    return client.post("/api/v1/auth/token", data=form)


def test_client_credentials_grant_returns_a_usable_token(
    embedded: Any, shop: Credentials
) -> None:
    client = embedded.test_client()
    # Given a tenant's client id and secret
    # When they are exchanged, form-encoded
    resp = token_request(client, grant_type="client_credentials", client_id=shop.client_id,
                         client_secret=shop.client_secret)
    # Then 200 with a Bearer token for every scope, not cacheable
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 3600, ALL_SCOPES)
    assert resp.headers["Cache-Control"] == "no-store"
    principal = verify_token(SECRET, body["access_token"])
    assert (principal.tenant, principal.client_id, principal.scopes) \
        == ("shop", shop.client_id, frozenset(SCOPES))
    # And the token posts and reads events of that tenant
    caller = Caller(client, "shop", body["access_token"])
    created = caller.post_event(order_event(id="shop-1"))
    assert created.status_code == 201
    assert as_posted(caller.get("/api/v1/events/shop-1").get_json()) == created.get_json()
    # But not as another tenant
    assert_error(Caller(client, "acme", body["access_token"]).post_event(order_event()),
                 403, "tenant_mismatch")


def test_http_basic_client_credentials_work(embedded: Any, shop: Credentials) -> None:
    client = embedded.test_client()
    # Given the client credentials in an HTTP Basic header
    basic = base64.b64encode(f"{shop.client_id}:{shop.client_secret}".encode()).decode()
    # When the grant is requested with them
    resp = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials"},
                       headers={"Authorization": f"Basic {basic}"})
    # Then a token for the tenant comes back and works
    assert resp.status_code == 200, resp.get_data(as_text=True)
    token = resp.get_json()["access_token"]
    assert verify_token(SECRET, token).tenant == "shop"
    assert Caller(client, "shop", token).post_event(order_event()).status_code == 201


def test_json_token_request_works(embedded: Any, shop: Credentials) -> None:
    # Given the grant as a JSON object
    # When it is posted
    resp = embedded.test_client().post("/api/v1/auth/token", json={
        "grant_type": "client_credentials", "client_id": shop.client_id,
        "client_secret": shop.client_secret})
    # Then a token comes back
    assert resp.status_code == 200
    assert verify_token(SECRET, resp.get_json()["access_token"]).tenant == "shop"


@pytest.mark.parametrize("case", ["wrong secret", "unknown client", "no secret",
                                  "other tenant's secret", "bad basic"])
def test_bad_client_credentials_are_a_401(embedded: Any, shop: Credentials, case: str) -> None:
    client = embedded.test_client()
    with embedded.extensions["ec.runtime"].sessions() as session:
        other = create_tenant(session, "other-shop")
        session.commit()
    form = {"grant_type": "client_credentials", "client_id": shop.client_id,
            "client_secret": shop.client_secret}
    headers = {}
    # Given credentials that do not authenticate
    if case == "wrong secret":
        form["client_secret"] = shop.client_secret[:-1] + ("A" if shop.client_secret[-1] != "A"
                                                           else "B")
    elif case == "unknown client":
        form["client_id"] = "ec_000000000000000000000000"
    elif case == "no secret":
        del form["client_secret"]
    elif case == "other tenant's secret":
        form["client_secret"] = other.client_secret
    else:
        del form["client_id"], form["client_secret"]
        headers["Authorization"] = "Basic !!!not-base64"
    # When they are exchanged
    resp = client.post("/api/v1/auth/token", data=form, headers=headers)
    # Then 401 invalid_client (the OAuth form, with a Basic challenge) and no token
    assert_oauth_error(resp, 401, "invalid_client")
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert "access_token" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "", None])
def test_other_grant_types_are_a_400(embedded: Any, shop: Credentials,
                                     grant_type: str | None) -> None:
    # Given valid credentials but another (or no) grant_type
    form = {"client_id": shop.client_id, "client_secret": shop.client_secret}
    if grant_type is not None:
        form["grant_type"] = grant_type
    # When posted
    resp = token_request(embedded.test_client(), **form)
    # Then 400 unsupported_grant_type naming grant_type
    error = assert_oauth_error(resp, 400, "unsupported_grant_type")
    assert "grant_type" in error["error_description"]


def test_unknown_scope_is_a_400(embedded: Any, shop: Credentials) -> None:
    # Given a request for a scope that does not exist
    # When posted
    resp = token_request(embedded.test_client(), grant_type="client_credentials",
                         client_id=shop.client_id, client_secret=shop.client_secret,
                         scope="events:read admin")
    # Then 400 invalid_scope naming it
    error = assert_oauth_error(resp, 400, "invalid_scope")
    assert "admin" in error["error_description"]


def test_a_requested_subset_of_scopes_is_honoured(embedded: Any, shop: Credentials) -> None:
    client = embedded.test_client()
    # Given a token requested with scope events:read only
    resp = token_request(client, grant_type="client_credentials", client_id=shop.client_id,
                         client_secret=shop.client_secret, scope="events:read")
    assert resp.status_code == 200
    assert resp.get_json()["scope"] == "events:read"
    caller = Caller(client, "shop", resp.get_json()["access_token"])
    # When it reads and posts
    read = caller.get("/api/v1/events")
    post = caller.post_event(order_event())
    # Then reading works and posting is a 403
    assert read.status_code == 200
    assert_error(post, 403, "insufficient_scope")


def test_a_token_request_that_is_not_a_form_or_json_is_a_415(
    embedded: Any, shop: Credentials
) -> None:
    # Given the grant as text/plain
    # When posted
    resp = embedded.test_client().post(
        "/api/v1/auth/token", data="grant_type=client_credentials",
        headers={"Content-Type": "text/plain"})
    # Then 415, an invalid_request in the OAuth form
    assert "form" in assert_oauth_error(resp, 415, "invalid_request")["error_description"]


def test_the_client_secret_is_stored_hashed(embedded: Any, shop: Credentials) -> None:
    # Given a tenant just created
    # When its client row is read from the database
    with embedded.extensions["ec.runtime"].sessions() as session:
        row = session.execute(
            select(ApiClient).where(ApiClient.client_id == shop.client_id)).scalar_one()
        stored = row.secret_hash
        tenant = row.tenant
    # Then it holds a salted scrypt hash, never the secret
    assert tenant == "shop"
    assert stored != shop.client_secret
    assert shop.client_secret not in stored
    assert stored.startswith("scrypt$")
    assert check_secret(shop.client_secret, stored)
    assert not check_secret(shop.client_secret + "x", stored)


def _restrict_client(app: Any, client_id: str, *, scopes: str | None = None,
                     active: bool | None = None) -> None:
    with app.extensions["ec.runtime"].sessions() as session:
        row = session.get(ApiClient, client_id)
        if scopes is not None:
            row.scopes = scopes
        if active is not None:
            row.active = active
        session.commit()


def test_a_deactivated_client_gets_no_token(embedded: Any, shop: Credentials) -> None:
    # Given a client that was deactivated
    _restrict_client(embedded, shop.client_id, active=False)
    # When it asks for a token with its right secret
    resp = token_request(embedded.test_client(), grant_type="client_credentials",
                         client_id=shop.client_id, client_secret=shop.client_secret)
    # Then 401
    assert_oauth_error(resp, 401, "invalid_client")


def test_a_client_cannot_request_scopes_it_does_not_hold(
    embedded: Any, shop: Credentials
) -> None:
    # Given a client holding events:read only
    _restrict_client(embedded, shop.client_id, scopes="events:read")
    # When it asks for events:write
    resp = token_request(embedded.test_client(), grant_type="client_credentials",
                         client_id=shop.client_id, client_secret=shop.client_secret,
                         scope="events:read events:write")
    # Then 400 invalid_scope naming the scope it lacks
    error = assert_oauth_error(resp, 400, "invalid_scope")
    assert "events:write" in error["error_description"]


def test_omitting_scope_grants_all_of_the_clients_scopes(
    embedded: Any, shop: Credentials
) -> None:
    # Given a client holding events:read only
    _restrict_client(embedded, shop.client_id, scopes="events:read")
    # When it asks for a token without a scope
    resp = token_request(embedded.test_client(), grant_type="client_credentials",
                         client_id=shop.client_id, client_secret=shop.client_secret)
    # Then it gets a token for events:read
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["scope"] == "events:read"


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    import tenants.auth

    # Given a token valid for 60 s, verified once (and so remembered)
    token = mint_token(SECRET, tenant="acme", client_id="x", scopes=frozenset(SCOPES),
                       ttl_seconds=60)
    assert verify_token(SECRET, token).tenant == "acme"
    assert verify_token(SECRET, token).tenant == "acme"
    # When the clock passes its expiry (and the 30 s tolerance)
    later = time.time() + 60 + 31
    monkeypatch.setattr(tenants.auth.time, "time", lambda: later)
    # Then the remembered token is refused as expired and forgotten (PyJWT, which reads the
    # real clock, checks it again from then on)
    with pytest.raises(tenants.auth.InvalidToken, match="expired"):
        verify_token(SECRET, token)
    assert (SECRET, token) not in tenants.auth._VERIFIED


def test_a_remembered_token_is_not_accepted_under_another_key_or_altered() -> None:
    import tenants.auth

    token = mint_token(SECRET, tenant="acme", client_id="x", scopes=frozenset(SCOPES),
                       ttl_seconds=60)
    assert verify_token(SECRET, token).tenant == "acme"
    # Then the same token under another signing key is refused
    with pytest.raises(tenants.auth.InvalidToken):
        verify_token("another-signing-key-of-enough-length-0123456789", token)
    # And a token with its signature altered is refused
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    altered = f"{head}.{payload}.{signature[:middle]}{swapped}{signature[middle + 1:]}"
    with pytest.raises(tenants.auth.InvalidToken):
        verify_token(SECRET, altered)


def test_the_remembered_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import tenants.auth

    monkeypatch.setattr(tenants.auth, "_VERIFIED_MAX", 3)
    tokens = [mint_token(SECRET, tenant="acme", client_id=f"c{i}", scopes=frozenset(SCOPES),
                         ttl_seconds=60) for i in range(5)]
    for token in tokens:
        verify_token(SECRET, token)
    assert len(tenants.auth._VERIFIED) == 3
    assert (SECRET, tokens[-1]) in tenants.auth._VERIFIED
    assert (SECRET, tokens[0]) not in tenants.auth._VERIFIED
