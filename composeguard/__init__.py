"""composeguard: snapshot the data behind a compose project before an upgrade, roll back on failure.

Keep this module free of imports: it is on the start-up path of every passthrough command.
"""

__version__ = "0.1.0"
