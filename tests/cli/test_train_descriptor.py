"""``icd train-descriptor`` end to end on a few generated photos (two steps, a tiny network)."""
from __future__ import annotations

import numpy as np

from matcher.descriptors.weights import read_weights


class TestCli:
    def test_train_descriptor_end_to_end(self, tmp_path):
        import argparse
        import json

        from PIL import Image

        from matcher.benchmark.edits import synthetic_photo
        from matcher.cli.train_descriptor import add_train_descriptor_arguments, run_train_descriptor

        photos = tmp_path / "photos"
        photos.mkdir()
        rng = np.random.default_rng(0)
        for i in range(10):
            Image.fromarray(synthetic_photo(rng, 96, 72)).save(photos / f"p{i}.jpg")
        p = argparse.ArgumentParser()
        add_train_descriptor_arguments(p)
        args = p.parse_args([str(photos), str(tmp_path / "run"), "--holdout", "4", "--views", "1", "--view-size", "40",
                             "--image-size", "32", "--dim", "32", "--batch", "4", "--steps", "2", "--eval-every", "2",
                             "--freeze-blocks", "5", "--no-progress"])
        assert run_train_descriptor(args) == 0
        _, meta = read_weights(tmp_path / "run" / "asl_lite0_32.pt")
        assert meta["steps"] == 2 and meta["n_train_photos"] == 6 and "gate_margin" in meta
        assert json.loads(meta["evals"])[-1]["step"] == 2
