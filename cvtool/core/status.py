"""Exit statuses and the errors that map onto them.

Every failure that reaches the user is a `CvtoolError`: the CLI prints its message on one line
and exits with its status. Anything else is a bug and shows a traceback only under `--debug`.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    PARTIAL = 1  # some inputs failed, the rest were processed
    USAGE = 2  # bad option, unknown model
    UNAVAILABLE = 3  # weights not cached and offline, device absent, out of memory
    QUALITY = 4  # ran fine, but a --fail-under metric is below its bar
    INTERNAL = 70  # a bug in cvtool (EX_SOFTWARE); --debug shows the traceback
    INTERRUPTED = 130  # Ctrl-C
    BROKEN_PIPE = 141  # stdout closed by the reader (128 + SIGPIPE), like other Unix tools


class CvtoolError(Exception):
    """An error with a one-line message meant for the user."""

    status = ExitStatus.USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CvtoolError):
    status = ExitStatus.USAGE


class ResourceUnavailable(CvtoolError):
    status = ExitStatus.UNAVAILABLE


class QualityBelowBar(CvtoolError):
    """The run went fine but its metrics fell below a --fail-under bar (exit 4)."""

    status = ExitStatus.QUALITY


class CvtoolWarning(UserWarning):
    """What the Python API warns with (the CLI prints the same messages as `warning: ...`)."""
