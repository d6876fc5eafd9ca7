"""Pasted-picture detection (issue 6): synthetic YOLO data, offline ultralytics training, pickle-free weights,
detected boxes as region proposals and as pair evidence.

Modules: :mod:`detectors.synth` (``icd make-detector-data``), :mod:`detectors.train` (``icd train-detector``),
:mod:`detectors.offline` (keep ultralytics offline and contained), :mod:`detectors.model` (build, save, load),
:mod:`detectors.detect` (``detect_regions``; importing it registers the "yolo" region proposer),
:mod:`detectors.evidence` (``detector_agreement``). Nothing heavy is imported here.
"""
