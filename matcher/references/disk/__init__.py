"""The on-disk reference index (``icd index``), split by concern: :mod:`.schema` (the SQLite database and its
rows), :mod:`.lock` (one writer at a time), :mod:`.compat` (does a configuration fit the index), :mod:`.reader`
(what matching reads), :mod:`.voter` (the saved keypoint voter), :mod:`.writer` (adding pictures) and
:mod:`.store` (:class:`~matcher.references.disk.store.IndexStore`, which opens a folder and ties them together)."""
