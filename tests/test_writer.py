"""Writes are atomic, deterministic, and never silently overwrite a hand edit."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- the output folder is a boundary ----------------------------------------------


def test_manifest_entries_outside_the_folder_are_never_touched(tmp_path):
    import json

    from generator.writer import digest

    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    victim.write_text("precious\n")
    apply(out, {"t/a.tf": "a\n"})
    manifest = json.loads((out / MANIFEST).read_text())
    for rel in ("../victim.txt", str(victim), "t/../../victim.txt"):
        manifest["files"][rel] = {"target": "t", "sha256": digest("precious\n")}
    for force in (False, True):
        (out / MANIFEST).write_text(json.dumps(manifest))
        changes = apply(out, {"t/a.tf": "a\n"}, force=force)
        assert victim.read_text() == "precious\n"
        assert changes.removed == changes.edited == []
        # One warning per entry; a long entry is cut short in its message (a deep
        # tmp_path, as under xdist, may cut off the file's name).
        ignored = [w for w in changes.warnings if ": entry " in w]
        assert len(ignored) == 3 and all(w.endswith("; ignored") for w in ignored)


def test_format_1_manifest_with_an_escaping_entry_is_reported(tmp_path):
    import json

    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    victim.write_text("x\n")
    out.mkdir()
    from generator.writer import digest

    (out / MANIFEST).write_text(json.dumps({"files": {"../victim.txt": digest("x\n")}}))
    changes = apply(out, {"t/a.tf": "a\n"}, force=True)
    assert victim.exists()
    assert any("'../victim.txt' is outside the folder" in w for w in changes.warnings)


def test_a_symlink_leaving_the_folder_is_never_written_through(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "iptables").symlink_to("../elsewhere")
    changes = compare(out, {"iptables/rules.v4": "x\n"})
    assert changes.problems and "outside" in changes.problems[0]
    from generator.writer import WriteError

    with pytest.raises(WriteError):
        write_tree(out, {"iptables/rules.v4": "x\n"}, changes, force=True)
    assert list(elsewhere.iterdir()) == []


def test_a_symlink_inside_the_folder_is_fine(tmp_path):
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "t").symlink_to("real")
    assert apply(out, {"t/a.tf": "a\n"}).problems == []
    assert (out / "real" / "a.tf").read_text() == "a\n"


def test_manifest_records_the_target_of_every_file(tmp_path):
    from generator.writer import read_targets

    apply(tmp_path, {"terraform-aws/main.tf": "m\n", "iptables/rules.v4": "r\n"})
    assert read_targets(tmp_path) == {
        "iptables/rules.v4": "iptables",
        "terraform-aws/main.tf": "terraform-aws",
    }


def test_a_run_for_one_target_leaves_the_others_alone(tmp_path):
    from generator.writer import read_targets

    apply(tmp_path, {"a/one.tf": "1\n", "b/two.tf": "2\n", "b/old.tf": "o\n"})
    changes = compare(tmp_path, {"b/two.tf": "2b\n"}, owns={"b"}.__contains__)
    assert changes.changed == ["b/two.tf"] and changes.removed == ["b/old.tf"]
    write_tree(tmp_path, {"b/two.tf": "2b\n"}, changes, force=False)
    assert (tmp_path / "a/one.tf").read_text() == "1\n"
    assert set(read_targets(tmp_path)) == {"a/one.tf", "b/two.tf"}
    # The file of the other target is still rulegen's: a later run may update it.
    assert compare(tmp_path, {"a/one.tf": "1b\n"}).changed == ["a/one.tf"]


def test_folders_left_empty_are_removed(tmp_path):
    apply(tmp_path, {"a/x/one.tf": "1\n", "b/two.tf": "2\n"})
    apply(tmp_path, {"b/two.tf": "2\n"})
    assert not (tmp_path / "a").exists()


# --- filesystem errors: one line, nothing written ---------------------------------


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda out: (out / "t").write_text("file\n"), "is a file where a folder"),
        (lambda out: (out / "t" / "a.tf").mkdir(parents=True), "is a folder where"),
        (
            lambda out: ((out / "t").mkdir(), os.mkfifo(out / "t" / "a.tf")),
            "not a regular file",
        ),
    ],
)
def test_wrong_kind_of_path_is_a_problem_before_anything_is_written(
    tmp_path, setup, message
):
    out = tmp_path / "out"
    out.mkdir()
    setup(out)
    before = sorted(out.rglob("*"))
    changes = compare(out, {"t/a.tf": "a\n", "u/b.tf": "b\n"})
    assert len(changes.problems) == 1 and message in changes.problems[0]
    assert sorted(out.rglob("*")) == before


def test_a_manifest_that_is_a_folder_is_one_clear_error(tmp_path):
    from generator.writer import WriteError

    (tmp_path / MANIFEST).mkdir()
    with pytest.raises(WriteError, match="not a regular file"):
        compare(tmp_path, {"t/a.tf": "a\n"})


def test_a_garbled_manifest_is_reported_and_the_record_still_counts(tmp_path):
    apply(tmp_path, {"t/a.tf": "a\n"})
    (tmp_path / MANIFEST).write_text("[" * 100000)
    changes = compare(tmp_path, {"t/a.tf": "b\n"})
    assert "not a rulegen manifest" in str(changes.warnings)
    assert changes.changed == ["t/a.tf"]  # rulegen's own record says it wrote a


def test_disk_full_is_one_line_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno

    from generator import writer

    apply(tmp_path, {"t/a.tf": "a\n", "t/b.tf": "b\n"})
    real = os.fsync
    calls = []

    def full(fd):
        calls.append(fd)
        if len(calls) == 3:  # the journal and the first file pass
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(writer.os, "fsync", full)
    files = {"t/a.tf": "a2\n", "t/b.tf": "b2\n"}
    with pytest.raises(writer.WriteError) as info:
        apply(tmp_path, files)
    assert len(info.value.problems) == 1
    assert "No space left on device" in info.value.problems[0]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".rulegen-tmp")]
    monkeypatch.setattr(writer.os, "fsync", real)
    # The next run finishes the tree: nothing counts as edited by hand.
    changes = apply(tmp_path, files)
    assert changes.edited == [] and (tmp_path / "t/b.tf").read_text() == "b2\n"
    assert not (tmp_path / writer.JOURNAL).exists()


# --- interrupted runs ---------------------------------------------------------------


def _interrupt_after(monkeypatch, count):
    """Make the `count`-th change to the tree (a rename into place or a removal)
    raise, as a kill at that moment would stop the run."""
    from pathlib import Path

    from generator import writer

    real_replace, real_unlink, seen = os.replace, Path.unlink, []

    def step():
        seen.append(1)
        if len(seen) == count:
            raise KeyboardInterrupt

    def replace(src, dst):
        step()
        real_replace(src, dst)

    def unlink(self, missing_ok=False):
        if not self.name.startswith(writer.TMP_PREFIX):  # a temp file is not the tree
            step()
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(writer.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)


@pytest.mark.parametrize("stop", range(1, 11))
def test_an_interrupted_run_is_finished_by_the_next_run_of_either_profile(
    tmp_path, monkeypatch, stop
):
    from generator import writer

    a = {"t/one.tf": "a1\n", "t/two.tf": "a2\n", "u/three.tf": "a3\n"}
    b = {"t/one.tf": "b1\n", "t/four.tf": "b4\n", "u/three.tf": "b3\n"}
    apply(tmp_path, a)
    interrupted = False
    with monkeypatch.context() as m:
        _interrupt_after(m, stop)
        try:
            apply(tmp_path, b)
        except KeyboardInterrupt:
            interrupted = True
    # rulegen's record, journal, 3 files, 1 removal, manifest, record trimmed, journal
    # removed: 9 steps; 10 runs through.
    assert interrupted == (stop <= 9)
    for profile in (a, b, a):
        changes = apply(tmp_path, profile)
        assert changes.edited == [] and changes.problems == []
        on_disk = {
            str(p.relative_to(tmp_path)): p.read_text()
            for p in tmp_path.rglob("*")
            if p.is_file() and not p.name.startswith(".rulegen")
        }
        assert on_disk == profile
        assert not (tmp_path / writer.JOURNAL).exists()


def test_temp_files_of_a_killed_run_are_removed(tmp_path):
    apply(tmp_path, {"t/a.tf": "a\n"})
    (tmp_path / "t" / ".rulegen-tmp-a.tf.x1.tmp").write_text("half")
    (tmp_path / "t" / "notes.txt").write_text("mine")
    changes = apply(tmp_path, {"t/a.tf": "a\n"})
    assert changes.leftovers == ["t/.rulegen-tmp-a.tf.x1.tmp"]
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["a.tf", "notes.txt"]


def test_the_lock_keeps_a_second_run_out(tmp_path, monkeypatch):
    import subprocess
    import sys

    from generator import writer

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from generator.writer import locked\n"
            f"with locked({str(tmp_path)!r}):\n"
            "    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(writer, "LOCK_WAIT_SECONDS", 0.3)
        waited = []
        with pytest.raises(writer.WriteError, match="another rulegen run"):
            with writer.locked(tmp_path, on_wait=lambda: waited.append(1)):
                pass
        assert waited == [1]
    finally:
        holder.kill()
        holder.wait()
    with writer.locked(tmp_path):  # a killed holder's lock is free again
        pass
    assert list(tmp_path.iterdir()) == []  # the lock is on the folder: no file


@pytest.mark.parametrize("stop", [2, 3, 5, 6, 7, 8])
def test_a_one_target_run_after_an_interruption_keeps_the_others_recognised(
    tmp_path, monkeypatch, stop
):
    a = {"t/one.tf": "a1\n", "t/two.tf": "a2\n", "u/three.tf": "a3\n"}
    b = {"t/one.tf": "b1\n", "t/four.tf": "b4\n", "u/three.tf": "b3\n"}
    apply(tmp_path, a)
    with monkeypatch.context() as m:
        _interrupt_after(m, stop)
        with pytest.raises(KeyboardInterrupt):
            apply(tmp_path, b)
    only_u = {"u/three.tf": "a3\n"}
    changes = compare(tmp_path, only_u, owns={"u"}.__contains__)
    assert changes.edited == []
    write_tree(tmp_path, only_u, changes, force=False)
    # The journal is gone, yet t's files, half a's and half b's, are still rulegen's.
    for profile in (a, b):
        assert apply(tmp_path, profile).edited == []


# --- hostile folders (issue 23) ---------------------------------------------------


def test_a_symlink_in_the_middle_of_a_path_never_reaches_outside(tmp_path):
    """A manifest entry link/b/c.tf, link -> elsewhere: the temporary files of
    elsewhere/b are not the folder's leftovers, and are never removed."""
    import json

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (elsewhere / "b").mkdir(parents=True)
    out.mkdir()
    victim = elsewhere / "b" / ".rulegen-tmp-victim"
    victim.write_text("precious\n")
    (out / "link").symlink_to(elsewhere)
    entry = {"target": "link", "sha256": "0" * 64}
    (out / MANIFEST).write_text(json.dumps({"files": {"link/b/c.tf": entry}}))
    changes = apply(out, {"t/a.tf": "a\n"}, force=True)
    assert changes.leftovers == []
    assert "resolves to" in str(changes.warnings)
    assert victim.read_text() == "precious\n"


