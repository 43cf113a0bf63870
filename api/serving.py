"""The web process's gunicorn worker (``--worker-class api.serving.Worker``).

gevent: one greenlet per connection, so a connection that sends slowly, or sits idle between
requests, costs a few kilobytes and not a thread. Two deadlines bound what a client can hold:

- headers: a request's headers (the first on a connection as well as the next ones on a
  kept-alive connection) must arrive within ``--keep-alive`` seconds, else the connection is
  closed without an answer (gunicorn's own ``timeout_ctx``);
- body: the whole body must arrive within ``EC_REQUEST_BODY_TIMEOUT_SECONDS`` of the headers,
  else the request is answered 408 in the API's error shape and the connection is closed.

Monkey patching: ``GeventWorker.init_process`` patches the standard library in the worker
process right after the fork, before the application (and so psycopg, redis-py, SQLAlchemy) is
imported: nothing here or in ``config/gunicorn.py`` imports them. psycopg picks its wait
function when it is first imported; ``check_green`` refuses to serve if it picked the C one,
which would block every greenlet of the worker while one waits for PostgreSQL.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker
from werkzeug.exceptions import RequestTimeout

from config.settings import request_body_timeout


class BodyTimeout(RequestTimeout):
    """The body did not arrive in time (rendered 408 by the API's error handlers)."""


class DeadlineBody:
    """A request body whose reads must all complete before ``deadline`` (``time.monotonic``).

    A read that would end past it raises ``BodyTimeout``, and the request is marked so the
    connection is closed after the answer (what is left of the body is never read)."""

    def __init__(self, body: Any, deadline: float, seconds: float, req: Any = None) -> None:
        self._body = body
        self._deadline = deadline
        self._seconds = seconds
        self._req = req
        self.expired = False

    def _call(self, method: str, *args: Any) -> Any:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or self.expired:
            self._expire()
        if remaining == float("inf"):
            return getattr(self._body, method)(*args)
        timer = gevent.Timeout(remaining)
        try:
            with timer:
                return getattr(self._body, method)(*args)
        except gevent.Timeout as exc:
            if exc is not timer:  # another deadline's (not ours): let its owner handle it
                raise
            self._expire()

    def release(self) -> None:
        """No deadline any more (the answer is sent; only draining is left)."""
        if not self.expired:
            self._deadline = float("inf")

    def _expire(self) -> None:
        self.expired = True
        if self._req is not None:
            self._req.must_close = True
        raise BodyTimeout(f"the request body did not arrive within {self._seconds:g} s")

    def read(self, size: int | None = None) -> bytes:
        return self._call("read", size)  # type: ignore[no-any-return]

    def readline(self, size: int | None = None) -> bytes:
        return self._call("readline", size)  # type: ignore[no-any-return]

    def readlines(self, size: int | None = None) -> list[bytes]:
        return self._call("readlines", size)  # type: ignore[no-any-return]

    def __iter__(self) -> DeadlineBody:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def check_green() -> None:
    """Refuse to run with a psycopg that would block the whole worker on each query."""
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None and getattr(waiting, "wait_c", None) is waiting.wait:
        raise RuntimeError("psycopg was imported before gevent patched the standard library: "
                           "its queries would block every connection of this worker")


class Worker(GeventWorker):
    """gunicorn's gevent worker with the body deadline, and no query string in its error log."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_timeout = request_body_timeout(os.environ)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        check_green()

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        body = None
        if req.body is not None:
            body = req.body = DeadlineBody(req.body, time.monotonic() + self.body_timeout,
                                           self.body_timeout, req)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            if body is not None:
                # Answered: what the application left unread is drained before the next
                # request under the header deadline (keep-alive), which closes silently.
                body.release()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        # gunicorn logs "Error handling request <method> <uri>": the URI's query string may
        # carry a token. Its path is enough to find the request.
        if req is not None and getattr(req, "path", None) is not None and hasattr(req, "uri"):
            req.uri = req.path
        super().handle_error(req, client, addr, exc)
