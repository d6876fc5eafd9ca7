"""Review of results: the self-contained HTML report of a submission (:mod:`.html`) and pair drawings
(:mod:`.draw`)."""
