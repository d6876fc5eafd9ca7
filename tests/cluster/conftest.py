"""One local Ray cluster of 2 CPUs for the whole session; the small collection and its one-process index
(tests/conftest.py) under the names these tests use."""
from __future__ import annotations

from pathlib import Path

import pytest

from matcher.api import Matcher

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="session")
def cluster() -> str:
    """The address the jobs get: "local", answered by the session's running cluster."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield "local"
    ray.shutdown()


@pytest.fixture(scope="session")
def collection(small_collection) -> tuple[Path, Path]:
    """(references, queries) folders."""
    return small_collection


@pytest.fixture(scope="session")
def matcher(small_matcher) -> Matcher:
    return small_matcher


@pytest.fixture(scope="session")
def index(small_index) -> Path:
    """The references indexed in one process."""
    return small_index
