"""The body limit, on bytes received: a pure ASGI middleware around ``receive``.

A ``Content-Length`` over the limit is refused before the app runs. A body without one (chunked) or
one that lies is counted as it arrives: the read that passes ``INFERQ_API_MAX_BODY_BYTES`` raises
:class:`BodyTooLarge` instead of handing the bytes on, so no more than the limit is ever held, and
the caller gets 413 whether or not it has a key (the limit comes before parsing and before the
caller is looked up). The answer closes the connection: the rest of the body is never read.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.api.errors import error_response
from schemas.errors import PayloadTooLarge


class BodyTooLarge(PayloadTooLarge):
    """Raised from ``receive`` once the bytes received pass the limit."""


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
            await self._refuse(
                scope, receive, send, f"a body of {declared.decode(errors='replace')[:20]} bytes"
            )
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self._message(f"over {self.max_bytes} bytes of body"))
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:  # the app answered already and read on regardless: nothing more to say
                return
            await self._refuse(scope, receive, send, f"over {self.max_bytes} bytes of body")

    def _message(self, what: str) -> str:
        return f"{what}; the limit is {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        response = error_response(PayloadTooLarge(self._message(what)))
        await response(scope, receive, send)
