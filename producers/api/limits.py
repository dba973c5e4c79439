"""The body limit, on bytes received: a pure ASGI middleware around ``receive``.

A ``Content-Length`` over the limit is refused before the app runs. A body without one (chunked) or
one that lies is read here as it arrives, before the app runs: the chunk that passes
``INFERQ_API_MAX_BODY_BYTES`` ends the read with 413, so no more than the limit is ever held, and
the caller gets 413 whether or not it has a key (the limit comes before parsing and before the
caller is looked up). A body within the limit is handed to the app in one piece. The 413 closes
the connection: the rest of the body is never read.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.api.errors import error_response
from schemas.errors import PayloadTooLarge


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            shown = declared.decode(errors="replace")[:20]
            await self._refuse(scope, receive, send, f"a body of {shown} bytes")
            return
        chunks: list[bytes] = []
        received = 0
        while True:  # the whole body, up to the limit, before the app (and its key check) runs
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._refuse(scope, receive, send, f"over {self.max_bytes} bytes of body")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        message = f"{what}; the limit is {self.max_bytes} bytes"
        await error_response(PayloadTooLarge(message))(scope, receive, send)
