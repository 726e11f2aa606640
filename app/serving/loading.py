"""The registry as the server builds it from the settings: the same store, row limit, trusted
types and load hooks wherever a version is loaded to serve (`create_app`, `modelport score`)."""

from app.config import Settings
from app.serving.backend_gate import backend_hook
from app.serving.batching import BatchPolicy, batching_hook
from app.serving.registry import LoadHook, ModelRegistry


def load_hooks(settings: Settings) -> list[LoadHook]:
    """What each version gets as it loads (MLServer's load-hook pattern): the parity gate first,
    so the batcher sees the chosen backend."""
    return [
        backend_hook(settings.backend),
        batching_hook(
            BatchPolicy(
                max_rows=settings.batch_max_rows,
                max_wait=settings.batch_max_wait_ms / 1000,
                enabled=settings.batching,
                max_queue_rows=settings.queue_max_rows,
            )
        ),
    ]


def registry_for(settings: Settings, *, only: str | None = None) -> ModelRegistry:
    """`only`: load that one model, not the whole store."""
    return ModelRegistry(
        settings.model_dir,
        max_rows=settings.max_rows,
        trusted_types=settings.skops_trusted_types,
        version_policy=settings.version_mismatch,
        on_load=load_hooks(settings),
        only=only,
    )
