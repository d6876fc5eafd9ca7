"""Fixtures shared by test folders: a small collection (three scikit-image photos as references; queries that are
a crop, a mirrored copy, an unrelated picture and a broken file) and its index built in one process, with a config
that keeps it fast (2x2 reference crops, no detector; stored with the index, so `icd match --index` uses it too).
Used by tests/cluster (Ray jobs) and tests/isc/test_workers.py (worker processes): both compare a spread-out job
with the one-process run on the same files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from matcher.api import Matcher
from matcher.config import MatcherConfig

SMALL_CONFIG = MatcherConfig.make(pipeline={"reference_regions": ["grid2"], "query_regions": ["full", "flips"]})


def _picture(img: np.ndarray, path: Path, width: int = 280) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(img))
    im = im.resize((width, round(width * im.height / im.width)))
    im.save(path, quality=92)
    return np.asarray(im)


@pytest.fixture(scope="session")
def small_config() -> MatcherConfig:
    return SMALL_CONFIG


@pytest.fixture(scope="session")
def small_collection(tmp_path_factory) -> tuple[Path, Path]:
    """(references, queries) folders."""
    refs, qs = (tmp_path_factory.mktemp(name) for name in ("small_refs", "small_queries"))
    saved = {name: _picture(fn(), refs / f"{name}.jpg") for name, fn in
             (("coffee", data.coffee), ("chelsea", data.chelsea), ("rocket", data.rocket))}
    _picture(saved["coffee"][30:170, 60:250], qs / "q_coffee_crop.jpg", 190)
    _picture(saved["chelsea"][:, ::-1], qs / "q_chelsea_mirror.png")
    _picture(data.camera(), qs / "q_camera.png", 240)
    (qs / "q_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return refs, qs


@pytest.fixture(scope="session")
def small_matcher() -> Matcher:
    return Matcher.from_pretrained(SMALL_CONFIG)


@pytest.fixture(scope="session")
def small_index(small_matcher, small_collection, tmp_path_factory) -> Path:
    """The references indexed in one process."""
    folder = tmp_path_factory.mktemp("small_index") / "refs.icdindex"
    assert small_matcher.index(small_collection[0], folder).added == 3
    return folder
