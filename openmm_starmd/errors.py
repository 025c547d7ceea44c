"""The one exception type that means "the user's input is wrong".

Library code raises :class:`StarMDError` with a one-line message naming the problem and the fix.
``starmd`` prints it as ``starmd: error: ...`` and exits with status 2, never with a traceback.
"""


class StarMDError(ValueError):
    """Bad input or bad request: a one-line message that names the problem and how to fix it."""
