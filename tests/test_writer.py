"""Writes are atomic, deterministic, and never silently overwrite a hand edit."""

from __future__ import annotations

import os

import pytest

from generator.writer import MANIFEST, compare, read_manifest, write_atomic, write_tree


def apply(folder, files, force=False):
    changes = compare(folder, files)
    write_tree(folder, files, changes, force)
    return changes


def test_first_write_then_nothing_to_do(tmp_path):
    files = {"a/one.tf": "one\n", "b/two.yaml": "two\n"}
    changes = apply(tmp_path, files)
    assert changes.new == ["a/one.tf", "b/two.yaml"]
    assert changes.changed == changes.edited == changes.removed == []
    assert (tmp_path / "a/one.tf").read_text() == "one\n"
    assert set(read_manifest(tmp_path)) == set(files)
    again = compare(tmp_path, files)
    assert again.pending == [] and again.unchanged == sorted(files)


def test_generated_file_is_updated_but_hand_edit_is_kept(tmp_path):
    apply(tmp_path, {"x.tf": "v1\n", "y.tf": "v1\n"})
    (tmp_path / "y.tf").write_text("edited by a person\n")
    changes = compare(tmp_path, {"x.tf": "v2\n", "y.tf": "v2\n"})
    assert changes.changed == ["x.tf"] and changes.edited == ["y.tf"]
    write_tree(tmp_path, {"x.tf": "v2\n", "y.tf": "v2\n"}, changes, force=False)
    assert (tmp_path / "y.tf").read_text() == "edited by a person\n"
    apply(tmp_path, {"x.tf": "v2\n", "y.tf": "v2\n"}, force=True)
    assert (tmp_path / "y.tf").read_text() == "v2\n"


def test_a_file_that_is_not_ours_counts_as_edited(tmp_path):
    (tmp_path / "main.tf").write_text("mine\n")
    assert compare(tmp_path, {"main.tf": "generated\n"}).edited == ["main.tf"]


def test_files_no_longer_generated_are_removed_unless_edited(tmp_path):
    apply(tmp_path, {"keep.tf": "k\n", "old.tf": "o\n", "old2.tf": "o\n"})
    (tmp_path / "old2.tf").write_text("touched\n")
    changes = apply(tmp_path, {"keep.tf": "k\n"})
    assert changes.removed == ["old.tf"] and changes.edited == ["old2.tf"]
    assert not (tmp_path / "old.tf").exists() and (tmp_path / "old2.tf").exists()


def test_atomic_write_leaves_no_temporary_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    write_atomic(target, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_manifest_is_deterministic(tmp_path):
    files = {"b.tf": "b\n", "a.tf": "a\n"}
    apply(tmp_path / "one", files)
    apply(tmp_path / "two", dict(reversed(files.items())))
    assert (tmp_path / "one" / MANIFEST).read_bytes() == (
        tmp_path / "two" / MANIFEST
    ).read_bytes()
