"""A local HTTP stand-in for SendGrid's v3 mail/send, reached by the real sendgrid library."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SendGridStandIn:
    """Records every request body; ``responses`` (status, headers) are answered first, then 202."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.responses: deque[tuple[int, dict[str, str]]] = deque()
        self.headers_seen: list[dict[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                stand_in.requests.append(body)
                stand_in.headers_seen.append(dict(self.headers))
                status, headers = (stand_in.responses.popleft() if stand_in.responses
                                   else (202, {}))
                if self.path != "/v3/mail/send":
                    status = 404
                if status == 202:
                    stand_in.accepted.append(body)
                payload = b"" if status == 202 else b'{"errors": [{"message": "stand-in"}]}'
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def rate_limit_once(self, seconds: int = 1) -> None:
        self.responses.append((429, {"X-RateLimit-Reset": str(int(time.time()) + seconds)}))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
