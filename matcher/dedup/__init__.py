"""Copies within one collection (``icd dedup``, :meth:`matcher.Matcher.dedup`): pairs (:mod:`.pairs`), groups and
the original of each (:mod:`.groups`), the result with its JSON (:mod:`.result`) and the HTML page (:mod:`.html`)."""
