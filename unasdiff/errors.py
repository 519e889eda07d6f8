"""The one exception type that user-facing entry points turn into a one-line message."""


class UnasdiffError(Exception):
    """Bad input or set-up that the user can fix; the message says what and how."""
