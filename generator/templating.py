"""Jinja environment over the top-level templates/ folder: layout only, no decisions.

The folder ships as the package generator.templates (see setup.py), so the same
lookup finds it in a clone, an editable install and an installed wheel.

Compiling a template costs more than rendering it, and every command runs in a new
process, so compiled templates are kept in Jinja's own bytecode cache on disk (see
cache_dir). Jinja keys each entry by the template's path and uses it only if the
checksum of the template's current source and the Python version match; the file
names add Jinja's version and the options below, which also shape the compiled
code. An edited template, another Jinja or other options are compiled afresh: the
cache cannot go stale.
"""

from __future__ import annotations

import json
import os
import stat
from functools import lru_cache
from pathlib import Path


def templates_dir() -> str:
    # The package's folder, as importlib.resources.files would give it, without
    # importing importlib.resources (and zipfile), which take longer than the rest.
    from importlib.util import find_spec

    spec = find_spec("generator.templates")
    if spec is not None and spec.submodule_search_locations:
        return str(list(spec.submodule_search_locations)[0])
    # A clone run without installing it.
    return str(Path(__file__).resolve().parent.parent / "templates")


CACHE_ENV = "RULEGEN_CACHE_DIR"  # a folder, or "off" for no cache


def cache_dir() -> Path | None:
    """Where compiled templates go: $RULEGEN_CACHE_DIR, else the user's cache folder."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return None if chosen == "off" else Path(chosen)
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home folder: no cache
        return None
    return Path(base) / "rulegen" / "templates"


def trusted(folder: Path) -> bool:
    """Cache entries are code: only from a folder of this user's that no one else
    can write to (or none yet: it is then made so)."""
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


OPTIONS = dict(
    keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False
)


@lru_cache(maxsize=1)
def environment():
    import jinja2

    folder = cache_dir()
    if folder and not trusted(folder):
        folder = None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        bytecode_cache=_cache(folder, jinja2.__version__) if folder else None,
        **OPTIONS,
    )
    env.filters["json"] = lambda value: json.dumps(value)
    return env


def _cache(folder: Path, version: str):
    import hashlib

    from jinja2 import FileSystemBytecodeCache

    class QuietCache(FileSystemBytecodeCache):
        """A cache is an optimisation: a folder that cannot be read or written,
        or an entry that cannot be loaded, means compiling, never an error."""

        def load_bytecode(self, bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:
                bucket.reset()

        def dump_bytecode(self, bucket) -> None:
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                super().dump_bytecode(bucket)
            except OSError:
                pass

    options = hashlib.sha256(repr(sorted(OPTIONS.items())).encode()).hexdigest()
    return QuietCache(str(folder), f"jinja{version}-{options[:12]}-%s.cache")


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
