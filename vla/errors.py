"""Errors the ``vla`` command line reports as one line (``vla: error: ...``, exit code 2).

Raise ``VLAError`` for a problem the user can fix from the command line (a bad option value,
an output path that cannot be used, a policy that does not exist yet). Bugs stay ordinary
exceptions so they keep their traceback.
"""

from __future__ import annotations


class VLAError(Exception):
    """A user-facing error: its message is printed as one line, without a traceback."""
