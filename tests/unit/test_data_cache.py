"""The preprocessed-image cache: bit-exact round trip, config-keyed, self-healing."""

import logging

import numpy as np
import pytest

from qcxr.data import DataError
from qcxr.data.cache import ImageCache, cache_key, decode, encode
from qcxr.data.preprocess import make_preprocess_config
from qcxr.data.synthetic import synthetic


def test_encode_round_trip_bit_exact():
    rng = np.random.default_rng(0)
    for array in (
        rng.integers(0, 256, (9, 9, 1)).astype(np.uint8),
        rng.normal(size=(4, 5, 3)).astype(np.float32),
    ):
        back = decode(encode(array))
        assert back.dtype == array.dtype and back.shape == array.shape
        assert back.tobytes() == array.tobytes()


def test_cache_round_trip_and_config_miss(tmp_path):
    cache = ImageCache(tmp_path / "c")
    array = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)
    key224 = cache_key("file:/x.png:10:1", make_preprocess_config(224).digest())
    key_other = cache_key("file:/x.png:10:1", make_preprocess_config(224, 288).digest())
    key_touched = cache_key("file:/x.png:10:2", make_preprocess_config(224).digest())
    assert len({key224, key_other, key_touched}) == 3
    cache.put(key224, array)
    assert cache.get(key224).tobytes() == array.tobytes()
    assert cache.get(key_other) is None and cache.get(key_touched) is None
    # A second handle on the same folder (another run) reads the same bytes.
    assert ImageCache(tmp_path / "c").get(key224).tobytes() == array.tobytes()


def _module(cache_dir, **kw):
    return synthetic(
        num_train=12,
        num_val=6,
        num_test=6,
        num_external=0,
        image_size=8,
        batch_size=4,
        cache_dir=cache_dir,
        num_threads=1,
        min_positives=0,
        **kw,
    )


def test_module_warm_cache_is_bit_exact_and_resize_change_misses(tmp_path):
    a = _module(tmp_path)
    first = np.concatenate([b["image"] for b in a.batches("val")])
    entries = len(a.cache)
    b = _module(tmp_path)
    assert all(k in b.cache for k in b._split_keys("val"))  # warm: every key present
    second = np.concatenate([x["image"] for x in b.batches("val")])
    assert first.tobytes() == second.tobytes()
    assert len(b.cache) == entries
    c = _module(tmp_path, resize_size=10)  # another preprocessing config: all misses
    assert not any(k in c.cache for k in c._split_keys("val"))


def test_corrupted_cache_file_is_rebuilt(tmp_path, caplog):
    a = _module(tmp_path)
    clean = np.concatenate([b["image"] for b in a.batches("val")])
    keys = a._split_keys("val")
    paths = [a.cache.value_path(k) for k in keys[:3]]
    assert all(p is not None and p.is_file() for p in paths)
    paths[0].write_bytes(b"garbage")
    paths[1].write_bytes(paths[1].read_bytes()[:-7])  # truncated
    blob = bytearray(paths[2].read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte: caught by the zstd checksum
    paths[2].write_bytes(bytes(blob))
    b = _module(tmp_path)
    with caplog.at_level(logging.WARNING, logger="qcxr.data.cache"):
        rebuilt = np.concatenate([x["image"] for x in b.batches("val")])
    assert rebuilt.tobytes() == clean.tobytes()
    # only this logger's warnings: INFO lines of other loggers name the tmp path
    # ("test_corrupted_...") when an earlier test in the worker lowered the root level
    warned = [
        r for r in caplog.records if r.name == "qcxr.data.cache" and r.levelno >= logging.WARNING
    ]
    assert sum("corrupt" in r.getMessage() for r in warned) == 3
    assert all(b.cache.get(k) is not None for k in keys[:3])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_index_names_the_folder_and_the_fix(tmp_path, damage):
    a = _module(tmp_path)
    list(a.batches("val"))
    a.cache.close()
    db = tmp_path / "cache.db"
    blob = db.read_bytes()
    db.write_bytes(b"x" * len(blob) if damage == "garbage" else blob[: len(blob) // 2])
    # Before: sqlite3.DatabaseError ("file is not a database") naming neither folder nor fix.
    with pytest.raises(DataError) as err:
        list(_module(tmp_path).batches("val"))
    msg = str(err.value)
    assert f"image cache index {db}" in msg and "corrupt" in msg
    assert "delete that folder" in msg and str(tmp_path) in msg and "data.cache_dir" in msg
