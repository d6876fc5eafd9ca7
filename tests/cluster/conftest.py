"""One local Ray cluster of 2 CPUs for the whole session, and a small collection: three references (scikit-image
photos), queries that are a crop, a mirrored copy, an unrelated picture and a broken file, and their index built in
one process."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from matcher.api import Matcher
from matcher.config import MatcherConfig

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

# 2x2 reference crops and no detector keep it fast (stored with the index, so `icd match --index` uses them too)
CONFIG = MatcherConfig.make(pipeline={"reference_regions": ["grid2"], "query_regions": ["full", "flips"]})


@pytest.fixture(scope="session")
def cluster() -> str:
    """The address the jobs get: "local", answered by the session's running cluster."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield "local"
    ray.shutdown()


def _picture(img: np.ndarray, path: Path, width: int = 280) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(img))
    im = im.resize((width, round(width * im.height / im.width)))
    im.save(path, quality=92)
    return np.asarray(im)


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> tuple[Path, Path]:
    """(references, queries) folders."""
    refs, qs = (tmp_path_factory.mktemp(name) for name in ("cluster_refs", "cluster_queries"))
    saved = {name: _picture(fn(), refs / f"{name}.jpg") for name, fn in
             (("coffee", data.coffee), ("chelsea", data.chelsea), ("rocket", data.rocket))}
    _picture(saved["coffee"][30:170, 60:250], qs / "q_coffee_crop.jpg", 190)
    _picture(saved["chelsea"][:, ::-1], qs / "q_chelsea_mirror.png")
    _picture(data.camera(), qs / "q_camera.png", 240)
    (qs / "q_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return refs, qs


@pytest.fixture(scope="session")
def matcher() -> Matcher:
    return Matcher.from_pretrained(CONFIG)


@pytest.fixture(scope="session")
def index(matcher, collection, tmp_path_factory) -> Path:
    """The references indexed in one process."""
    folder = tmp_path_factory.mktemp("cluster_index") / "refs.icdindex"
    assert matcher.index(collection[0], folder).added == 3
    return folder
