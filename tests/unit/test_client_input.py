"""Parsing a client's input never answers 500: every parse of a client value (dates, integers,
enums, booleans, cursors, path ids) is a 400 naming the field, and an unknown query parameter is
a 400 naming it, as an unknown body field already is (issue 11).

The routes come from the app's URL map (as in test_isolation), so a route added later is held to
the same rules without being listed here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import Caller, drain, order_event
from tests.support.routes import PROTECTED, route_id, urls

# conftest's ``embedded`` (and so ``acme``/``globex``) is the StubSender app; ``stub`` its sender.
pytestmark = pytest.mark.embedded("sender")

SUBS = "/api/v1/event-subscription"
JOBS = "/api/v1/jobs"

# Moments Python can write but not move to UTC (the year 9999 west of UTC, the year 1 east of it)
EDGE_MOMENTS = ["9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59.999999-00:01",
                "0001-01-01T00:00:00+23:59", "0001-01-01T00:00:00+01:00"]


@pytest.fixture
def ids(acme: Caller) -> dict[str, list[str]]:
    """acme's resources: an event, a subscription (a role), a job."""
    assert acme.post_event(order_event(id="in-evt-1")).status_code == 201
    drain(acme.client.application)
    sub = {"id": "in-sub-1", "entityType": "ORDER", "subscribeCreate": True, "destination": {
        "type": "SQS", "sqs": {"queueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
                       "credentials": "role", "roleArn": "arn:aws:iam::123456789012:role/ec"}}}
    assert acme.client.post(SUBS, json=sub, headers=acme.headers()).status_code == 201
    job = {"id": "in-job-1", "notification": "REMINDER", "schedule": "0 9 * * *",
           "template_id": "d-1"}
    assert acme.client.post(JOBS, json=job, headers=acme.headers()).status_code == 201
    return {"event_id": ["in-evt-1"], "sub_id": ["in-sub-1"], "job_id": ["in-job-1"]}


def assert_400_naming(resp: Any, field: str) -> dict[str, Any]:
    assert resp.status_code == 400, (field, resp.status_code, resp.get_data(as_text=True))
    error = resp.get_json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert field in [d["field"] for d in error["details"]], (field, error)
    return error


# --- dates at the edge of the range -------------------------------------------------------------

@pytest.mark.parametrize("moment", EDGE_MOMENTS)
@pytest.mark.parametrize(("path", "field"), [
    ("/api/v1/events", "since"), ("/api/v1/events", "until"),
    (f"{SUBS}/in-sub-1/deliveries", "since"),
], ids=["events-since", "events-until", "attempt-log-since"])
def test_a_moment_at_the_edge_of_the_range_is_a_400_naming_it_in_a_query(
        acme: Caller, ids: dict[str, list[str]], path: str, field: str, moment: str) -> None:
    # When a list is read with a moment that cannot be moved to UTC
    resp = acme.get(f"{path}?{field}={quote(moment)}")
    # Then it is a 400 naming the parameter (it was a 500)
    assert_400_naming(resp, field)


