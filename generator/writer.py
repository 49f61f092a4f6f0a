"""Writing generated files: atomic, deterministic, careful with hand edits, and never
outside the output folder.

The folder is a boundary. Its manifest (`.rulegen-manifest.json`, the hash and the
target of every file rulegen wrote) is untrusted input: an entry that is not a plain
relative path inside the folder is ignored and reported, and no path is read, written
or removed when any of its components resolves outside the folder (a symlink
included), checked again right before each write and removal.

Whose word counts: a file is rulegen's to overwrite or remove without --force only
on evidence from outside the folder, since anyone who can edit a file in the folder
can edit the manifest too. The evidence is rulegen's own record of what it wrote
into this folder (a file per folder in the user's state folder, see `record_dir`),
or the file holding what rulegen writes now. A file whose hash only the manifest or
the journal vouches for (a folder cloned, copied or from another machine, or a
planted hash) counts as edited by hand.

Crash safety: a run holds a lock on the folder (flock); before it changes the first
file it writes the record (and a journal in the folder) listing, for every file it may
touch, each hash the file may have (before or after); files are replaced atomically,
then the manifest, then the record is trimmed to what the folder now holds, and the
journal goes. After a run killed at any moment, the next run of either profile finds
each file's hash in the record and finishes the tree by itself.
"""

from __future__ import annotations

import errno
import functools
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
RECORD_ENV = "RULEGEN_STATE_DIR"  # where the records of the folders go


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
        with os.fdopen(fd, "wb") as handle:
            for piece in _encoded(text):
                handle.write(piece)
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


# Characters encoded at a time: a file of 200 MB is hashed, compared and written
# without a second copy of it in memory, whose fresh pages cost the kernel more
# than the hashing (time then grows faster than the file).
CHUNK = 1 << 20


def _encoded(text: str):
    """The UTF-8 bytes of `text`, a piece at a time (UTF-8 has no state between
    characters: the pieces are the bytes of the whole)."""
    for start in range(0, len(text), CHUNK):
        yield text[start : start + CHUNK].encode("utf-8")


@functools.lru_cache(maxsize=256)  # a run asks for each file's up to five times
def digest(text: str) -> str:
    import hashlib

    sha = hashlib.sha256()
    for piece in _encoded(text):
        sha.update(piece)
    return sha.hexdigest()


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
        raw = path.read_bytes()
    except OSError as exc:
        raise WriteError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        warnings.append(
            f"{path}: not UTF-8 (byte {exc.start}); not a rulegen {key}, ignored (the"
            " files it lists count as edited by hand)"
        )
        return {}
    try:
        data = json.loads(text)
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
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


# --- rulegen's own record, outside the folder --------------------------------------


def record_dir() -> Path | None:
    """Where rulegen keeps its record of each output folder: $RULEGEN_STATE_DIR, else
    $XDG_STATE_HOME/rulegen/folders (~/.local/state/rulegen/folders); None: no home."""
    chosen = os.environ.get(RECORD_ENV)
    if chosen:
        return Path(chosen)
    try:
        base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    except RuntimeError:  # no home folder
        return None
    return Path(base) / "rulegen" / "folders"


def _record_path(folder: Path) -> Path | None:
    """This folder's record: named by the folder's real path and identity, so a
    folder made anew at the same place (or a copy elsewhere) has none."""
    import hashlib

    where = record_dir()
    try:
        info = os.stat(folder)
    except OSError:
        return None
    if where is None:
        return None
    key = f"{os.path.realpath(folder)}\0{info.st_dev}\0{info.st_ino}"
    return where / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"


def _private(folder: Path) -> bool:
    """The record folder is this user's and no one else can write to it."""
    try:
        info = folder.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _read_own_record(folder: Path, warnings: list[str]) -> dict[str, dict]:
    path = _record_path(folder)
    if path is None or not path.exists():
        return {}
    if not _private(path.parent):
        warnings.append(
            f"{path.parent}: others can write there; rulegen's record of {folder}"
            " ignored (its files count as edited by hand)"
        )
        return {}
    try:
        return _read_record(path, "record", warnings)
    except WriteError as exc:
        warnings.extend(exc.problems)
        return {}


