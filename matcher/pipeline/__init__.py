"""The matching pipeline, per query: describe (:mod:`.describe`) -> candidates (:mod:`matcher.retrieval`) ->
verification and fusion (:mod:`.verify`), held together by :class:`~matcher.pipeline.pipeline.Pipeline`; matching
a stream of queries (:mod:`.batch`) and per-stage timing (:mod:`.timer`)."""
