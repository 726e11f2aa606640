from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.http import paths
from app.http.dependencies import ModelName, ModelVersion, RegistryDep
from app.store.versions import runtime_versions
from schemas.cards import ModelCard
from schemas.errors import error_responses
from schemas.models import BackendInfo, ModelInfo, ModelList, ModelSummary, RuntimeVersions

router = APIRouter(
    tags=["models"],
    responses=error_responses({422: "Invalid parameters."}),
)


@router.get(paths.MODELS)
async def list_models(
    registry: RegistryDep,
    search: Annotated[
        str | None,
        Query(max_length=100, description="Case-insensitive substring of name or description."),
    ] = None,
    task: Annotated[Literal["classification", "regression"] | None, Query()] = None,
) -> ModelList:
    """List the models in the store."""
    needle = (search or "").casefold()
    data = []
    for entry in sorted(registry.entries(), key=lambda e: e.name):
        default = entry.default_version
        card = entry.versions[default].card if default is not None else None
        description = card.description if card else ""
        if needle and needle not in entry.name.casefold() and needle not in description.casefold():
            continue
        if task and (card is None or card.task != task):
            continue
        data.append(
            ModelSummary(
                name=entry.name,
                task=card.task if card else "unknown",
                description=description,
                input_kind=card.input_kind if card else "unknown",
                default_version=default,
                versions=sorted(entry.versions),
            )
        )
    return ModelList(data=data, count=len(data))


@router.get(
    paths.MODEL,
    responses=error_responses({404: "Unknown model.", 503: "No loadable version."}),
)
async def read_model(model_name: ModelName, registry: RegistryDep) -> ModelInfo:
    """The default version's card, every version, the traffic split, and what serves them."""
    entry = registry.entry(model_name)
    default = registry.get(model_name)
    return ModelInfo(
        name=entry.name,
        default_version=default.version,
        versions=sorted(entry.versions),
        unavailable_versions=entry.unavailable,
        traffic=entry.traffic.weights if entry.traffic else None,
        backends={
            version: BackendInfo(name=model.backend.name, reason=model.backend.reason)
            for version, model in sorted(entry.versions.items())
        },
        version_mismatches={
            version: model.version_mismatch
            for version, model in sorted(entry.versions.items())
            if model.version_mismatch is not None
        },
        load_warnings={
            version: list(model.load_warnings)
            for version, model in sorted(entry.versions.items())
            if model.load_warnings
        },
        runtime=RuntimeVersions(**runtime_versions()),
        card=default.card,
    )


@router.get(
    paths.MODEL_VERSION,
    responses=error_responses(
        {404: "Unknown model or version.", 503: "That version could not be loaded."}
    ),
)
async def read_model_version(
    model_name: ModelName, version: ModelVersion, registry: RegistryDep
) -> ModelCard:
    """One version's card."""
    return registry.get(model_name, version).card
