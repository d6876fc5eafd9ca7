"""Pasted-picture detection: synthetic YOLO data, offline ultralytics training, pickle-free weights, and inference on
our own network (no ultralytics at inference).

Inference: :mod:`detectors.network` (plain-PyTorch YOLOv8, ultralytics' state-dict layout and outputs),
:mod:`detectors.model` (weights files: build, save, load), :mod:`detectors.detect` (``detect_regions``: boxes with
scores), :mod:`detectors.evidence` (``detector_agreement``). Boxes become regions in
:mod:`matcher.regions.detected`. Training (off the inference path): :mod:`detectors.synth` (``icd
make-detector-data``), :mod:`detectors.train` (``icd train-detector``), :mod:`detectors.offline` (keeps ultralytics
offline and contained while training). Nothing heavy is imported here.
"""
