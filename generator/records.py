"""`dataclass`, with the code of the methods it writes kept on disk between runs.

A dataclass writes the source of its methods (__init__, __repr__, __eq__, __hash__,
and for a frozen one __setattr__ and __delattr__) and compiles it each time its
class statement runs: about 1 ms a frozen class, and a `generate` makes some twenty,
more than reading and checking the profile. That source is a pure function of the
class and of Python's dataclasses module, and its code a pure function of the
source and of the interpreter, so the code is kept in a marshal file per module
beside the compiled templates (templating.cache_dir), keyed by the source itself and
named by the interpreter's bytecode magic number: a changed class writes other
source, which is compiled afresh (and its old entry dropped), and another Python
reads another file. Nothing else changes:
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

_code: dict[str, dict] = {}  # module -> {source: code}, its file read on first use
_used: dict[str, dict] = {}  # module -> the entries its classes used in this process
_dirty: set[str] = set()  # modules that compiled something: their files are rewritten
compiled = 0  # methods compiled in this process (none when the cache serves them all)


def dataclass(cls=None, /, **options):
    """dataclasses.dataclass, the methods' code from the cache (same options)."""

    def wrap(cls):
        module = cls.__module__
        if module not in _code:
            if not _code:
                import atexit

                atexit.register(_save)
            _code[module] = _load(module)
            _used[module] = {}
        saved = dataclasses.__dict__.get("exec")
        # dataclasses runs exec(source, globals, namespace) for each method.
        dataclasses.exec = lambda source, globals=None, locals=None: _exec(
            module, source, globals, locals
        )
        texts = _stand_in(cls)
        try:
            made = dataclasses.dataclass(cls, **options)
        finally:
            if saved is None:
                del dataclasses.exec
            else:
                dataclasses.exec = saved
            _put_back(cls, texts)
        if made is not cls:
            _put_back(made, texts)
        return made

    return wrap if cls is None else wrap(cls)


class _Annotation:
    """Stands for a string annotation while dataclasses reads the class."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


# What dataclasses looks for in an annotation string (in the module's names).
_SPECIAL = ("ClassVar", "InitVar", "KW_ONLY")


def _stand_in(cls) -> dict[str, str]:
    """Each string annotation (all of them, under `from __future__ import
    annotations`) replaced by an object while dataclasses reads the class: for a
    string, dataclasses matches a pattern and looks names up in the module three
    times per field to see whether it means ClassVar, InitVar or KW_ONLY, a third of
    making a class. Left as they are in a class where one might, or that has no
    docstring (dataclasses writes one from the signature)."""
    annotations = cls.__dict__.get("__annotations__")
    if not annotations or not cls.__dict__.get("__doc__"):
        return {}
    texts = {k: v for k, v in annotations.items() if isinstance(v, str)}
    if any(word in text for text in texts.values() for word in _SPECIAL):
        return {}
    for name, text in texts.items():
        annotations[name] = _Annotation(text)
    return texts


def _put_back(cls, texts: dict[str, str]) -> None:
    """The strings again wherever dataclasses copied the stand-ins: the class's
    annotations, its fields and the annotations of its __init__."""
    if not texts:
        return
    places = [cls.__dict__.get("__annotations__") or {}]
    init = cls.__dict__.get("__init__")
    places.append(getattr(init, "__annotations__", None) or {})
    for place in places:
        for name, value in place.items():
            if isinstance(value, _Annotation):
                place[name] = value.text
    for f in (cls.__dict__.get("__dataclass_fields__") or {}).values():
        if isinstance(f.type, _Annotation):
            f.type = f.type.text


def _exec(module: str, source, globals=None, locals=None):
    if not isinstance(source, str):
        return exec(source, globals, locals)
    code = _code[module].get(source)
    if code is None:
        # As exec(source) compiles it inside dataclasses, which has no __future__
        # imports: none inherited from this module.
        code = compile(source, "<string>", "exec", dont_inherit=True)
        global compiled
        compiled += 1
        _code[module][source] = code
        _dirty.add(module)
    _used[module][source] = code
    return exec(code, globals, locals)


def cache_file(module: str):
    """The file of one module's classes: a module makes all of its classes when it
    is imported, so the file holds exactly what one import of it uses."""
    folder = cache_dir()
    if folder is None or not _module_name(module):
        return None
    tag = sys.implementation.cache_tag or "python"
    return folder / f"dataclasses-{tag}-{MAGIC_NUMBER.hex()}-{module}.marshal"


def _module_name(text: str) -> bool:
    """Dotted ASCII identifiers (a name safe in a file name); a string test where a
    regular expression would cost more to compile than all the calls take."""
    return text.isascii() and all(part.isidentifier() for part in text.split("."))


def _load(module: str) -> dict:
    path = cache_file(module)
    if path is None or not trusted(path.parent):
        return {}
    return _read(path)


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
    """Rewrite the file of each module that compiled something or did not use all
    of it, with the entries its classes used: a class changed since leaves no stale
    entry behind."""
    for module in sorted(_code):
        if module not in _dirty and len(_used[module]) == len(_code[module]):
            continue
        path = cache_file(module)
        if path is None or not trusted(path.parent):
            continue
        _write(path, _used[module])


def _write(path, entries: dict) -> None:
    """Written whole to a temporary file, then renamed over the old one."""
    import tempfile

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".dataclasses-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(marshal.dumps(entries))
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except (OSError, ValueError):
        pass
