"""User-facing errors.

Anything a user can cause (a bad config key, a corrupt video, a mismatched checkpoint, a shape
that cannot tile) raises `MagvitError` with a message that fits on one line. The CLI prints it
as `magvit: error: <message>` and exits with code 2; it never shows a traceback for these.
Programming errors stay ordinary exceptions and keep their tracebacks.
"""


class MagvitError(Exception):
    """An error caused by user input; its message is one self-contained line."""


class ConfigError(MagvitError):
    """A config file or override that does not match its schema."""
