"""Atomic writes: the new file whole or the old one, with the permissions of any other file the
run writes."""

import os
import stat

import pytest

from flayer.util.atomic import write_atomic


def test_the_file_gets_the_mode_of_a_plainly_written_one(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"a")
    atomic = tmp_path / "atomic.txt"
    write_atomic(atomic, lambda f: f.write(b"b"))
    assert stat.S_IMODE(os.stat(atomic).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
