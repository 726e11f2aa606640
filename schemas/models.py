from pydantic import BaseModel, Field

from schemas.cards import ModelCard


class ModelSummary(BaseModel):
    name: str
    task: str
    description: str
    input_kind: str
    default_version: int | None = Field(description="Version served when none is pinned.")
    versions: list[int]


class ModelList(BaseModel):
    data: list[ModelSummary]
    count: int


class BackendInfo(BaseModel):
    name: str = Field(
        description="What evaluates the version: numpy-linear or numpy-trees (fast evaluators equal to scikit-learn bit for bit, checked at load), or sklearn.",
        examples=["numpy-linear"],
    )
    reason: str | None = Field(
        default=None, description="Why scikit-learn serves the version, when it does."
    )


class RuntimeVersions(BaseModel):
    """The library versions this server runs, named as the card's fields are."""

    python_version: str | None
    sklearn_version: str | None
    numpy_version: str | None
    scipy_version: str | None


class ModelInfo(BaseModel):
    name: str
    default_version: int
    versions: list[int] = Field(description="Versions loaded and serving.")
    unavailable_versions: dict[int, str] = Field(
        default_factory=dict, description="Versions refused at load, with the reason."
    )
    traffic: dict[int, float] | None = Field(
        default=None, description="Share of unpinned traffic per version (a canary split), if set."
    )
    backends: dict[int, BackendInfo] = Field(
        default_factory=dict, description="The backend serving each loaded version."
    )
    version_mismatches: dict[int, str] = Field(
        default_factory=dict,
        description="Loaded versions whose artifact another scikit-learn minor version made, served because MODELPORT_VERSION_MISMATCH=warn, with both versions named.",
    )
    load_warnings: dict[int, list[str]] = Field(
        default_factory=dict,
        description="Warnings raised while loading each version (e.g. scikit-learn's InconsistentVersionWarning).",
    )
    runtime: RuntimeVersions = Field(
        description="The library versions serving the model, to compare with the card's."
    )
    card: ModelCard = Field(description="Card of the default version.")
