"""/api/v1/jobs: notification jobs (CRUD, soft delete, run history, run now)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, g
from pydantic import ValidationError

from api.events import valid_event_id
from api.http import ApiError, json_body, json_response, request_body, validation_details
from api.paging import PageParams, cipher, decode_cursor, page_of, quota_error
from api.security import require
from infra.broker.dispatch import BrokerUnavailable, enqueue_runs
from infra.db import UnitOfWork
from jobs.contract import JobError, JobExists, JobIn, JobRuns, RunQueued
from jobs.models import RunStatus
from jobs.quotas import check_jobs
from jobs.repository import (
    create_job,
    delete_job,
    get_job,
    list_jobs,
    list_runs,
    mark_enqueued,
    run_now,
    run_to_api,
    to_api,
    update_job,
)
from tenants.quotas import QuotaExceeded

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__)
BASE = "/api/v1/jobs"


def _runtime() -> Any:
    return current_app.extensions["ec.runtime"]


def _parse(body: Any) -> JobIn:
    try:
        return JobIn.model_validate(body)
    except ValidationError as exc:
        details = validation_details(exc)
        for d in details:
            if d["field"] == "body" and d["message"].startswith("a job needs a schedule"):
                d["field"] = "schedule"
        raise ApiError(400, "invalid_job", "the job is invalid", details) from None


def _check_id(value: str) -> None:
    if not valid_event_id(value):
        raise _not_found()


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such job")


def _domain(exc: JobError) -> ApiError:
    status, code = (409, "conflict") if isinstance(exc, JobExists) else (400, "invalid_job")
    return ApiError(status, code, str(exc), [{"field": exc.field or "body", "message": str(exc),
                                              "type": code}])


@bp.post(BASE)
@require("jobs")
def create() -> Response:
    data = _parse(json_body())
    with UnitOfWork(_runtime().sessions, write=True) as uow:
        try:
            check_jobs(uow.session, g.principal.tenant, _runtime().settings.quotas)
            job = create_job(uow.session, g.principal.tenant, data)
        except JobError as exc:
            raise _domain(exc) from None
        except QuotaExceeded as exc:
            raise quota_error(exc) from None
        uow.commit()
        body = to_api(job).model_dump(mode="json")
    return json_response(body, 201, {"Location": f"{BASE}/{body['id']}"})


@bp.put(f"{BASE}/<string:job_id>")
@require("jobs")
def update(job_id: str) -> Response:
    _check_id(job_id)
    data = _parse(json_body())
    if data.id is not None and data.id != job_id:
        raise ApiError(400, "id_mismatch", "a job's id cannot change",
                       [{"field": "id", "message": "must equal the path id", "type": "mismatch"}])
    with UnitOfWork(_runtime().sessions, write=True) as uow:
        job = update_job(uow.session, g.principal.tenant, job_id, data)
        if job is None:
            raise _not_found()
        uow.commit()
        return json_response(to_api(job).model_dump(mode="json"))


def _delete(job_id: str) -> Response:
    _check_id(job_id)
    with UnitOfWork(_runtime().sessions, write=True) as uow:
        if not delete_job(uow.session, g.principal.tenant, job_id):
            raise _not_found()
        uow.commit()
    return Response(status=204)


@bp.delete(f"{BASE}/<string:job_id>")
@require("jobs")
def delete(job_id: str) -> Response:
    _check_id(job_id)
    return _delete(job_id)


@bp.post(f"{BASE}/<string:job_id>")
@require("jobs")
def delete_by_seed_post(job_id: str) -> Response:
    """Seed 002's delete: ``POST /api/v1/jobs/{JobId}`` with an empty body or none. A body is a
    400 and deletes nothing: a client that meant to create or update a job here must not lose it."""
    _check_id(job_id)
    if request_body(media=None).strip():
        raise ApiError(400, "body_not_allowed",
                       "POST /api/v1/jobs/{id} deletes the job and takes no body: create a job "
                       "with POST /api/v1/jobs, update one with PUT /api/v1/jobs/{id}",
                       [{"field": "body", "message": "must be empty", "type": "not_allowed"}])
    return _delete(job_id)


@bp.post(f"{BASE}/<string:job_id>/delete")
@require("jobs")
def delete_by_post(job_id: str) -> Response:
    _check_id(job_id)
    return _delete(job_id)


class ListParams(PageParams):
    include_deleted: bool = False


@bp.get(BASE)
@require("jobs", query=ListParams)
def list_all() -> Response:
    params = g.query
    assert isinstance(params, ListParams)
    with _runtime().sessions() as session:
        jobs = list_jobs(session, g.principal.tenant, include_deleted=params.include_deleted,
                         from_pk=decode_cursor("job", params.from_id),
                         limit=params.per_page + 1 if params.per_page else None)
        jobs, link = page_of(jobs, params.per_page, "job")
        return json_response([to_api(j).model_dump(mode="json") for j in jobs], headers=link)


@bp.get(f"{BASE}/<string:job_id>")
@require("jobs")
def get_one(job_id: str) -> Response:
    _check_id(job_id)
    with _runtime().sessions() as session:
        job = get_job(session, g.principal.tenant, job_id)
        if job is None:
            raise _not_found()
        return json_response(to_api(job).model_dump(mode="json"))


@bp.get(f"{BASE}/<string:job_id>/runs")
@require("jobs")
def runs(job_id: str) -> Response:
    _check_id(job_id)
    with _runtime().sessions() as session:
        job = get_job(session, g.principal.tenant, job_id)
        if job is None:
            raise _not_found()
        ids = cipher()
        body = JobRuns(runs=[run_to_api(r).model_copy(update={"id": ids.encode("run", r.id)})
                             for r in list_runs(session, job)])
        return json_response(body.model_dump(mode="json"))


@bp.post(f"{BASE}/<string:job_id>/run")
@require("jobs")
def run(job_id: str) -> Response:
    _check_id(job_id)
    runtime = _runtime()
    with UnitOfWork(runtime.sessions, write=True) as uow:
        job = get_job(uow.session, g.principal.tenant, job_id)
        if job is None:
            raise _not_found()
        if job.deleted or not job.is_active:
            raise ApiError(409, "inactive", "a deleted or inactive job does not run")
        run_id = run_now(uow.session, job)
        uow.commit()  # before the enqueue: the notify pool must find the run
    try:
        enqueue_runs(runtime.broker, [run_id])
    except BrokerUnavailable as exc:
        # The run is committed: the scheduler re-sends a run left unsent for
        # EC_SCHEDULER_RESEND_AFTER_SECONDS. Retrying would start a second run.
        log.warning("run %s deferred to the scheduler: %s", run_id, exc)
        return json_response(RunQueued(run_id=cipher().encode("run", run_id), status="deferred")
                             .model_dump(mode="json"), 202)
    with UnitOfWork(runtime.sessions, write=True) as uow:
        mark_enqueued(uow.session, [run_id])
        uow.commit()
    return json_response(RunQueued(run_id=cipher().encode("run", run_id),
                                   status=RunStatus.QUEUED).model_dump(mode="json"), 202)
