"""Library versions (app.store.versions): a different scikit-learn minor version is a mismatch,
a different patch version is not."""

import platform

import pytest
import sklearn

from app.store.versions import minor_of, runtime_versions, sklearn_mismatch


@pytest.mark.parametrize(
    ("made_with", "running", "mismatch"),
    [
        ("1.7.2", "1.9.1", True),
        ("1.9.0", "1.9.1", False),
        ("1.9.1", "1.9.1", False),
        ("0.24.2", "1.9.1", True),
        ("1.9.dev0", "1.9.1", False),
        ("pre-0.18", "1.9.1", False),  # unreadable: InconsistentVersionWarning still reports it
    ],
)
def test_only_another_minor_version_is_a_mismatch(
    made_with: str, running: str, mismatch: bool
) -> None:
    reason = sklearn_mismatch(made_with, running)
    assert (reason is not None) is mismatch
    if reason is not None:
        assert made_with in reason and running in reason


def test_minor_of_reads_leading_numbers() -> None:
    assert minor_of("1.9.1") == (1, 9)
    assert minor_of("2.0rc1") == (2, 0)
    assert minor_of("unknown") is None


def test_runtime_versions_are_this_process() -> None:
    versions = runtime_versions()
    assert versions["sklearn_version"] == sklearn.__version__
    assert versions["python_version"] == platform.python_version()
    assert versions["numpy_version"] and versions["scipy_version"]
