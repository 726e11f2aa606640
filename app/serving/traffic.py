"""Which version serves a request: a pinned version, the default, or the canary split's choice.

A client of a model with a traffic split carries a session id (the HTTP surfaces keep it in a
cookie); the split maps it to a version by a hash, so the same id lands on the same version in
every worker and every replica with no shared state.
"""

import random
import re
from dataclasses import dataclass

from app.serving.model import LoadedModel
from app.serving.registry import ModelRegistry

SESSION_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,128}")


@dataclass(frozen=True)
class Routed:
    """The version a request is served by, and the new session id to hand the client (a client
    of a model with a traffic split that came without a valid one)."""

    model: LoadedModel
    new_session: str | None = None


def route(
    registry: ModelRegistry, model_name: str, version: int | None, session: str | None
) -> Routed:
    """The version to serve (404 if unknown, 503 if it could not be loaded). A pinned version
    always wins; otherwise, with a traffic split, the session picks the version, and a client
    without a (valid) session gets a new one, so it stays on the version it was assigned."""
    if version is not None:
        return Routed(registry.get(model_name, version))
    entry = registry.entry(model_name)
    if not entry.split:
        return Routed(registry.get(model_name))
    new_session = None
    if session is None or not SESSION_PATTERN.fullmatch(session):
        # Not a credential (a client may pick any value, and so its bucket, anyway): `random`
        # (re-seeded in every forked worker) spares a system call on every session-less request.
        session = new_session = f"{random.getrandbits(128):032x}"
    return Routed(registry.get(model_name, entry.route(session)), new_session)
