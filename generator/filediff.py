"""Which emitted files two sides of a diff differ in: by hash, and (for profiles) by
text, telling apart files that differ only in the server release they name."""

from __future__ import annotations

from dataclasses import field

from .matrix import Matrix
from .records import dataclass


@dataclass
class Side:
    """One side of a diff: a profile (planned and emitted now) or a snapshot."""

    label: str
    kind: str  # profile or snapshot
    matrix: Matrix
    files: dict[str, str]  # path -> sha256 of the emitted text
    texts: dict[str, str] | None = None  # path -> text, for profiles only
    unavailable: dict[str, str] = field(default_factory=dict)  # target -> why
    # aws.network_acls: what the ACLs admit, as a matrix (nacl.as_matrix); None: none
    acls: Matrix | None = None

    @property
    def title(self) -> str:
        m = self.matrix
        return f"{m.profile} {m.server_version} ({m.release_line} page)"


@dataclass
class FileDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    # Changed only where they name the server release (headers, descriptions).
    release_only: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why
    diffs: dict[str, str] = field(default_factory=dict)  # path -> unified diff

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def compare_files(old: Side, new: Side, unified: bool = False) -> FileDiff:
    """Which emitted files differ; targets missing on either side are not compared."""
    import difflib

    out = FileDiff()
    for side in (old, new):
        for target, why in side.unavailable.items():
            out.skipped.setdefault(target, f"{side.label}: {why}")

    def kept(path: str) -> bool:
        return path.split("/", 1)[0] not in out.skipped

    for path in sorted(set(old.files) | set(new.files)):
        if not kept(path):
            continue
        if path not in new.files:
            out.removed.append(path)
        elif path not in old.files:
            out.added.append(path)
        elif old.files[path] != new.files[path]:
            out.changed.append(path)
            if _release_only(old, new, path):
                out.release_only.append(path)
        else:
            out.unchanged += 1
            continue
        if unified and old.texts is not None and new.texts is not None:
            lines = difflib.unified_diff(
                old.texts.get(path, "").splitlines(keepends=True),
                new.texts.get(path, "").splitlines(keepends=True),
                fromfile=f"a/{path}" if path in old.files else "/dev/null",
                tofile=f"b/{path}" if path in new.files else "/dev/null",
            )
            out.diffs[path] = "".join(
                (
                    line
                    if line.endswith("\n")
                    else line + "\n\\ No newline at end of file\n"
                )
                for line in lines
            )
    return out


def _release_only(old: Side, new: Side, path: str) -> bool:
    """Do the two texts differ only in the server release they name?"""
    import re

    if old.texts is None or new.texts is None:
        return False  # a snapshot keeps only hashes

    def masked(side: Side) -> str:
        text = side.texts[path]
        m = side.matrix
        for value in (m.release_line, m.server_version):
            text = re.sub(rf"(?<![\w.]){re.escape(value)}(?![\w.])", "<release>", text)
        return text

    return masked(old) == masked(new)
