"""Errors more than one layer raises, and the reading of untrusted input files."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

MAX_INPUT_BYTES = 32 * 1024 * 1024  # a 70,000-address profile is 1.5 MB


class ProblemError(Exception):
    """One or more problems; str() lists them all, one a line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class EmitError(Exception):
    """The matrix cannot be expressed by a target; str() says which rule and why.

    Raised by the emitters and by the quotas below them (generator.emitters
    re-exports it)."""


def read_text(
    path: str | Path, error: type[ProblemError], limit: int = MAX_INPUT_BYTES
) -> str:
    """The UTF-8 text of a regular file (or of standard input for '-'), or `error`
    saying why it cannot be read. FIFOs and devices are refused, not read: one
    would block, the other never ends."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISDIR(mode):
                    raise error([f"{path}: is a folder, not a file"])
                if not stat.S_ISREG(mode):
                    raise error(
                        [
                            f"{path}: not a regular file (a FIFO or a device); give a file or '-'"
                        ]
                    )
                with os.fdopen(os.dup(fd), "rb") as handle:
                    data = handle.read(limit + 1)
            finally:
                os.close(fd)
    except OSError as exc:
        raise error([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > limit:
        raise error([f"{path}: larger than {limit // (1024 * 1024)} MiB; not read"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error([f"{path}: not UTF-8 text"]) from None


def shorten(value, limit: int = 80) -> str:
    """repr(value), cut in the middle when long: a message never echoes megabytes."""
    text = repr(value) if not isinstance(value, str) or len(value) < limit else None
    if text is None:
        text = repr(value[: limit // 2]) + f"...({len(value)} characters)"
    if len(text) > limit * 2:
        text = text[:limit] + f"...({len(text)} characters)"
    return text


def clip(text: str, limit: int = 200) -> str:
    """A message cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
