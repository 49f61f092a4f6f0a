"""The compiled-template cache: same output as compiling, and never stale."""

from __future__ import annotations

import os

import jinja2
import pytest

from generator import templating
from generator.templating import CACHE_ENV, environment, render


@pytest.fixture
def templates(tmp_path, monkeypatch):
    """A template folder and a cache folder of the test's own, fresh environments."""
    folder = tmp_path / "templates"
    folder.mkdir()
    monkeypatch.setattr(templating, "templates_dir", lambda: str(folder))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    environment.cache_clear()
    yield folder
    environment.cache_clear()


@pytest.fixture
def compiles(monkeypatch) -> list[str]:
    """The names of the templates Jinja compiles from source."""
    names: list[str] = []
    original = jinja2.Environment.compile

    def counting(self, source, name=None, *args, **kwargs):
        names.append(name)
        return original(self, source, name, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    return names


def fresh_render(name: str, **context) -> str:
    """As a new process would: a new environment over the same cache folder."""
    environment.cache_clear()
    return render(name, **context)


def test_a_second_process_loads_the_compiled_template(templates, compiles, tmp_path):
    (templates / "t.j2").write_text("{% for x in xs %}{{ x | json }}\n{% endfor %}")
    assert fresh_render("t.j2", xs=["a", 1]) == '"a"\n1\n'
    assert compiles == ["t.j2"]
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert fresh_render("t.j2", xs=["b"]) == '"b"\n'
    assert compiles == ["t.j2"]  # from the cache, not compiled again


def test_an_edited_template_is_never_served_from_the_cache(templates, compiles):
    path = templates / "t.j2"
    path.write_text("one {{ x }}\n")
    assert fresh_render("t.j2", x=1) == "one 1\n"
    stat = path.stat()
    # Same length and same modification time: only the content tells them apart.
    path.write_text("two {{ x }}\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fresh_render("t.j2", x=1) == "two 1\n"
    assert compiles == ["t.j2", "t.j2"]


def test_other_options_use_other_cache_entries(templates, monkeypatch, tmp_path):
    (templates / "t.j2").write_text("{% if true %}\nyes\n{% endif %}\n")
    assert fresh_render("t.j2") == "yes\n"
    monkeypatch.setitem(templating.OPTIONS, "trim_blocks", False)
    assert fresh_render("t.j2") == "\nyes\n\n"
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_a_broken_or_unwritable_cache_only_costs_compiling(
    templates, compiles, monkeypatch, tmp_path
):
    (templates / "t.j2").write_text("ok {{ x }}\n")
    assert fresh_render("t.j2", x=1) == "ok 1\n"
    for entry in (tmp_path / "cache").iterdir():
        entry.write_bytes(b"j2 not a pickle")
    assert fresh_render("t.j2", x=2) == "ok 2\n"
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))  # cannot be created
    assert fresh_render("t.j2", x=3) == "ok 3\n"
    assert compiles == ["t.j2"] * 3


def test_a_folder_others_can_write_to_is_not_used(templates, compiles, tmp_path):
    (templates / "t.j2").write_text("ok\n")
    assert fresh_render("t.j2") == "ok\n"
    (tmp_path / "cache").chmod(0o777)
    assert fresh_render("t.j2") == "ok\n"
    assert compiles == ["t.j2", "t.j2"]  # compiled again, the entry left unread


def test_cache_off(templates, compiles, monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, "off")
    (templates / "t.j2").write_text("ok\n")
    assert fresh_render("t.j2") == fresh_render("t.j2") == "ok\n"
    assert compiles == ["t.j2", "t.j2"]
    assert not (tmp_path / "cache").exists()
