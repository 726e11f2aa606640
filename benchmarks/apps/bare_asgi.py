"""Ceiling: a bare ASGI app that reads the body, parses its JSON (orjson) and returns a constant.

No framework, no validation, no model: the most a Python server on this worker can answer.
"""

import orjson
from starlette.types import Receive, Scope, Send

CONSTANT_REPLY = b'{"predictions":["constant"]}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        # Answer the lifespan protocol so uvicorn does not log it as unsupported.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    more_body = True
    while more_body:
        message = await receive()
        chunks.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    try:
        orjson.loads(b"".join(chunks))
        status, reply = 200, CONSTANT_REPLY
    except orjson.JSONDecodeError:
        status, reply = 400, b'{"error":"MalformedBody"}'
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(reply)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply})
