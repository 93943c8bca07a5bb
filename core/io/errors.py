# SPDX-License-Identifier: GPL-3.0-or-later
"""The one error type for malformed splat files."""


class SplatFormatError(ValueError):
    """A splat file or sequence is malformed; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
