"""User-facing errors.

Anything a user can cause (a bad config key, a corrupt video, a mismatched checkpoint, a shape
that cannot tile) raises `MagvitError` with a message that fits on one line. The CLI prints it
as `magvit: error: <message>` and exits with code 2; it never shows a traceback for these.
Programming errors stay ordinary exceptions and keep their tracebacks.
"""

import re


class MagvitError(Exception):
    """An error caused by user input; its message is one self-contained line."""


class ConfigError(MagvitError):
    """A config file or override that does not match its schema."""


def first_line(error: BaseException) -> str:
    """A library's exception as one whole line to put in a MagvitError: its first line, without the
    "[11:08:24] /src/video/video_reader.cc:270: " prefix of decord's C++ side. Never cut short: a
    message cut mid-word reads like a different error."""
    lines = str(error).strip().splitlines()
    text = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", lines[0]).strip() if lines else ""
    return text or type(error).__name__
