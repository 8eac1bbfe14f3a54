"""The dataset index: image references, labels and patients per split, with validation.

Everything here is read and checked before a single image is preprocessed, so a bad label file
or a missing image fails at start with one message naming the file(s), the count and the fix, and
nothing is half-written to the cache.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qcxr.data.labels import label_key

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_MAX_LISTED = 10


class DataError(ValueError):
    """A problem with the user's data: names the file(s), the count and the fix."""


def _listing(items: Sequence[str]) -> str:
    shown = "\n  ".join(str(i) for i in items[:_MAX_LISTED])
    more = f"\n  ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"\n  {shown}{more}"


@dataclass
class SplitIndex:
    """One split: image references, labels and patients, row-aligned.

    Attributes:
        ids: image identifiers for prediction files (file name or relative path), length N.
        refs: what the image store reads (a path, or an index into an array), length N.
        labels: bool[N, L] in the task's label order.
        patients: patient identifier per image, length N.
        source: where the labels came from (file path), for error messages.
    """

    ids: list[str]
    refs: list
    labels: np.ndarray
    patients: list[str]
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, keep: np.ndarray) -> SplitIndex:
        """The rows where `keep` (bool[N]) is true."""
        rows = np.flatnonzero(keep)
        return SplitIndex(
            ids=[self.ids[i] for i in rows],
            refs=[self.refs[i] for i in rows],
            labels=self.labels[rows],
            patients=[self.patients[i] for i in rows],
            source=self.source,
        )


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """Read a CSV (optionally gzip-compressed) into its header and rows of strings.

    Args:
        path: the file.

    Returns:
        (header, rows); see `read_csv_lines`.

    Raises:
        DataError: the file is missing or empty, or a row's field count differs from the header's.
    """
    header, rows, _ = read_csv_lines(path)
    return header, rows


