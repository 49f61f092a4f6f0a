"""Jinja environment over the top-level templates/ folder: layout only, no decisions."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
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
