"""Writing generated files: atomic, deterministic, and careful with hand edits."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600: give it the mode a plain write would.
        os.chmod(tmp, _mode_for(path))
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


MANIFEST = ".rulegen-manifest.json"


def digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Changes:
    """What writing `files` into a folder would do, file by file."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)  # edited by hand, or not ours

    @property
    def pending(self) -> list[str]:
        return sorted(self.new + self.changed + self.removed + self.edited)


def read_manifest(folder: Path) -> dict[str, str]:
    import json

    try:
        data = json.loads((folder / MANIFEST).read_text())
        return dict(data["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def compare(folder: Path, files: dict[str, str]) -> Changes:
    manifest = read_manifest(folder)
    changes = Changes()
    for rel, text in sorted(files.items()):
        path = folder / rel
        if not path.exists():
            changes.new.append(rel)
            continue
        on_disk = path.read_text(encoding="utf-8", errors="replace")
        if on_disk == text:
            changes.unchanged.append(rel)
        elif manifest.get(rel) == digest(on_disk):
            changes.changed.append(rel)
        else:
            changes.edited.append(rel)
    for rel in sorted(set(manifest) - set(files)):
        path = folder / rel
        if not path.exists():
            continue
        if manifest[rel] == digest(path.read_text(encoding="utf-8", errors="replace")):
            changes.removed.append(rel)
        else:
            changes.edited.append(rel)
    return changes


def write_tree(
    folder: Path, files: dict[str, str], changes: Changes, force: bool
) -> None:
    """Apply `changes`; the caller has already refused hand edits unless forced."""
    import json

    for rel in changes.new + changes.changed + (changes.edited if force else []):
        if rel in files:
            write_atomic(folder / rel, files[rel])
    for rel in changes.removed + (
        [r for r in changes.edited if r not in files] if force else []
    ):
        (folder / rel).unlink(missing_ok=True)
    manifest = {
        "generator": "rulegen",
        "files": {rel: digest(text) for rel, text in sorted(files.items())},
    }
    write_atomic(
        folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    )
