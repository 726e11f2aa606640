"""schemathesis hooks for tests/e2e/test_fuzz.py (named in tests/e2e/schemathesis.toml)."""

import schemathesis
from schemathesis.core.deserialization import DeserializationContext
from schemathesis.core.transport import Response


@schemathesis.deserializer("text/html")
def html_page(ctx: DeserializationContext, response: Response) -> str:
    """The form page (`GET /models/{model_name}/form`) is documented as a string of HTML: read
    it as one, so its responses are validated too rather than skipped."""
    return response.content.decode("utf-8")
