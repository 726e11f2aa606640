"""Request body limits, enforced while the body streams in.

FastAPI has no upload limit and Starlette spools file parts to disk without a total cap, so a
client could otherwise make a worker buffer gigabytes. This ASGI middleware refuses a declared
Content-Length over the limit without reading a byte of the body, and cuts off a body of
undeclared length (chunked) the moment it passes the limit: either way the app sees a
disconnect, and whatever it answers is replaced by a 413 in the error envelope of the route the
request reached (app.http.errors). A body within its declared length needs no watching: the
server's HTTP parser frames it by that length, so it cannot grow past it.
"""

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import envelope_of


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        """`limit_for(path)` gives the byte limit for a request path."""
        self.app = app
        self.limit_for = limit_for

    @staticmethod
    def _too_large(limit: int, scope: Scope) -> Response:
        envelope = envelope_of(scope)  # the matched route's, once the app has routed it
        return envelope(413, "PayloadTooLarge", f"Request body is larger than {limit} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        exceeded = False
        if declared is not None and declared.isdigit() and not chunked:
            if int(declared) <= limit:
                # The HTTP parser delivers exactly the declared length (any further bytes are
                # the next request): nothing to watch.
                await self.app(scope, receive, send)
                return
            # Refused before a byte is read. The app still routes the request (cheaply: it
            # sees a disconnect at once), so the 413 takes the envelope of the route it reached.
            exceeded = True

        received = 0
        started = False  # the app has begun its own response
        replaced = False  # we answered 413 in its place

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the app's own answer to the cut-off body is dropped
            if exceeded and not started:
                replaced = True
                await self._too_large(limit, scope)(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started and not replaced:
            await self._too_large(limit, scope)(scope, receive, send)