def read_csv_lines(path: str | os.PathLike) -> tuple[list[str], list[list[str]], list[int]]:
    """Read a CSV (optionally gzip-compressed): header, rows, and the line number of each row.

    Trailing empty header fields (a trailing comma) are dropped. Every row must have one field per
    header column; extra trailing fields are accepted only when empty. A short row would
    otherwise crash later with an IndexError, and a row with extra values (an unquoted comma)
    would shift its labels into the wrong columns.

    Args:
        path: the file.

    Returns:
        (header, rows, lines): lines[i] is the 1-based line of the file where row i ends.

    Raises:
        DataError: the file is missing or empty, or rows have the wrong number of fields (naming
            the file, the lines and the expected columns).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist; check the path (data.label_dir)")
    opener = gzip.open if path.suffix == ".gz" else open
    rows, lines = [], []
    with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        for r in reader:
            if r:
                rows.append(r)
                lines.append(reader.line_num)
    if not header:
        raise DataError(f"label file {path} is empty: expected a header row and one row per image")
    header = [h.strip() for h in header]
    while header and not header[-1]:
        header.pop()
    width = len(header)
    ragged = [
        f"line {line}: {len(r)} field(s) {r[: width + 2]}"
        for r, line in zip(rows, lines, strict=True)
        if len(r) < width or any(x.strip() for x in r[width:])
    ]
    if ragged:
        raise DataError(
            f"label file {path} has {len(ragged)} row(s) whose number of fields differs from its "
            f"header's {width} column(s) ({', '.join(header)}):{_listing(ragged)}\n"
            "Fix: give every row one value per column, in the header's order (an empty value is "
            "still written between its commas), and quote values that contain a comma."
        )
    rows = [r[:width] for r in rows]
    return header, rows, lines


def find_column(header: Sequence[str], names: Iterable[str]) -> int | None:
    """Index of the first of `names` present in `header` (spelling-insensitive), else None."""
    keys = [label_key(h) for h in header]
    for name in names:
        k = label_key(name)
        if k in keys:
            return keys.index(k)
    return None


def require_columns(
    path: str | os.PathLike, header: Sequence[str], wanted: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """Column indices of required columns, or one error naming every missing one.

    Args:
        path: the file, for the message.
        header: its header.
        wanted: role -> accepted spellings, e.g. {"image": ("Image Index", "id")} or a label name
            mapped to its own spellings.

    Returns:
        role -> column index.

    Raises:
        DataError: some columns are missing.
    """
    found, missing = {}, []
    for role, names in wanted.items():
        col = find_column(header, names)
        if col is None:
            missing.append(f"{role} (any of: {', '.join(names)})" if len(names) > 1 else role)
        else:
            found[role] = col
    if missing:
        raise DataError(
            f"label file {path} lacks {len(missing)} required column(s): {'; '.join(missing)}.\n"
            f"Its header is: {', '.join(header)}.\n"
            "Fix: use the file as released, rename the columns, or pick a task whose labels the "
            "file has (task=cxr8 / cxr14 / cxr19)."
        )
    return found


def parse_binary(
    path: str | os.PathLike,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    cols: Sequence[int],
) -> np.ndarray:
    """Parse label columns holding 0/1 into bool[N, L], or fail naming column, count and values.

    Args:
        path: the file, for the message.
        header: its header.
        rows: its rows.
        cols: the label columns, in the task's order.

    Returns:
        bool[N, L].

    Raises:
        DataError: a value other than 0/1 (e.g. -1 or blank, the CheXpert "uncertain").
    """
    table = np.array(
        [[r[c].strip() if c < len(r) else "" for c in cols] for r in rows], dtype=object
    )
    table = table.reshape(len(rows), len(cols))
    ones = np.isin(table, ("1", "1.0", "True", "true"))
    zeros = np.isin(table, ("0", "0.0", "False", "false"))
    bad = ~(ones | zeros)
    if bad.any():
        parts = []
        for j in np.flatnonzero(bad.any(axis=0)):
            values = sorted(set(table[bad[:, j], j].tolist()))[:5]
            rows_bad = np.flatnonzero(bad[:, j])
            parts.append(
                f"{header[cols[j]]!r}: {len(rows_bad)} row(s), e.g. data row {rows_bad[0] + 1}, "
                f"values {values}"
            )
        raise DataError(
            f"label file {path} has values other than 0/1 in {len(parts)} column(s):"
            f"{_listing(parts)}\nFix: labels must be 0 or 1; map uncertain (-1) and blank entries "
            "to 0 or 1 before loading (e.g. the U-zeros policy)."
        )
    return ones


def check_split(
    split: str,
    index: SplitIndex,
    label_names: Sequence[str],
    min_positives: int,
    kind: str = "multilabel",
) -> None:
    """Fail on an empty split or a label with fewer than `min_positives` positives in it.

    Args:
        split: split name.
        index: the split.
        label_names: the task's labels (columns of index.labels).
        min_positives: required positives per label (0 disables the check).
        kind: the task's kind; the fix the error suggests depends on it (a shorter CXR label
            set helps a multilabel task, not a multiclass one, whose classes are fixed).

    Raises:
        DataError: naming the split, its source, the labels and counts, and the fix.
    """
    if len(index) == 0:
        raise DataError(
            f"split {split!r} is empty (labels from {index.source or 'the source'}); fix: check "
            "that the label file lists images and that data.image_dir holds them"
        )
    if min_positives <= 0:
        return
    counts = index.labels.sum(axis=0)
    short = [
        f"{n}: {int(c)}" for n, c in zip(label_names, counts, strict=True) if c < min_positives
    ]
    if short:
        if kind == "multiclass":
            fix = (
                "use more images per class (every class needs examples in every split: a larger "
                "sample, or a larger val/test share of the source), or data.min_positives=0 to "
                "accept it"
            )
        else:
            fix = (
                "use more data, a task without these labels (for chest X-rays task=cxr8 / cxr14, "
                "or a shorter label list), or data.min_positives=0 to accept it"
            )
        raise DataError(
            f"split {split!r} ({len(index)} images, labels from {index.source or 'the source'}) "
            "has "
            f"fewer than {min_positives} positive(s) for {len(short)} label(s):{_listing(short)}\n"
            f"AUROC is undefined and the label cannot be learned there. Fix: {fix}."
        )


def check_one_class(split: str, index: SplitIndex, label_names: Sequence[str]) -> None:
    """Fail unless every row of a multiclass split holds exactly one class.

    Args:
        split: split name.
        index: the split (labels one-hot bool[N, C]).
        label_names: the task's classes.

    Raises:
        DataError: naming the split, its source, how many rows have none or several classes,
            a few of them, and the fix.
    """
    per_row = index.labels.sum(axis=1)
    bad = np.flatnonzero(per_row != 1)
    if not len(bad):
        return
    shown = [
        f"{index.ids[i]}: "
        + (", ".join(n for n, x in zip(label_names, index.labels[i], strict=True) if x) or "none")
        for i in bad
    ]
    raise DataError(
        f"split {split!r} (labels from {index.source or 'the source'}) is for a multiclass task "
        f"({', '.join(label_names)}), but {len(bad)} of {len(index)} rows have "
        f"{'no class' if (per_row[bad] == 0).all() else 'no class or several classes'}:"
        f"{_listing(shown)}\nFix: give each image exactly one class, or use a multilabel task."
    )


def patient_split(
    patients: Sequence[str],
    labels: np.ndarray,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> np.ndarray:
    """Assign whole patients to splits, stratified so rare labels reach every split.

    Iterative stratification (Sechidis et al., 2011) applied to patients instead of images:
    patients carrying the rarest labels are placed first, each into the split that most lacks that
    label relative to its target fraction; patients without findings fill the image-count deficit.

    Args:
        patients: patient id per image, length N.
        labels: bool[N, L].
        fractions: target fraction of images per split (sums to 1).
        seed: tie-breaking seed; the same seed gives the same split.

    Returns:
        int[N]: split number per image (index into `fractions`).
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    fractions = fractions / fractions.sum()
    names, inverse = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    num_patients, num_labels = len(names), labels.shape[1]
    per_patient = np.zeros((num_patients, num_labels), np.int64)
    np.add.at(per_patient, inverse, labels.astype(np.int64))
    sizes = np.bincount(inverse, minlength=num_patients)
    totals = per_patient.sum(axis=0)
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(num_patients)
    rarity = np.where(per_patient > 0, totals[None, :], np.iinfo(np.int64).max).min(axis=1)
    order = np.lexsort((tiebreak, rarity))
    need = fractions[:, None] * totals[None, :]
    need_images = fractions * len(inverse)
    assigned = np.empty(num_patients, np.int64)
    for p in order:
        positives = np.flatnonzero(per_patient[p])
        if positives.size:
            rarest = positives[np.argmin(totals[positives])]
            score = need[:, rarest] + 1e-6 * need_images
        else:
            score = need_images.copy()
        score = score + 1e-9 * rng.random(len(fractions))
        s = int(np.argmax(score))
        assigned[p] = s
        need[s] -= per_patient[p]
        need_images[s] -= sizes[p]
    return assigned[inverse]


