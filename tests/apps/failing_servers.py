"""Adapters that fail on purpose, for the bench's failing-server test (``-s tests.apps.failing_servers:Class``)."""

from __future__ import annotations

from typing import Any

from anyserve.adapters.wsgiref import WsgirefAdapter


class CannotStart(WsgirefAdapter):
    """A server that dies before it serves anything."""

    name = "cannot-start"

    def serve(self, app: Any, listeners: Any, lifecycle: Any) -> None:
        raise RuntimeError("this server cannot start")


class Answers500(WsgirefAdapter):
    """A server that starts, and answers every request with 500."""

    name = "answers-500"

    def serve(self, app: Any, listeners: Any, lifecycle: Any) -> None:
        def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", "6")])
            return [b"broken"]

        super().serve(broken, listeners, lifecycle)
