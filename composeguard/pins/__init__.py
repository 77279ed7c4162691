"""Pins: the old digest a service must run after a rollback, and the digests that failed
(``pinfile.py``), and pins on the passed-through ``run``/``create`` (``pinned.py``).

Keep this module free of imports: ``pinned.py`` is on the exec-fast path."""
