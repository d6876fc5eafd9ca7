"""Training code, never imported by scoring or matching: the ASL descriptor (:mod:`.descriptor` with its data,
views and losses), the fusion models (:mod:`.fusion`) and the local score model (:mod:`.local_score`). The
detector is trained by :mod:`detectors.train`."""
