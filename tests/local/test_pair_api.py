"""score_pair / LocalEngine on bundled photos: copies score high, unrelated and flat images score 0 with a reason."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from matcher import MatcherConfig, score_pair
from matcher.benchmark.demo_photos import demo_photo
from matcher.io.images import ImageLoadError


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return demo_photo("astronaut")


def test_crop_is_a_copy_inside_the_reference(astronaut):
    crop = astronaut[100:400, 150:450]
    res = score_pair(crop, astronaut)
    assert res.is_copy and res.score > 0.9
    ev = res.evidence
    assert ev.reason is None and ev.n_inliers >= 20
    assert ev.containment == "query_in_reference"
    assert not ev.mirrored
    # the query frame lands on the crop box in the reference (within a few px)
    quad = np.asarray(ev.query_quad_in_reference)
    assert np.allclose(quad.min(0), [150, 100], atol=6) and np.allclose(quad.max(0), [449, 399], atol=6)


def test_mirrored_copy_matches_with_mirror_flag(astronaut):
    res = score_pair(np.ascontiguousarray(astronaut[:, ::-1]), astronaut)
    assert res.is_copy and res.evidence.mirrored
    assert np.linalg.det(np.asarray(res.evidence.transform)[:2, :2]) < 0


def test_mirror_off_loses_the_mirrored_copy(astronaut):
    cfg = MatcherConfig.make(local={"mirror": False})
    res = score_pair(np.ascontiguousarray(astronaut[:, ::-1]), astronaut, config=cfg)
    assert res.score < 0.5


def test_rotated_and_resized_copy(astronaut):
    q = np.rot90(astronaut[50:450, 50:450]).copy()
    q = np.asarray(Image.fromarray(q).resize((200, 200)))
    res = score_pair(q, astronaut)
    assert res.is_copy


def test_unrelated_photo_scores_zero_with_reason(astronaut):
    res = score_pair(demo_photo("coffee"), astronaut)
    assert res.score < 0.1 and not res.is_copy
    assert res.evidence.reason


def test_flat_tiny_and_huge_images_never_raise(astronaut):
    flat = np.full((300, 300, 3), 128, np.uint8)
    res = score_pair(flat, astronaut)
    assert res.score == 0 and "no keypoints in query" in res.evidence.reason
    tiny = np.full((12, 12, 3), 30, np.uint8)
    res = score_pair(astronaut, tiny)
    assert res.score == 0 and "reference image refused" in res.evidence.reason
    cfg = MatcherConfig.make(load={"max_pixels": 1_000_000})
    huge = np.zeros((2000, 1000, 3), np.uint8)
    res = score_pair(huge, astronaut, config=cfg)
    assert res.score == 0 and "query image refused" in res.evidence.reason


def test_paths_and_pil_inputs(tmp_path, astronaut):
    p = tmp_path / "ref.png"
    Image.fromarray(astronaut).save(p)
    res = score_pair(Image.fromarray(astronaut[:300, :300]), str(p))
    assert res.is_copy
    d = res.to_dict()
    assert set(d) == {"score", "is_copy", "threshold", "evidence"}


def test_broken_file_raises_load_error(tmp_path, astronaut):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        score_pair(str(bad), astronaut)


def test_detected_regions_give_detector_agreement_in_evidence(astronaut):
    """A query region carrying a detector score (a YOLO box) makes the evidence report its IoU with the match."""
    from matcher.local.engine import LocalEngine
    from matcher.local.verify import QueryFeatures, ReferenceBank, region_features, verify_query
    from matcher.regions.region import Region

    engine = LocalEngine()
    background = np.asarray(Image.fromarray(demo_photo("coffee")).resize((600, 500)))
    query = background.copy()
    query[100:356, 200:456] = np.asarray(Image.fromarray(astronaut).resize((256, 256)))
    regions = [Region("full", (0, 0, 600, 500)), Region("yolo:0", (200, 100, 456, 356), score=0.8)]
    qf = QueryFeatures(regions, [region_features(query, r, engine.extractor) for r in regions])
    bank = ReferenceBank.build(["a"], [engine.reference_features(astronaut)])
    score, ev = verify_query(qf, bank, engine.config.local, engine.score_model)[0]
    assert score > 0.5
    assert ev.detector_score == pytest.approx(0.8) and ev.detector_iou > 0.7
