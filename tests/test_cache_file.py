"""fastnn._cache_file: Numba cache entries saved by several processes at once stay correct."""

import os
import subprocess
import sys
import textwrap

import pytest

from fastnn._cache_file import LockedIndexDataCacheFile

WRITERS, KEYS = 4, 30

# each writer saves KEYS entries of its own into one function's cache files, as processes that
# compile different signatures of one kernel at once do
_WRITER = textwrap.dedent(
    """
    import sys
    from fastnn._cache_file import LockedIndexDataCacheFile
    folder, writer, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = LockedIndexDataCacheFile(cache_path=folder, filename_base="kernel-1.py311", source_stamp=("s", 1))
    for k in range(keys):
        cache.save((writer, k), ("payload", writer, k, b"x" * 4096))
    """
)


def _cache(folder):
    return LockedIndexDataCacheFile(cache_path=str(folder), filename_base="kernel-1.py311", source_stamp=("s", 1))


@pytest.mark.skipif(
    sys.platform == "win32", reason="the folder lock is POSIX flock; Windows keeps the write order only"
)
def test_processes_saving_at_once_keep_every_entry_with_its_own_data(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(w), str(KEYS)], env=env)
        for w in range(WRITERS)
    ]
    assert [p.wait(timeout=120) for p in writers] == [0] * WRITERS
    cache = _cache(tmp_path)
    loaded = {(w, k): cache.load((w, k)) for w in range(WRITERS) for k in range(KEYS)}
    wrong = {key: data[1:3] if data else None for key, data in loaded.items() if data != ("payload", *key, b"x" * 4096)}
    assert not wrong, f"{len(wrong)} of {WRITERS * KEYS} entries lost or crossed, e.g. {list(wrong.items())[:3]}"
    assert len(list(tmp_path.glob("*.nbc"))) == WRITERS * KEYS


def test_an_index_never_names_a_data_file_not_yet_written(tmp_path, monkeypatch):
    cache = _cache(tmp_path)
    cache.save("old", "old code")
    seen = []
    save_index = LockedIndexDataCacheFile._save_index

    def checking_save_index(self, overloads):
        seen.extend((name, (tmp_path / name).read_bytes() != b"") for name in overloads.values())
        save_index(self, overloads)

    monkeypatch.setattr(LockedIndexDataCacheFile, "_save_index", checking_save_index)
    cache.save("new", "new code")
    assert seen and all(written for _, written in seen)
    assert cache.load("new") == "new code" and cache.load("old") == "old code"


def test_saving_a_key_again_replaces_its_data_under_the_same_name(tmp_path):
    cache = _cache(tmp_path)
    cache.save("k", "first")
    cache.save("k", "second")
    assert cache.load("k") == "second"
    assert len(list(tmp_path.glob("*.nbc"))) == 1


def test_a_file_system_without_locks_still_saves(tmp_path, monkeypatch):
    import fastnn._cache_file as cache_file

    if cache_file.fcntl is None:
        pytest.skip("no flock here (Windows): nothing to refuse")

    def refuse(fd, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(cache_file.fcntl, "flock", refuse)
    cache = _cache(tmp_path)
    cache.save("k", "code")
    assert cache.load("k") == "code"


def test_fastnn_kernels_save_through_the_locked_file():
    from fastnn.kernels import dense

    assert isinstance(dense.dense_forward._cache._cache_file, LockedIndexDataCacheFile)
