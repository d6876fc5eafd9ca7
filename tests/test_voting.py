"""Keypoint voting: vote counting against a plain loop, and a crop's keypoints voting for its source."""
from __future__ import annotations

import numpy as np

from matcher.config import MatcherConfig
from matcher.demo_photos import demo_photo
from matcher.local.engine import LocalEngine
from matcher.voting import KeypointVoter, count_votes


def test_count_votes_matches_a_loop():
    rng = np.random.default_rng(0)
    owner = rng.integers(0, 7, size=50)
    nn = rng.integers(-1, 50, size=200)
    ref = np.zeros(7, np.int64)
    for j in nn:
        if j >= 0:
            ref[owner[j]] += 1
    assert np.array_equal(count_votes(owner, nn, 7), ref)
    assert np.array_equal(count_votes(owner, np.array([-1, -1]), 7), np.zeros(7, np.int64))


def test_crop_and_mirror_vote_for_their_source():
    engine = LocalEngine(MatcherConfig.make(local={"max_keypoints": 400}))
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    feats = [engine.reference_features(demo_photo(n)) for n in names]
    voter = KeypointVoter(feats)
    assert len(voter) == sum(f.n for f in feats)
    crop = demo_photo("chelsea")[50:250, 100:350]
    q = engine.query_features(crop).features[0]
    votes = voter.vote(q, top=2)
    assert votes and votes[0][0] == names.index("chelsea") and votes[0][1] > 20
    mirrored = engine.query_features(np.ascontiguousarray(crop[:, ::-1])).features[0]
    assert voter.vote(mirrored, top=1)[0][0] == names.index("chelsea")
    assert voter.vote(mirrored, top=1, mirrored=False) == [] or \
        voter.vote(mirrored, top=1, mirrored=False)[0][1] < votes[0][1]


def test_ivf_path_and_empty_inputs():
    engine = LocalEngine(MatcherConfig.make(local={"max_keypoints": 300}))
    feats = [engine.reference_features(demo_photo(n)) for n in ("astronaut", "coffee", "rocket")]
    voter = KeypointVoter(feats, exact_below=10, nprobe=64)  # forces IVF on a tiny set
    q = engine.query_features(demo_photo("coffee")[40:300, 60:400]).features[0]
    assert voter.vote(q, top=1)[0][0] == 1
    empty = KeypointVoter([])
    assert len(empty) == 0 and empty.vote(q, top=3) == []
    assert voter.vote(q, top=0) == []