def _record_problem(folder: Path) -> str | None:
    """Why no record of `folder` can be kept, or None."""
    where = record_dir()
    why = None
    if where is None:
        why = "no home folder"
    else:
        probe = where
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if probe == where and not _private(where):
            why = f"others can write to {where}"
        elif not os.access(probe, os.W_OK | os.X_OK):
            why = f"{probe} is not writable"
    if why is None:
        return None
    return (
        f"cannot keep rulegen's record of {folder} ({why}): the next run will count"
        f" the files written now as edited by hand; set {RECORD_ENV} to a folder"
        " of yours"
    )


def _write_own_record(folder: Path, entries: dict[str, dict]) -> None:
    """Raises OSError; an empty record is removed."""
    path = _record_path(folder)
    if path is None:
        return
    if not entries:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _private(path.parent):
        raise PermissionError(
            errno.EPERM, "others can write there: no record kept", str(path.parent)
        )
    write_atomic(path, _dump("record", entries))


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
    # rulegen's record outside the folder: as read, and as it is while writing (every
    # hash a file may have then, before or after).
    own: dict[str, dict] = field(default_factory=dict)
    own_while: dict[str, dict] = field(default_factory=dict)
    unvouched: list[str] = field(default_factory=list)  # the manifest's word alone

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

    def holds_text(self, rel: str, text: str) -> bool:
        """The file is exactly `text`: compared byte for byte (a second run's files
        are mostly unchanged), read only when the sizes agree."""
        try:
            with open(self.folder / rel, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if text.isascii() and size != len(text):  # one byte a character
                    return False
                for piece in _encoded(text):
                    if handle.read(len(piece)) != piece:
                        return False
                return not handle.read(1)
        except OSError:
            return False

    def holds(self, path: Path) -> bool:
        """`path`, every component resolved (symlinks too), is inside the folder."""
        real = Path(os.path.realpath(path))
        return real == self.real or self.real in real.parents

    def is_plain_file(self, path: Path) -> bool:
        """A regular file (not a symlink) in a folder inside this one."""
        try:
            info = os.lstat(path)
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and self.holds(path.parent)

    def ready(self, rel: str) -> None:
        """Checked again right before a write or a removal: every component."""
        state, problem = self.check(rel)
        if state == "bad":
            raise WriteError([problem])


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
    own = _read_own_record(folder, changes.warnings)
    changes.recovering, changes.own = bool(journal), own
    known = {rel: dict(e, sha256=set(e["sha256"])) for rel, e in recorded.items()}
    for record in (journal, own):
        for rel, entry in record.items():
            merged = known.setdefault(rel, {"target": entry["target"], "sha256": set()})
            merged["sha256"] |= entry["sha256"]
    place = _Folder(folder)

    def ours(rel: str, current: str) -> bool:
        """rulegen wrote this content here: its own record says so."""
        if current in own.get(rel, {}).get("sha256", ()):
            return True
        if current in known.get(rel, {}).get("sha256", ()):
            changes.unvouched.append(rel)
        return False

    for rel, text in sorted(files.items()):
        state, problem = place.check(rel)
        if problem:
            if problem not in changes.problems:  # a folder in the way of many files
                changes.problems.append(problem)
            continue
        if state == "absent":
            changes.new.append(rel)
            continue
        if place.holds_text(rel, text):
            changes.unchanged.append(rel)
        elif ours(rel, place.digest(rel)):
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
        mine = ours(rel, current)
        if owns(entry["target"]):
            (changes.removed if mine else changes.edited).append(rel)
        elif mine:  # another target's file: recorded as it is now
            manifest[rel] = {"target": entry["target"], "sha256": current}
        elif rel in recorded:  # edited by hand: keep what the manifest said
            old = min(recorded[rel]["sha256"])
            manifest[rel] = {"target": entry["target"], "sha256": old}
    for rel, text in files.items():
        manifest[rel] = {"target": target_of(rel), "sha256": digest(text)}
    changes.manifest = dict(sorted(manifest.items()))
    if changes.unvouched:
        changes.warnings.append(
            f"{len(changes.unvouched)} file(s) in {folder} match the folder's manifest"
            " but not rulegen's own record of what it wrote there (a folder cloned,"
            " copied or from another machine, or a planted manifest): they count as"
            " edited by hand; check them, then --force"
        )

    changes.journal = _while_writing(known, files)
    # Only what rulegen itself wrote or is about to write: never a manifest's hash.
    changes.own_while = _while_writing(own, files)
    if changes.pending:
        problem = _record_problem(folder)
        if problem:
            changes.warnings.append(problem)
    changes.leftovers = _leftovers(place, set(known) | set(files))
    return changes


def _while_writing(known: dict[str, dict], files: dict[str, str]) -> dict[str, dict]:
    """Every hash a file may have while a run writes `files`: one known before, or
    the one it writes."""
    out = {}
    for rel in sorted(set(known) | set(files)):
        hashes = set(known.get(rel, {}).get("sha256", ()))
        if rel in files:
            hashes.add(digest(files[rel]))
        target = known[rel]["target"] if rel in known else target_of(rel)
        out[rel] = {"target": target, "sha256": sorted(hashes)}
    return out


def _leftovers(place: _Folder, rels: set[str]) -> list[str]:
    """Temporary files a killed run left, in the folders rulegen writes to (each
    inside the folder, every component of its path included)."""
    out = []
    folders = {PurePosixPath(rel).parent for rel in rels} | {PurePosixPath(".")}
    for sub in sorted(folders):
        where = place.folder / sub
        if not place.holds(where) or not where.is_dir():
            continue
        try:
            names = os.listdir(where)
        except OSError:
            continue
        for name in names:
            if name.startswith(TMP_PREFIX) and place.is_plain_file(where / name):
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
    record lets the next run finish or repair the tree.
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
        place = _Folder(folder)
        if write or remove:
            _keep_record(folder, changes.own_while, changes)
            path = folder / JOURNAL
            write_atomic(path, _dump("journal", changes.journal))
        for rel in changes.leftovers:
            path = folder / rel
            if place.is_plain_file(path):
                path.unlink(missing_ok=True)
        for rel in sorted(write):
            path = folder / rel
            place.ready(rel)
            write_atomic(path, files[rel])
        for rel in sorted(remove):
            path = folder / rel
            place.ready(rel)
            path.unlink(missing_ok=True)
            _prune(folder, path.parent)
        path = folder / MANIFEST
        text = _dump("format", changes.manifest).encode("utf-8")
        if not place.is_plain_file(path) or path.read_bytes() != text:
            write_atomic(path, text.decode("utf-8"))
        _keep_record(folder, _own_after(changes, files, write, remove), changes)
        path = folder / JOURNAL
        if path.exists():
            path.unlink()
            _sync_dir(folder)
    except OSError as exc:
        raise WriteError([f"{path}: cannot write: {exc.strerror or exc}"]) from None


def _own_after(changes: Changes, files, write, remove) -> dict[str, dict]:
    """The record once the run is done: what each file rulegen left holds, or for a
    file edited by hand and kept, what rulegen last wrote there."""
    after = {}
    for rel, entry in changes.own_while.items():
        if rel in remove:
            continue
        if rel in write or rel in changes.unchanged:
            after[rel] = {"target": entry["target"], "sha256": [digest(files[rel])]}
        elif rel in changes.own:
            after[rel] = {
                "target": entry["target"],
                "sha256": sorted(changes.own[rel]["sha256"]),
            }
    return after


def _keep_record(folder: Path, entries: dict[str, dict], changes: Changes) -> None:
    """Not fatal when it fails (compare has warned that it would): the next run
    counts the files written as edited by hand."""

    def plain(record):
        return {r: (e["target"], frozenset(e["sha256"])) for r, e in record.items()}

    if plain(entries) == plain(changes.own):
        return
    try:
        _write_own_record(folder, entries)
    except OSError:
        pass


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
