"""Jinja environment over the top-level templates/ folder: layout only, no decisions.

The folder ships as the package generator.templates (see setup.py), so the same
lookup finds it in a clone, an editable install and an installed wheel.
"""

from __future__ import annotations

import json
from functools import lru_cache


def templates_dir() -> str:
    from importlib.resources import files

    try:
        return str(files("generator.templates"))
    except ModuleNotFoundError:  # a clone run without installing it
        from pathlib import Path

        return str(Path(__file__).resolve().parent.parent / "templates")


@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["json"] = lambda value: json.dumps(value)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
