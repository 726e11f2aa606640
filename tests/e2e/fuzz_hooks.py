"""schemathesis hooks for tests/e2e/test_fuzz.py (named in tests/e2e/schemathesis.toml)."""

from typing import Any

import schemathesis
from schemathesis import Case, HookContext
from schemathesis.core.deserialization import DeserializationContext
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response
from schemathesis.generation.meta import CoveragePhaseData, CoverageScenario


@schemathesis.deserializer("text/html")
def html_page(ctx: DeserializationContext, response: Response) -> str:
    """The form page (`GET /models/{model_name}/form`) is documented as a string of HTML: read
    it as one, so its responses are validated too rather than skipped."""
    return response.content.decode("utf-8")


@schemathesis.hook
def filter_failure(ctx: HookContext, failure: Failure, case: Case[Any], response: Response) -> bool:
    """Keep every failure but one: a request accepted although it carried a header the document
    does not list. HTTP requires exactly that: "A recipient MUST ignore unrecognized header
    fields" (RFC 9110, section 5.1). schemathesis' coverage phase sends such requests for an
    operation with two or more optional headers (the v2 `infer` operations: the binary tensor
    extension's header length and X-Request-Timeout), expecting a 4xx."""
    phase = case.meta.phase.data if case.meta is not None else None
    return not (
        isinstance(failure, AcceptedNegativeData)
        and isinstance(phase, CoveragePhaseData)
        and phase.scenario == CoverageScenario.OBJECT_UNEXPECTED_PROPERTIES
        and phase.parameter_location == ParameterLocation.HEADER
    )


@schemathesis.deserializer("text/csv", "application/x-ndjson")
def stream_reply(ctx: DeserializationContext, response: Response) -> str:
    """A stream's reply (`POST /models/{model_name}/predict/stream`, and the file route's CSV) is
    documented as a string of CSV or NDJSON lines: read it as one, so it is validated too."""
    return response.content.decode("utf-8")


# A stream's NDJSON body is text, like its CSV body (which schemathesis already sends as the
# text it generated): send it the same way.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
