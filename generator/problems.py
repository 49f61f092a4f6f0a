"""Errors that carry every problem found, for the CLI to print one a line."""

from __future__ import annotations

from pathlib import Path


class ProblemError(Exception):
    """One or more problems; str() lists them all, one a line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def read_text(path: str | Path, error: type[ProblemError]) -> str:
    """The file's UTF-8 text, or `error` saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise error([f"{path}: not UTF-8 text"]) from None