@pytest.mark.parametrize("moment", EDGE_MOMENTS)
@pytest.mark.parametrize("field", ["since", "until"])
def test_a_moment_at_the_edge_of_the_range_is_a_400_naming_it_in_a_replay(
        acme: Caller, ids: dict[str, list[str]], field: str, moment: str) -> None:
    window = {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z", field: moment}
    resp = acme.client.post(f"{SUBS}/in-sub-1/replay", json=window, headers=acme.headers())
    assert_400_naming(resp, field)


def test_the_extremes_python_can_move_to_utc_are_accepted(acme: Caller,
                                                          ids: dict[str, list[str]]) -> None:
    resp = acme.get("/api/v1/events?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59.999999Z")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert [e["id"] for e in resp.get_json()["events"]] == ["in-evt-1"]


# --- awkward values for every query parameter --------------------------------------------------

AWKWARD = ["", " ", "\n", "1\n", " 1", "١", "𝟏", "9" * 40, "-" + "9" * 40, "1e3", "0x1f",
           "1_000", "1.5", "true\n", "TRUE", "yes", "null", "ASC\n", "\x00", "%", "é",
           "2024-01-01T00:00:00Z\n", "2024-13-01T00:00:00Z", "2024-02-30", *EDGE_MOMENTS]


def _list_routes() -> list[tuple[str, list[str]]]:
    from api.events import EventListParams
    from api.jobs import ListParams as JobParams
    from api.open_loyalty import OpenLoyaltyParams
    from api.quarantine import QuarantineParams
    from api.subscriptions import AttemptParams
    from api.subscriptions import ListParams as SubParams

    return [("/api/v1/events", list(EventListParams.model_fields)),
            ("/api/event", list(OpenLoyaltyParams.model_fields)),
            (SUBS, list(SubParams.model_fields)),
            (f"{SUBS}/in-sub-1/deliveries", list(AttemptParams.model_fields)),
            (JOBS, list(JobParams.model_fields)),
            ("/api/v1/quarantine", list(QuarantineParams.model_fields))]


@pytest.mark.parametrize(("path", "params"), _list_routes(), ids=lambda v: str(v)[:40])
def test_any_value_of_any_query_parameter_is_a_200_or_a_400_naming_it(
        acme: Caller, ids: dict[str, list[str]], path: str, params: list[str]) -> None:
    failures = []
    for param in params:
        for value in AWKWARD:
            resp = acme.get(f"{path}?{param}={quote(value, safe='')}")
            if resp.status_code == 200:
                continue
            error = (resp.get_json() or {}).get("error", {})
            named = [d.get("field") for d in error.get("details", [])]
            if resp.status_code != 400 or param not in named:
                failures.append((param, value, resp.status_code, named))
    assert failures == []


@pytest.mark.parametrize("segment", ["%00", "a%0A", "%C2%B2", "%D9%A3", "1" * 40, "%F0%9F%98%80",
                                     "a" * 129, "-a", "%20a"])
@pytest.mark.parametrize("path", ["/api/v1/events/{}", "/api/event/{}", SUBS + "/{}",
                                  SUBS + "/{}/deliveries", JOBS + "/{}", JOBS + "/{}/runs"])
def test_an_odd_path_id_is_a_404_never_a_500(acme: Caller, path: str, segment: str) -> None:
    headers = acme.headers()
    if path.startswith("/api/event/"):
        headers = {"Authorization": headers["Authorization"]}
    resp = acme.client.get(path.format(segment), headers=headers)
    assert resp.status_code == 404, (path, segment, resp.get_data(as_text=True))
    assert resp.get_json()["error"]["code"] == "not_found"


# --- unknown query parameters -------------------------------------------------------------------

@pytest.mark.parametrize("route", PROTECTED, ids=route_id)
def test_an_unknown_query_parameter_is_a_400_naming_it(acme: Caller, ids: dict[str, list[str]],
                                                       route: tuple[str, str]) -> None:
    method, rule = route
    headers = acme.headers()
    for url in urls(rule, ids):
        # When the route is called with a parameter it does not know (a typo of a real one)
        resp = acme.client.open(f"{url}?per_pgae=5&x=1", method=method, headers=headers)
        # Then it is a 400 naming both, and nothing else happened
        error = assert_400_naming(resp, "per_pgae")
        assert "x" in [d["field"] for d in error["details"]]
        assert error["code"] == "invalid_query"
        assert "per_pgae" in error["message"]


def test_an_unknown_query_parameter_next_to_valid_ones_is_named_alone(acme: Caller) -> None:
    resp = acme.get("/api/v1/events?per_page=5&entity_name=ORDER&sort_by=id")
    error = assert_400_naming(resp, "sort_by")
    assert [d["field"] for d in error["details"]] == ["sort_by"]
    assert error["details"][0]["type"] == "extra_forbidden"


def test_the_token_endpoint_ignores_unknown_parameters_as_oauth_requires(acme: Caller) -> None:
    # RFC 6749 section 3.2: the authorization server MUST ignore unrecognized request parameters
    resp = acme.client.post("/api/v1/auth/token?audience=x",
                            data={"grant_type": "client_credentials", "client_id": "nobody",
                                  "client_secret": "wrong", "audience": "x"})
    assert resp.status_code == 401, resp.get_data(as_text=True)
