"""`dataclass`, with the code of the methods it writes kept on disk between runs.

A dataclass writes the source of its methods (__init__, __repr__, __eq__, __hash__,
and for a frozen one __setattr__ and __delattr__) and compiles it each time its
class statement runs: about 1 ms a frozen class, and a `generate` makes some twenty,
more than reading and checking the profile. That source is a pure function of the
class and of Python's dataclasses module, and its code a pure function of the
source and of the interpreter, so the code is kept in one marshal file beside the
compiled templates (templating.cache_dir), keyed by the source itself and named by
the interpreter's bytecode magic number: a changed class writes other source, which
is compiled afresh, and another Python reads another file. Nothing else changes:
the class is made by dataclasses.dataclass, with the same code it would compile.

Like the template cache: read only from a folder of this user's that no one else can
write to; a missing, unreadable or broken file, or one that cannot be written, only
costs compiling.
"""

from __future__ import annotations

import dataclasses
import marshal
import os
import stat
import sys
import types
from importlib.util import MAGIC_NUMBER

from .templating import cache_dir, trusted

# More entries than this: the classes changed many times; start the file afresh.
LIMIT = 2000

_code: dict | None = None  # source -> code, loaded on first use
_new: dict = {}  # compiled in this process, written at exit
_path = None


def dataclass(cls=None, /, **options):
    """dataclasses.dataclass, the methods' code from the cache (same options)."""

    def wrap(cls):
        _load()
        saved = dataclasses.__dict__.get("exec")
        # dataclasses runs exec(source, globals, namespace) for each method.
        dataclasses.exec = _exec
        try:
            return dataclasses.dataclass(cls, **options)
        finally:
            if saved is None:
                del dataclasses.exec
            else:
                dataclasses.exec = saved

    return wrap if cls is None else wrap(cls)


def _exec(source, globals=None, locals=None):
    code = _code.get(source) if isinstance(source, str) else None
    if code is None and isinstance(source, str):
        # As exec(source) compiles it inside dataclasses, which has no __future__
        # imports: none inherited from this module.
        code = compile(source, "<string>", "exec", dont_inherit=True)
        _code[source] = _new[source] = code
        if len(_new) == 1:
            import atexit

            atexit.register(_save)
    return exec(code if code is not None else source, globals, locals)


def cache_file():
    folder = cache_dir()
    if folder is None:
        return None
    tag = sys.implementation.cache_tag or "python"
    return folder / f"dataclasses-{tag}-{MAGIC_NUMBER.hex()}.marshal"


def _load() -> None:
    global _code, _path
    if _code is not None:
        return
    _code = {}
    _path = cache_file()
    if _path is not None and trusted(_path.parent):
        _code.update(_read(_path))


def _read(path) -> dict:
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if info.st_uid != os.getuid() or info.st_mode & (
                stat.S_IWGRP | stat.S_IWOTH
            ):
                return {}
            data = marshal.loads(file.read())
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: v
        for k, v in data.items()
        if isinstance(k, str) and isinstance(v, types.CodeType)
    }


def _save() -> None:
    """Add this run's new entries to the file: written whole, then renamed."""
    if _path is None or not _new or not trusted(_path.parent):
        return
    import tempfile

    entries = _read(_path)
    if len(entries) + len(_new) > LIMIT:
        entries = {}
    entries.update(_new)
    try:
        _path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".dataclasses-", dir=_path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(marshal.dumps(entries))
            os.replace(temp, _path)
        except BaseException:
            os.unlink(temp)
            raise
    except (OSError, ValueError):
        pass
