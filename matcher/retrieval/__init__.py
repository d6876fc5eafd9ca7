"""Candidate retrieval: the faiss index of global descriptors (:mod:`.index`), score normalisation against a
background set (:mod:`.normalise`), the ASL norm gate (:mod:`.gate`), keypoint votes (:mod:`.voting`) and the
candidate stage that combines them (:mod:`.candidates`)."""
