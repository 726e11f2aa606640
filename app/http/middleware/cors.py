"""CORS through Starlette's middleware, with refused preflights answered in the envelope."""

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from app.http.errors import friendly_envelope


class EnvelopeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, but a refused preflight answers with the envelope too."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace")
        envelope = friendly_envelope(response.status_code, "CORSPreflightRefused", reason)
        for name, value in response.headers.items():
            if name.lower().startswith("access-control-") or name.lower() == "vary":
                envelope.headers[name] = value
        return envelope
