"""The preprocessed-image cache: safetensors -> zstd -> diskcache (paper, Fig. 3).

Keys hash the source image's identity (path, size and modification time, or the generator's
parameters) together with the preprocessing config, so a changed config or a replaced file never
reads a stale entry. Every value is a separate file tracked by diskcache's SQLite index (as in the
paper); a zstd frame checksum plus safetensors' header check detect corruption, and a corrupt entry
is dropped and rebuilt with a warning. diskcache writes the value file before committing its index
row, so an interrupted write leaves no entry behind. A corrupt index (`cache.db`) is not rebuilt in
place, since other runs may be using the folder at the same moment: it fails with an error naming
the folder and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import diskcache
import numpy as np
import zstandard
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from qcxr.data.index import DataError

log = logging.getLogger(__name__)

_SIZE_LIMIT = 2**40  # never evict: the whole preprocessed dataset must stay cached
_ZSTD_LEVEL = 3


def encode(array: np.ndarray) -> bytes:
    """Serialise an array: safetensors, then zstd with a content checksum.

    Args:
        array: any numeric array.

    Returns:
        The compressed bytes.
    """
    raw = st_save({"image": np.ascontiguousarray(array)})
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True).compress(raw)


def decode(blob: bytes) -> np.ndarray:
    """Inverse of `encode`.

    Args:
        blob: bytes from `encode`.

    Returns:
        The array.

    Raises:
        ValueError: corrupt or truncated data.
    """
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob)
        return st_load(raw)["image"]
    except Exception as err:  # zstd, safetensors and key errors all mean "corrupt"
        raise ValueError(f"corrupt cache entry: {err}") from err


def cache_key(identity: str, config_digest: str) -> str:
    """The cache key of an image under a preprocessing config.

    Args:
        identity: the source image's identity (`ImageStore.identity`).
        config_digest: `PreprocessConfig.digest()`.

    Returns:
        A hex digest.
    """
    return hashlib.sha256(f"{config_digest}\0{identity}".encode()).hexdigest()


class ImageCache:
    """Preprocessed images on disk, shared by runs and threads (and processes).

    Args:
        directory: cache folder; None makes a temporary one that lasts for this process.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="qcxr-cache-")
            directory = self._tmp.name
            log.warning(
                "no data cache_dir configured: preprocessed images go to %s and are lost at exit "
                "(set QCXR_CACHE_DIR or data.cache_dir to keep them)",
                directory,
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Every value is its own file (min_file_size 0), tracked by the SQLite index.
        with self._index():
            self._cache = diskcache.Cache(
                str(self.directory),
                size_limit=_SIZE_LIMIT,
                cull_limit=0,
                disk_min_file_size=0,
                eviction_policy="none",
            )

    @contextlib.contextmanager
    def _index(self) -> Iterator[None]:
        # SQLite reports a damaged index as DatabaseError ("file is not a database", "database
        # disk image is malformed") or, when the schema itself is hit, as OperationalError.
        try:
            yield
        except sqlite3.DatabaseError as err:
            db = self.directory / "cache.db"
            raise DataError(
                f"the image cache index {db} cannot be read ({type(err).__name__}: {err}); it "
                "is most likely corrupt (a full disk, or a copy or kill in the middle of a "
                f"write).\nFix: make sure no run is using {self.directory}, then delete that "
                "folder (every image is preprocessed again from its source on the next run), "
                "or set data.cache_dir (QCXR_CACHE_DIR) to another folder."
            ) from err

    def __contains__(self, key: str) -> bool:
        with self._index():
            return key in self._cache

    def __len__(self) -> int:
        with self._index():
            return len(self._cache)

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, or None when absent or corrupt (a corrupt entry is deleted).

        Args:
            key: `cache_key(...)`.

        Returns:
            The array or None.
        """
        try:
            with self._index():
                blob = self._cache.get(key, default=None, read=False)
        except OSError as err:  # the value file vanished or is unreadable
            log.warning("cache entry %s unreadable (%s): dropping and rebuilding it", key, err)
            self._cache.delete(key)
            return None
        if blob is None:
            return None
        try:
            return decode(bytes(blob))
        except ValueError as err:
            log.warning(
                "cache entry %s in %s is corrupt (%s): dropping and rebuilding it",
                key,
                self.directory,
                err,
            )
            self._cache.delete(key)
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        """Store an array (atomically: the entry appears complete or not at all).

        Args:
            key: `cache_key(...)`.
            array: the preprocessed image.
        """
        blob = encode(array)
        with self._index():
            self._cache.set(key, blob)

    def get_or_build(self, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array, building and storing it on a miss.

        Args:
            key: `cache_key(...)`.
            build: computes the array (decode + preprocess).

        Returns:
            The array.
        """
        array = self.get(key)
        if array is None:
            array = build()
            self.put(key, array)
        return array

    def value_path(self, key: str) -> Path | None:
        """Where the entry's value file lives (for tests that corrupt it), or None."""
        with self._cache.transact():
            row = self._cache._sql(  # noqa: SLF001 - diskcache has no public accessor for this
                "SELECT filename FROM Cache WHERE key = ? AND raw = 1", (key,)
            ).fetchone()
        return self.directory / row[0] if row and row[0] else None

    def close(self) -> None:
        """Close the SQLite connections."""
        self._cache.close()
