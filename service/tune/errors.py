"""Exit codes of `regtune tune` (the CI contract) and the one error type that carries them."""

from __future__ import annotations

import enum

__all__ = ["ExitCode", "TuneError"]


class ExitCode(enum.IntEnum):
    """What a CI job sees. Documented in docs/ci.md; never renumber."""

    PASSED = 0
    GATE_FAILED = 1  # a threshold was missed or the result regressed against the baseline
    USAGE = 2  # invalid spec, options, baseline or warm-start file
    STUDY_FAILED = 3  # the study failed, was cancelled, or timed out (no verdict possible)
    SERVER = 4  # the server is unreachable, erred, or refused the token


class TuneError(Exception):
    """A failure that ends `regtune tune` with `code` and a one-line `message` on stderr."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
