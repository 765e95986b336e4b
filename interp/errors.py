"""The one exception type the workbench raises for bad input.

Every message is a single line that says what went wrong and how to fix it. Front ends
(CLI, dashboard) catch `WorkbenchError` and show the message instead of a traceback.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Bad input or an unavailable resource, with a one-line message that names the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))
