"""schemathesis hooks for tests/e2e/test_fuzz.py (named in tests/e2e/schemathesis.toml)."""

import schemathesis
from schemathesis.core.deserialization import DeserializationContext
from schemathesis.core.transport import Response


@schemathesis.deserializer("text/html")
def html_page(ctx: DeserializationContext, response: Response) -> str:
    """The form page (`GET /models/{model_name}/form`) is documented as a string of HTML: read
    it as one, so its responses are validated too rather than skipped."""
    return response.content.decode("utf-8")


@schemathesis.deserializer("text/csv", "application/x-ndjson")
def stream_reply(ctx: DeserializationContext, response: Response) -> str:
    """A stream's reply (`POST /models/{model_name}/predict/stream`, and the file route's CSV) is
    documented as a string of CSV or NDJSON lines: read it as one, so it is validated too."""
    return response.content.decode("utf-8")


# A stream's NDJSON body is text, like its CSV body (which schemathesis already sends as the
# text it generated): send it the same way.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