def index_images(image_dir: str | os.PathLike) -> dict[str, Path]:
    """Map every file under `image_dir` (nested folders allowed) by its relative path.

    Args:
        image_dir: the image root, e.g. NIH's `images/` or a folder of `images_001/images/...`.

    Returns:
        relative POSIX path -> path.

    Raises:
        DataError: the folder does not exist.
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; check data.image_dir")
    found: dict[str, Path] = {}
    for dirpath, _, files in os.walk(root, followlinks=True):
        for name in files:
            full = Path(dirpath) / name
            found[full.relative_to(root).as_posix()] = full
    return found


def _normalise_ref(ref: str, root: Path) -> str | None:
    """A ref as a normalised relative POSIX path, or None when it points outside `root`."""
    ref = str(ref).replace("\\", "/")
    if re.match(r"^[A-Za-z]:/", ref):
        return None  # a Windows drive path cannot lie inside a POSIX image folder
    if ref.startswith("/"):
        rel = os.path.relpath(posixpath.normpath(ref), os.path.abspath(root))
        if rel == ".." or rel.startswith(".." + os.sep):  # maybe only through a symlink
            rel = os.path.relpath(os.path.realpath(ref), os.path.realpath(root))
        ref = rel.replace(os.sep, "/")
    ref = posixpath.normpath(ref)
    if ref == ".." or ref.startswith("../"):
        return None
    return ref


def _match_ref(
    ref: str, files: Mapping[str, Path], by_name: Mapping[str, list[str]], root_parts: Sequence[str]
) -> list[str]:
    """Relative paths under the image folder that a normalised ref can mean.

    The ref names the file exactly (relative to the image folder); else the image folder lies
    inside the ref's tree (the ref's leading folders are the image folder's own trailing folders,
    e.g. `files/p10/...` with data.image_dir=.../files); else the files lie deeper than the ref
    says (a file name, or `images/x.png`, under NIH's `images_001/images/`). A ref never falls back
    to a bare file name elsewhere: `train/x.png` does not match `val/x.png`.
    """
    if ref in files:
        return [ref]
    parts = ref.split("/")
    hits = set()
    for j in range(1, len(parts)):
        if j <= len(root_parts) and tuple(parts[:j]) == tuple(root_parts[-j:]):
            rest = "/".join(parts[j:])
            if rest in files:
                hits.add(rest)
    hits.update(rel for rel in by_name.get(parts[-1], ()) if rel.endswith("/" + ref))
    return sorted(hits)


def resolve_images(
    split: str,
    index: SplitIndex,
    files: Mapping[str, Path],
    image_dir: str | os.PathLike,
    on_missing: str,
) -> SplitIndex:
    """Turn each ref (a relative path or file name) into a file path; handle missing images.

    A ref matches the file it names relative to `image_dir`, or one file whose path ends with
    it (nested folders), or the rest of it when `image_dir` is one of its leading folders (see
    `_match_ref`). Refs that point outside `image_dir` (`../x.png`, an absolute path elsewhere)
    and refs that match several files fail: either would load an image the label file did not
    name.

    Args:
        split: split name, for messages.
        index: refs are relative paths or file names as written in the label file.
        files: `index_images(image_dir)`.
        image_dir: the image root, for messages.
        on_missing: "error" (fail naming the files) or "skip" (drop them with a logged count).

    Returns:
        The split with refs replaced by paths (rows with missing images dropped on "skip").

    Raises:
        DataError: refs outside image_dir or matching several files; missing images with
            on_missing="error".
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    root = Path(image_dir)
    root_parts = Path(os.path.abspath(root)).parts
    by_name: dict[str, list[str]] = {}
    for rel in files:
        by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
    paths, keep = [], np.ones(len(index), bool)
    outside, ambiguous = [], []
    for i, raw in enumerate(index.refs):
        ref = _normalise_ref(raw, root)
        hits = [] if ref is None else _match_ref(ref, files, by_name, root_parts)
        if ref is None:
            outside.append(str(raw))
        elif len(hits) > 1:
            ambiguous.append(f"{raw}: {', '.join(hits[:3])}{', ...' if len(hits) > 3 else ''}")
        keep[i] = len(hits) == 1
        paths.append(files[hits[0]] if len(hits) == 1 else None)
    if outside:
        raise DataError(
            f"{len(outside)} of {len(index)} image refs for split {split!r} in {index.source} "
            f"point outside the image folder {image_dir}:{_listing(outside)}\n"
            "Fix: write image paths relative to data.image_dir (e.g. x.png or sub/x.png), or "
            "point data.image_dir at a folder that contains them."
        )
    if ambiguous:
        raise DataError(
            f"{len(ambiguous)} of {len(index)} image refs for split {split!r} in {index.source} "
            f"match several files under {image_dir}:{_listing(ambiguous)}\n"
            "Fix: write these refs as paths relative to data.image_dir (e.g. sub/x.png), so "
            "each names one file."
        )
    missing = [index.ids[i] for i in np.flatnonzero(~keep)]
    if missing and on_missing == "error":
        raise DataError(
            f"{len(missing)} of {len(index)} images listed for split {split!r} in "
            f"{index.source} are missing from {image_dir}:{_listing(missing)}\n"
            "Fix: point data.image_dir at the folder that holds them (nested folders are "
            "searched), or set data.on_missing=skip to drop them."
        )
    if missing:
        log.warning(
            "split %s: skipped %d of %d images listed in %s but missing from %s "
            "(data.on_missing=skip)",
            split,
            len(missing),
            len(index),
            index.source,
            image_dir,
        )
    out = index.take(keep)
    out.refs = [p for p, k in zip(paths, keep, strict=True) if k]
    return out
