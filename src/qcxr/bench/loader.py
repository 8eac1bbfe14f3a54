"""Loader benchmark: images/s from a cold and a warm cache, by thread count and augmentation path.

`python -m qcxr.bench loader [--num-images 256] [--source-size 1024] [--threads 1,2,4]`

Writes NIH-like 8-bit grayscale PNGs (untimed), then for each thread count measures the train
split through `folder_csv` at 224 px with augmentation: cold (empty cache: decode, processor
resize, compress, store, then the augmented epoch) and warm (a fresh DataModule over the filled
cache: fetch, decompress, augment, normalise, batch). The device path (dm-pix, batched, jitted)
is measured on whatever JAX backend is present. A last table measures what the cache should hold:
fetching uint8 vs float32 entries.
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from qcxr.data import folder_csv
from qcxr.data.cache import ImageCache
from qcxr.data.synthetic import render

log = logging.getLogger("qcxr.bench.loader")


def _write_images(root: Path, num_images: int, size: int) -> None:
    # The train split holds num_images images; val and test get one image each of their own (an
    # image listed in two splits is refused by the index, as a leak between splits).
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_images + 2):
        rng = np.random.default_rng(i)
        labels = np.zeros(19, bool)
        labels[rng.integers(0, 19)] = True
        small = render(labels, rng.random(6), 128, rng)
        big = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR))
        noisy = np.clip(big.astype(np.int16) + rng.integers(-6, 7, big.shape), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(root / f"{i:05d}.png", compress_level=1)
        split = "train" if i < num_images else ("val", "test")[i - num_images]
        rows.append([f"{i:05d}.png", f"p{i}", split, int(i % 2)])
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "patient", "split", "Finding"])
        w.writerows(rows)


def _module(root, cache_dir, threads, augment_on, image_size, batch_size):
    return folder_csv(
        ["Finding"],
        image_dir=root,
        label_dir=root / "labels.csv",
        cache_dir=cache_dir,
        batch_size=batch_size,
        image_size=image_size,
        num_threads=threads,
        augment=True,
        augment_on=augment_on,
        min_positives=0,
    )


def _epoch(dm, epoch: int) -> float:
    start = time.perf_counter()
    for batch in dm.batches("train", epoch):
        jax.block_until_ready(batch["image"])
    return time.perf_counter() - start


def _fetch_dtype(directory: Path, n: int, side: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    rates = {}
    for name, array in (("uint8", base), ("float32", base.astype(np.float32) / 255)):
        cache = ImageCache(directory / name)
        for i in range(n):
            cache.put(f"{name}{i}", np.roll(array, i, axis=0))
        start = time.perf_counter()
        for i in range(n):
            cache.get(f"{name}{i}")
        rates[name] = n / (time.perf_counter() - start)
        cache.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    """Run the loader benchmark and log a Markdown table.

    Args:
        argv: command-line arguments (see the module docstring).

    Returns:
        Exit status 0.
    """
    p = argparse.ArgumentParser(prog="python -m qcxr.bench loader", description=__doc__)
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--source-size", type=int, default=1024, help="side of the PNGs written")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", default="1,2,4")
    p.add_argument(
        "--device-images",
        type=int,
        default=64,
        help="images for the device path when JAX runs on the CPU (it is slow there)",
    )
    p.add_argument("--workdir", default=None, help="where to write images and caches (temp)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    logging.getLogger("qcxr.data").setLevel(logging.WARNING)
    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="qcxr-bench-", dir=args.workdir) as tmp:
        tmp = Path(tmp)
        log.info("writing %d PNGs of %d px ...", args.num_images, args.source_size)
        _write_images(tmp / "images", args.num_images, args.source_size)
        rows = []
        for t in threads:
            cache = tmp / f"cache-{t}"
            dm = _module(tmp / "images", cache, t, "host", args.image_size, args.batch_size)
            start = time.perf_counter()
            dm.prepare(["train"])
            cold = time.perf_counter() - start + _epoch(dm, 0)
            warm_dm = _module(tmp / "images", cache, t, "host", args.image_size, args.batch_size)
            _epoch(warm_dm, 0)  # first pass also warms the page cache
            warm = _epoch(warm_dm, 1)
            rows.append((t, "host (Pillow)", args.num_images / cold, args.num_images / warm))
            log.info("threads %d: cold %.0f img/s, warm %.0f img/s", t, rows[-1][2], rows[-1][3])
        backend = jax.default_backend()
        n_dev = args.num_images if backend != "cpu" else min(args.device_images, args.num_images)
        dev_root = tmp / "images"
        for t in threads[:2] if backend == "cpu" else threads:
            dm = _module(
                dev_root, tmp / f"cache-{t}", t, "device", args.image_size, args.batch_size
            )
            dm._index["train"] = dm._index["train"].take(
                np.arange(dm.num_examples("train")) < n_dev
            )
            dm._images["train"].paths = dm._images["train"].paths[:n_dev]
            dm._keys.pop("train", None)
            _epoch(dm, 0)  # compile
            warm = _epoch(dm, 1)
            rows.append((t, f"device (dm-pix on {backend})", float("nan"), n_dev / warm))
            log.info("device path, threads %d: warm %.0f img/s", t, rows[-1][3])
        rates = _fetch_dtype(tmp / "dtype", min(args.num_images, 200), 256)
    lines = [
        f"Loader at {args.image_size} px (flip + rotation + random crop), train split, "
        f"{args.num_images} PNGs of {args.source_size} px, batch {args.batch_size}:",
        "",
        "| threads | augmentation | cold cache (img/s) | warm cache (img/s) |",
        "|---:|---|---:|---:|",
    ]
    for t, path, cold, warm in rows:
        lines.append(f"| {t} | {path} | {'-' if np.isnan(cold) else f'{cold:.0f}'} | {warm:.0f} |")
    lines += [
        "",
        "Cache fetch + zstd decompress + safetensors load, one thread, 256x256x3:",
        "",
        "| cached dtype | img/s |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in rates.items()]
    log.info("\n%s", "\n".join(lines))
    return 0