def test_a_folder_swapped_for_a_symlink_after_the_check_is_refused(tmp_path):
    from generator.writer import WriteError

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    apply(out, {"t/a.tf": "a\n", "t/b.tf": "b\n"})
    changes = compare(out, {"t/a.tf": "a2\n", "t/b.tf": "b2\n"})
    (out / "t").rename(tmp_path / "moved")
    (out / "t").symlink_to(elsewhere)  # between the check and the write
    with pytest.raises(WriteError) as caught:
        write_tree(out, {"t/a.tf": "a2\n", "t/b.tf": "b2\n"}, changes, force=True)
    assert "outside" in caught.value.problems[0]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("name", [MANIFEST, ".rulegen-journal.json"])
def test_a_manifest_or_journal_that_is_not_utf8_is_a_warning(tmp_path, name):
    from click.testing import CliRunner

    from conftest import ROOT
    from generator.cli import main

    out = tmp_path / "out"
    profile = ROOT / "profiles" / "gcp.yaml"
    first = CliRunner().invoke(main, ["generate", str(profile), "-o", str(out)])
    assert first.exit_code == 0
    count = first.stderr.split(": ", 1)[1].split(" new")[0]  # every file is new
    (out / name).write_bytes(b'\xff\xfe{"files": {}}\n')
    result = CliRunner().invoke(main, ["generate", str(profile), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    assert f"warning: {out / name}: not UTF-8 (byte 0)" in result.stderr
    assert f"0 new, 0 changed, {count} unchanged, 0 removed" in result.stderr
    assert (out / MANIFEST).read_bytes().startswith(b"{")  # rewritten


def _plant(folder, name, files):
    """A manifest or journal, written by hand, that vouches for `files` as they are."""
    import json

    from generator.writer import digest

    entries = {
        rel: {"target": rel.split("/")[0], "sha256": [digest(text)]}
        for rel, text in files.items()
    }
    (folder / name).write_text(json.dumps({"files": entries}))


@pytest.mark.parametrize("name", [MANIFEST, ".rulegen-journal.json"])
def test_a_planted_hash_never_authorises_overwriting_a_hand_edit(tmp_path, name):
    apply(tmp_path, {"t/a.tf": "a\n", "t/old.tf": "old\n"})
    edits = {"t/a.tf": "edited by hand\n", "t/old.tf": "edited by hand too\n"}
    for rel, text in edits.items():
        (tmp_path / rel).write_text(text)
    _plant(tmp_path, name, edits)
    changes = apply(tmp_path, {"t/a.tf": "a2\n"})  # old.tf is no longer generated
    assert changes.edited == ["t/a.tf", "t/old.tf"]
    assert changes.changed == changes.removed == []
    assert {rel: (tmp_path / rel).read_text() for rel in edits} == edits
    assert any("not rulegen's own record" in w for w in changes.warnings)


def test_a_copied_folder_is_rulegens_only_where_it_holds_what_rulegen_writes(tmp_path):
    """A clone or a copy has no record of its own: a file that differs from what
    rulegen writes now needs --force once; a file that holds it is recognised."""
    import shutil

    apply(tmp_path / "out", {"t/a.tf": "a\n", "t/b.tf": "b\n"})
    shutil.copytree(tmp_path / "out", tmp_path / "copy")
    copy = tmp_path / "copy"
    changes = compare(copy, {"t/a.tf": "a2\n", "t/b.tf": "b\n"})
    assert changes.edited == ["t/a.tf"] and changes.unchanged == ["t/b.tf"]
    assert changes.unvouched == ["t/a.tf"]
    write_tree(copy, {"t/a.tf": "a2\n", "t/b.tf": "b\n"}, changes, force=True)
    # From now on both are rulegen's here: no --force.
    changes = apply(copy, {"t/a.tf": "a3\n", "t/b.tf": "b3\n"})
    assert changes.changed == ["t/a.tf", "t/b.tf"] and changes.edited == []


def test_a_folder_made_anew_at_the_same_place_has_no_record(tmp_path):
    import shutil

    out = tmp_path / "out"
    apply(out, {"t/a.tf": "a\n"})
    shutil.rmtree(out)
    (out / "t").mkdir(parents=True)
    (out / "t/a.tf").write_text("a\n")  # what rulegen wrote, now by someone else
    (out / "t/a.tf").write_text("mine\n")
    assert compare(out, {"t/a.tf": "a2\n"}).edited == ["t/a.tf"]


def test_a_record_that_others_can_write_is_ignored(tmp_path, monkeypatch):
    from generator import writer

    state = tmp_path / "state"
    monkeypatch.setenv(writer.RECORD_ENV, str(state))
    apply(tmp_path / "out", {"t/a.tf": "a\n"})
    assert compare(tmp_path / "out", {"t/a.tf": "a2\n"}).changed == ["t/a.tf"]
    state.chmod(0o777)
    changes = compare(tmp_path / "out", {"t/a.tf": "a2\n"})
    assert changes.edited == ["t/a.tf"]
    assert any("others can write there" in w for w in changes.warnings)


def test_no_place_for_the_record_is_a_warning_before_anything_is_written(
    tmp_path, monkeypatch
):
    from generator import writer

    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(writer.RECORD_ENV, str(blocker / "state"))
    changes = apply(tmp_path / "out", {"t/a.tf": "a\n"})
    assert (tmp_path / "out/t/a.tf").read_text() == "a\n"
    assert any("cannot keep rulegen's record" in w for w in changes.warnings)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    chunk=st.integers(1, 8),
)
def test_a_file_is_hashed_written_and_compared_a_piece_at_a_time(text, chunk):
    # Every piece boundary, multi-byte characters split across none of them: the
    # same bytes, hash and comparisons as the whole text encoded at once.
    import hashlib
    import tempfile
    from pathlib import Path
    from unittest import mock

    from generator import writer

    data = text.encode("utf-8")
    with mock.patch.object(writer, "CHUNK", chunk), tempfile.TemporaryDirectory() as d:
        writer.digest.cache_clear()
        assert writer.digest(text) == hashlib.sha256(data).hexdigest()
        writer.write_atomic(Path(d) / "f", text)
        assert (Path(d) / "f").read_bytes() == data
        place = writer._Folder(Path(d))
        assert place.holds_text("f", text)
        for other in (data + b"\n", data[:-1], b"x" + data[1:] if data else b"x"):
            if other != data:
                (Path(d) / "f").write_bytes(other)
                assert not place.holds_text("f", text)
    writer.digest.cache_clear()
