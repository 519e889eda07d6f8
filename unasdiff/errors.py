"""The one exception type that user-facing entry points turn into a one-line message."""


class UnasdiffError(Exception):
    """Bad input or set-up that the user can fix; the message says what and how."""


def run_or_exit(stage, *args):
    """Run a stage for a command-line script: an UnasdiffError becomes `error: <message>` and exit status 1."""
    import sys

    try:
        return stage(*args)
    except UnasdiffError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
