"""Writing files: where a write cannot happen, the one-line error names the file and why; a new file gets the
permissions any new file gets under the umask; an unchanged file is not written again, text or bytes."""

import os
import tempfile

import pytest

from gptlab.errors import GptlabError
from gptlab.files import write_atomic, write_if_changed


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "r.json"
    with pytest.raises(GptlabError) as exc:
        write_atomic(target, "data")
    assert str(exc.value) == f"{target}: cannot write there: {tmp_path / 'afile'} is a file, not a folder"
    deeper = tmp_path / "afile" / "sub" / "deeper" / "r.json"  # the file in the way is named, however far up
    with pytest.raises(GptlabError) as exc:
        write_atomic(deeper, "data")
    assert str(exc.value) == f"{deeper}: cannot write there: {tmp_path / 'afile'} is a file, not a folder"


def test_a_folder_without_permission_is_named(tmp_path, monkeypatch):
    def refused(*args, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(GptlabError) as exc:
        write_atomic(tmp_path / "r.json", "data")
    assert str(exc.value) == f"{tmp_path / 'r.json'}: cannot write there: no permission to write in {tmp_path}"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_has_the_permissions_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "r.json", "data")
        write_atomic(tmp_path / "b.bin", b"\x00\x01")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_an_unchanged_file_is_not_written_again(tmp_path):
    path = tmp_path / "t.csv"
    assert write_if_changed(path, "a,b\n") and path.read_text() == "a,b\n"
    before = path.stat().st_mtime_ns
    assert not write_if_changed(path, "a,b\n") and not write_if_changed(path, b"a,b\n")
    assert path.stat().st_mtime_ns == before
    assert write_if_changed(path, b"a,c\n") and path.read_bytes() == b"a,c\n"
    assert write_if_changed(path, "é") and path.read_bytes() == "é".encode()


def test_a_folder_error_with_no_file_in_the_way_names_the_folder(tmp_path, monkeypatch):
    def vanished(*args, **kw):  # e.g. the file in the way was removed before it could be named
        raise NotADirectoryError(20, "Not a directory")

    monkeypatch.setattr(tempfile, "mkstemp", vanished)
    with pytest.raises(GptlabError) as exc:
        write_atomic(tmp_path / "r.json", "data")
    assert str(exc.value) == f"{tmp_path / 'r.json'}: cannot write there: {tmp_path} is a file, not a folder"
