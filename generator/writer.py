"""Writing generated files: atomic, deterministic, careful with hand edits, and never
outside the output folder.

The folder is a boundary. Its manifest (`.rulegen-manifest.json`, the hash and the
target of every file rulegen wrote) is untrusted input: an entry that is not a plain
relative path inside the folder is ignored and reported, and no path is read, written
or removed when it resolves outside the folder (a symlink included).

Crash safety: a run holds a lock on the folder (flock); before it changes the first file it
writes a journal listing, for every file it may touch, each hash the file may have
(before or after); files are replaced atomically, the manifest last, then the journal
goes. A run that finds a journal (a run killed at any moment) accepts any of those
hashes as rulegen's, so the next run of either profile finishes the tree by itself.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path, PurePosixPath
from typing import Callable

from .problems import ProblemError
from .records import dataclass

MANIFEST = ".rulegen-manifest.json"
JOURNAL = ".rulegen-journal.json"
TMP_PREFIX = ".rulegen-tmp-"
RESERVED = frozenset({MANIFEST, JOURNAL})
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
LOCK_WAIT_SECONDS = 60.0


class WriteError(ProblemError):
    """The output folder cannot be written as asked; one line per problem."""


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, flushed to disk, and rename
    it into place: a reader (or a crash) sees the old file or the new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where the folder should be
        raise NotADirectoryError(
            errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)
        ) from None
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp"
    )
    try:
        # mkstemp makes the file 0600: give it the mode a plain write would.
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_digest(path: Path) -> str:
    import hashlib

    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def target_of(rel: str) -> str:
    return rel.split("/", 1)[0]


# --- the manifest and the journal, read as untrusted input ---------------------


def unsafe_path(rel) -> str | None:
    """Why `rel` is not a plain relative path inside the folder, or None."""
    if not isinstance(rel, str) or not rel:
        return "not a path"
    if "\0" in rel or "\\" in rel or len(rel) > 4096:
        return "not a plain path"
    if PurePosixPath(rel).is_absolute():
        return "an absolute path"
    parts = rel.split("/")
    if ".." in parts:
        return "outside the folder"
    if any(part in ("", ".") for part in parts):
        return "not a generated file's path"
    if parts[-1] in RESERVED or parts[-1].startswith(TMP_PREFIX):
        return "a name rulegen keeps for itself"
    return None


def _short(text: str, limit: int = 80) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


def _read_record(path: Path, key: str, warnings: list[str]) -> dict[str, dict]:
    """{rel: {"target": t, "sha256": {hashes}}} from a manifest or journal file.

    Anything odd is left out with a warning: the files it names then count as not
    rulegen's, so they are never overwritten or removed without --force.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise WriteError([f"{path}: cannot read: {exc.strerror}"]) from None
    if not stat.S_ISREG(info.st_mode):
        raise WriteError(
            [f"{path}: not a regular file; rulegen keeps its {key} there, move it away"]
        )
    if info.st_size > MAX_MANIFEST_BYTES:
        warnings.append(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; ignored")
        return {}
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
    except OSError as exc:
        raise WriteError([f"{path}: cannot read: {exc.strerror}"]) from None
    except (ValueError, KeyError, TypeError, RecursionError):
        warnings.append(
            f"{path}: not a rulegen {key}; ignored (the files it lists count as edited by hand)"
        )
        return {}
    out: dict[str, dict] = {}
    for rel, value in files.items():
        why = unsafe_path(rel)
        if isinstance(value, str):  # format 1: {path: hash}
            value = {"sha256": value, "target": target_of(rel) if not why else ""}
        hashes = value.get("sha256") if isinstance(value, dict) else None
        if isinstance(hashes, str):
            hashes = [hashes]
        if why is None and (
            not isinstance(hashes, list)
            or not all(isinstance(h, str) and len(h) == 64 for h in hashes)
            or value.get("target") != target_of(rel)
        ):
            why = "not a valid entry"
        if why:
            warnings.append(f"{path}: entry {_short(str(rel))} is {why}; ignored")
            continue
        out[rel] = {"target": value["target"], "sha256": set(hashes)}
    return out


def read_manifest(folder: Path) -> dict[str, str]:
    """{path: hash} of the files the manifest lists (entries that pass the checks)."""
    try:
        record = _read_record(Path(folder) / MANIFEST, "manifest", [])
    except WriteError:
        return {}
    return {rel: min(entry["sha256"]) for rel, entry in record.items()}


def read_targets(folder: Path) -> dict[str, str]:
    """{path: the target that wrote it}, from the manifest."""
    try:
        record = _read_record(Path(folder) / MANIFEST, "manifest", [])
    except WriteError:
        return {}
    return {rel: entry["target"] for rel, entry in record.items()}


# --- planning ------------------------------------------------------------------


@dataclass
class Changes:
    """What writing `files` into a folder would do, file by file."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)  # edited by hand, or not ours
    leftovers: list[str] = field(default_factory=list)  # temp files of a killed run
    problems: list[str] = field(default_factory=list)  # nothing may be written
    warnings: list[str] = field(default_factory=list)
    manifest: dict[str, dict] = field(default_factory=dict)  # the one to write
    journal: dict[str, dict] = field(default_factory=dict)  # every hash still known
    recovering: bool = False  # a journal was found: a run was interrupted

    @property
    def pending(self) -> list[str]:
        return sorted(self.new + self.changed + self.removed + self.edited)


class _Folder:
    """Paths checked against the folder's real location before any use."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.real = Path(os.path.realpath(folder))

    def check(self, rel: str) -> tuple[str, str | None]:
        """(state, problem): state is absent, file or bad."""
        path = self.folder / rel
        real = Path(os.path.realpath(path))
        if real != self.real and self.real not in real.parents:
            return "bad", f"{path} resolves to {real}, outside {self.folder}; refused"
        # Every folder on the way must be a folder (or not exist yet).
        for parent in reversed(PurePosixPath(rel).parents):
            if str(parent) == ".":
                continue
            try:
                info = os.stat(self.folder / parent)
            except FileNotFoundError:
                return "absent", None
            except OSError as exc:
                return "bad", f"{self.folder / parent}: {exc.strerror}"
            if not stat.S_ISDIR(info.st_mode):
                return (
                    "bad",
                    f"{self.folder / parent} is a file where a folder should be",
                )
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return "absent", None
        except OSError as exc:
            return "bad", f"{path}: {exc.strerror}"
        if stat.S_ISDIR(info.st_mode):
            return "bad", f"{path} is a folder where a file should be"
        if not stat.S_ISREG(info.st_mode):
            return "bad", f"{path} is not a regular file"
        return "file", None

    def digest(self, rel: str) -> str:
        return _file_digest(self.folder / rel)


def compare(
    folder: Path,
    files: dict[str, str],
    owns: Callable[[str], bool] | None = None,
) -> Changes:
    """What writing `files` would do. `owns(target)` says whether this run may change
    a target's files; files of other targets are left as they are."""
    folder = Path(folder)
    owns = owns or (lambda target: True)
    changes = Changes()
    journal = _read_record(folder / JOURNAL, "journal", changes.warnings)
    recorded = _read_record(folder / MANIFEST, "manifest", changes.warnings)
    changes.recovering = bool(journal)
    known = {rel: dict(e, sha256=set(e["sha256"])) for rel, e in recorded.items()}
    for rel, entry in journal.items():
        merged = known.setdefault(rel, {"target": entry["target"], "sha256": set()})
        merged["sha256"] |= entry["sha256"]
    place = _Folder(folder)

    for rel, text in sorted(files.items()):
        state, problem = place.check(rel)
        if problem:
            if problem not in changes.problems:  # a folder in the way of many files
                changes.problems.append(problem)
            continue
        if state == "absent":
            changes.new.append(rel)
            continue
        current = place.digest(rel)
        if current == digest(text):
            changes.unchanged.append(rel)
        elif current in known.get(rel, {}).get("sha256", ()):
            changes.changed.append(rel)
        else:
            changes.edited.append(rel)

    manifest: dict[str, dict] = {}
    for rel, entry in sorted(known.items()):
        if rel in files:
            continue
        state, problem = place.check(rel)
        if problem:
            changes.warnings.append(f"{problem} (listed in the manifest; left alone)")
            continue
        if state == "absent":
            continue
        current = place.digest(rel)
        ours = current in entry["sha256"]
        if owns(entry["target"]):
            (changes.removed if ours else changes.edited).append(rel)
        elif ours:  # another target's file: recorded as it is now
            manifest[rel] = {"target": entry["target"], "sha256": current}
        elif rel in recorded:  # edited by hand: keep what rulegen wrote
            old = min(recorded[rel]["sha256"])
            manifest[rel] = {"target": entry["target"], "sha256": old}
    for rel, text in files.items():
        manifest[rel] = {"target": target_of(rel), "sha256": digest(text)}
    changes.manifest = dict(sorted(manifest.items()))

    for rel in set(known) | set(files):
        hashes = set(known.get(rel, {}).get("sha256", ()))
        if rel in files:
            hashes.add(digest(files[rel]))
        target = known[rel]["target"] if rel in known else target_of(rel)
        changes.journal[rel] = {"target": target, "sha256": sorted(hashes)}
    changes.journal = dict(sorted(changes.journal.items()))
    changes.leftovers = _leftovers(folder, set(known) | set(files))
    return changes


def _leftovers(folder: Path, rels: set[str]) -> list[str]:
    """Temporary files a killed run left, in the folders rulegen writes to."""
    out = []
    folders = {PurePosixPath(rel).parent for rel in rels} | {PurePosixPath(".")}
    for sub in sorted(folders):
        where = folder / sub
        if not where.is_dir() or where.is_symlink():
            continue
        try:
            names = os.listdir(where)
        except OSError:
            continue
        for name in names:
            if name.startswith(TMP_PREFIX) and (where / name).is_file():
                if not (where / name).is_symlink():
                    out.append(str(sub / name) if str(sub) != "." else name)
    return sorted(out)


# --- applying ------------------------------------------------------------------


def _dump(kind: str, entries: dict[str, dict]) -> str:
    return (
        json.dumps(
            {"generator": "rulegen", kind: 2, "files": entries},
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )


def write_tree(
    folder: Path, files: dict[str, str], changes: Changes, force: bool
) -> None:
    """Apply `changes`; the caller has already refused hand edits unless forced.

    Raises WriteError (one line: the path and the cause) on a filesystem error; the
    journal then lets the next run finish or repair the tree.
    """
    folder = Path(folder)
    if changes.problems:
        raise WriteError(changes.problems)
    write = changes.new + changes.changed + (changes.edited if force else [])
    write = [rel for rel in write if rel in files]
    remove = changes.removed + (
        [rel for rel in changes.edited if rel not in files] if force else []
    )
    path = folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if write or remove:
            path = folder / JOURNAL
            write_atomic(path, _dump("journal", changes.journal))
        for rel in changes.leftovers:
            path = folder / rel
            path.unlink(missing_ok=True)
        for rel in sorted(write):
            path = folder / rel
            write_atomic(path, files[rel])
        for rel in sorted(remove):
            path = folder / rel
            path.unlink(missing_ok=True)
            _prune(folder, path.parent)
        path = folder / MANIFEST
        text = _dump("format", changes.manifest)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_atomic(path, text)
        path = folder / JOURNAL
        if path.exists():
            path.unlink()
            _sync_dir(folder)
    except OSError as exc:
        raise WriteError([f"{path}: cannot write: {exc.strerror or exc}"]) from None


def _prune(folder: Path, where: Path) -> None:
    """Remove folders left empty by a removal, up to (not including) the output folder."""
    while where != folder and folder in where.parents:
        try:
            where.rmdir()
        except OSError:
            return
        where = where.parent


@contextmanager
def locked(
    folder: Path,
    create: bool = True,
    on_wait: Callable[[], None] | None = None,
    shared: bool = False,
):
    """Hold the folder's lock (a flock on the folder itself, so no file is made):
    one run at a time, or `shared` for readers such as --check. Waits up to
    LOCK_WAIT_SECONDS for another run, then raises WriteError. The folder is
    created when `create`; one that does not exist is not locked."""
    import fcntl

    folder = Path(folder)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteError([f"{folder}: cannot create: {exc.strerror}"]) from None
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise WriteError([f"{folder}: cannot open: {exc.strerror}"]) from None
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WriteError(
                        [
                            f"{folder}: another rulegen run has held its lock for"
                            f" {LOCK_WAIT_SECONDS:.0f} s; try again when it is done"
                        ]
                    ) from None
                if on_wait:
                    on_wait()
                    on_wait = None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
