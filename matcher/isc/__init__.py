"""The ISC2021 matching track: the submission and ground-truth formats (:mod:`.submission`), the metrics (µAP,
recall@P90, per family: :mod:`.metrics`), precision-recall plots (:mod:`.plots`) and the jobs that turn folders into
a submission (:mod:`.track`: the pipeline; :mod:`.exhaustive`: the local engine alone)."""
