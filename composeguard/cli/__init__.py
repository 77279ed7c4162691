"""The face: the click app (``app.py``), the bodies of its commands (``commands.py``) and how
one of them runs and ends (``runner.py``: logging, signals, errors to exit codes). Nothing
outside this package imports it, except the entry point (``entry.py``)."""
