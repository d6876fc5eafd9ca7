"""Fusion of all evidence about a candidate pair into one calibrated, asymmetric, explainable score: the feature
vector (:mod:`.features`), the two model kinds (:mod:`.trees`, the default, and :mod:`.logistic`) and loading
either (:mod:`.load`). Fitting lives in :mod:`matcher.training.fusion`."""
