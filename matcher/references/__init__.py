"""The reference side: what is kept about each reference picture (:mod:`.records`), one interface to a reference
collection (:mod:`.store`), held in memory (:mod:`.memory`) or on disk (:mod:`.disk`), and the local feature store
(:mod:`.features`)."""
