"""The embedded default task: procedurally generated chest-X-ray-like images, long-tailed labels.

With no data and no internet a newcomer still gets a meaningful run. Each image is a frontal
"radiograph" (body, lungs, heart, mediastinum, spine, ribs, aortic knob, noise) whose anatomy is
shared by the images of a patient; each of the 19 CXR-19 labels is drawn as its own finding
(an enlarged heart shadow, a basal opacity with a meniscus, small or large round densities, an
apical lucency with a pleural line, patchy or reticular opacities, ...), so a model can learn
every label while the rare ones stay hard for lack of examples. Label frequencies follow the
NIH-CXR-LT train column of the paper's Table II (at least 2 positives per label per split), with
co-occurrence (e.g. effusion with atelectasis, pneumothorax with subcutaneous emphysema). An
optional external split draws its frequencies from Table II's MIMIC column and shifts the
image statistics, like the paper's external test set.

A task with CXR-LT 2024's 40 labels (task=synthetic40) adds the 21 labels CXR-19 lacks, each
drawn as its own finding on top of the same images (a tube or a pacemaker, a vertebral wedge, a
flat air-fluid level, a spiculated lesion, ...; "Normal" = none of the other 39), with CXR-LT
2024's train frequencies. The CXR-19 labels and the pixels of images without an added finding are
those of the 19-label task: the added labels come from their own random streams.

Everything is deterministic from `data_seed`; images are generated on first use into the cache
and nothing is shipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from qcxr.data.common import check_loader
from qcxr.data.index import SplitIndex
from qcxr.data.labels import (
    CXR19,
    CXR40,
    CXR_LT_2024_TRAIN_COUNTS,
    CXR_LT_2024_TRAIN_SIZE,
    MIMIC_CXR_LT_TEST_COUNTS,
    MIMIC_CXR_LT_TEST_SIZE,
    NIH_CXR_LT_TRAIN_COUNTS,
    NIH_CXR_LT_TRAIN_SIZE,
    resolve_labels,
)
from qcxr.data.mimic import build_module
from qcxr.data.module import DataModule, ImageStore
from qcxr.data.preprocess import make_preprocess_config

GENERATOR_VERSION = 1  # bump when the images for the same parameters change
MIN_POSITIVES_PER_SPLIT = 2
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "external": 3}

# Findings that tend to appear together (child: parents); a parent's positives make the child
# four times as likely to be drawn for that image.
_COOCCURS = {
    "Atelectasis": ("Effusion",),
    "Effusion": ("Infiltration",),
    "Pneumonia": ("Infiltration", "Consolidation"),
    "Consolidation": ("Infiltration",),
    "Nodule": ("Mass",),
    "Cardiomegaly": ("Effusion",),
    "Edema": ("Cardiomegaly", "Effusion"),
    "Subcutaneous Emphysema": ("Pneumothorax",),
    "Pneumomediastinum": ("Subcutaneous Emphysema", "Pneumothorax"),
    "Emphysema": ("Pneumothorax",),
    "Calcification of the Aorta": ("Tortuous Aorta",),
    "Fibrosis": ("Pleural Thickening",),
}


# CXR-40's labels that CXR-19 lacks, in CXR-40 order: drawn and rendered only for tasks that ask
# for one of them, from random streams of their own.
EXTRA_LABELS = tuple(n for n in CXR40 if n not in CXR19)
# Every label the generator draws: CXR-19's columns first, so a CXR-19 task's columns never move.
SYNTHETIC_LABELS = CXR19 + EXTRA_LABELS
_EXTRA_STREAM = 40  # folded into the added labels' and findings' seeds

# Co-occurrence of the added labels (child: parents, drawn earlier because more frequent or from
# CXR-19); as in `_COOCCURS`, each positive parent makes the child four times as likely.
_EXTRA_COOCCURS = {
    "Lung Opacity": ("Pneumonia", "Consolidation", "Edema", "Atelectasis", "Infiltration"),
    "Support Devices": ("Edema", "Pneumothorax"),
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
    "Rib Fracture": ("Fracture",),
    "Clavicle Fracture": ("Fracture",),
    "Adenopathy": ("Mass",),
    "Granuloma": ("Nodule",),
    "Lung Lesion": ("Mass", "Nodule"),
    "Tuberculosis": ("Granuloma", "Fibrosis"),
    "Pulmonary Hypertension": ("Cardiomegaly", "Enlarged Cardiomediastinum"),
    "Infarction": ("Pulmonary Embolism",),
    "Hydropneumothorax": ("Pneumothorax", "Effusion"),
    "Pleural Other": ("Pleural Thickening", "Effusion"),
    "Lobar Atelectasis": ("Atelectasis",),
    "Round(ed) Atelectasis": ("Atelectasis",),
}


def draw_extra_labels(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CXR-40's added labels for images whose CXR-19 labels are drawn: long-tailed, co-occurring.

    Label l (other than "Normal") has max(2, round(N * count / total)) positives in CXR-LT 2024's
    train proportions (`CXR_LT_2024_TRAIN_COUNTS`); sicker images (more CXR-19 findings) get more.
    "Normal" is positive exactly where none of the other 39 labels is.

    Args:
        base: bool[N, 19], the images' CXR-19 labels.
        rng: random generator of the added labels (not the one that drew `base`).

    Returns:
        bool[N, 21] in `EXTRA_LABELS` order.

    Raises:
        ValueError: too few images for every label to get its positives and some "Normal" ones.
    """
    n = len(base)
    y = np.zeros((n, len(EXTRA_LABELS)), bool)
    col = {name: j for j, name in enumerate(SYNTHETIC_LABELS)}
    both = np.concatenate([base, y], axis=1)
    sickness = base.sum(axis=1) + rng.gamma(0.5, 1.0, n)
    drawn = [name for name in EXTRA_LABELS if name != "Normal"]
    for name in sorted(drawn, key=lambda m: -CXR_LT_2024_TRAIN_COUNTS[m]):
        k = round(n * CXR_LT_2024_TRAIN_COUNTS[name] / CXR_LT_2024_TRAIN_SIZE)
        k = min(n, max(MIN_POSITIVES_PER_SPLIT, k))
        weight = 0.1 + sickness
        for parent in _EXTRA_COOCCURS.get(name, ()):
            weight = weight * np.where(both[:, col[parent]], 4.0, 1.0)
        chosen = rng.choice(n, size=k, replace=False, p=weight / weight.sum())
        both[chosen, col[name]] = True
    both[:, col["Normal"]] = ~both.any(axis=1)
    normal = int(both[:, col["Normal"]].sum())
    if normal < MIN_POSITIVES_PER_SPLIT:
        raise ValueError(
            f"a synthetic split of {n} images has {normal} image(s) without findings, too few "
            f"for the label 'Normal' (at least {MIN_POSITIVES_PER_SPLIT}); fix: raise "
            "data.num_train / num_val / num_test / num_external (the 40-label task needs about "
            "100 images per split)"
        )
    return both[:, len(CXR19) :]


def _segment(u, v, a, b):
    """Distance of every pixel to the segment from point a to point b."""
    (au, av), (bu, bv) = a, b
    du, dv = bu - au, bv - av
    t = np.clip(((u - au) * du + (v - av) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(u - au - t * du, v - av - t * dv)


def _draw_extra(img, has, geo, rng) -> np.ndarray:
    """Add CXR-40's added findings to an image in progress (before noise).

    Args:
        img: float[r, r], the image so far.
        has: label -> bool for `EXTRA_LABELS`.
        geo: the image's geometry from `render` (u, v, lungs, lung radii, edge, px).
        rng: random generator of this image's added findings.

    Returns:
        float[r, r].
    """
    u, v, lung_l, lung_r, lung_any = geo["u"], geo["v"], geo["l"], geo["r"], geo["any"]
    edge, px = geo["edge"], geo["px"]
    side = rng.choice([-1.0, 1.0])
    lung_side = lung_r if side > 0 else lung_l
    thin = max(px, 0.008)
    if has["Support Devices"]:  # a line down the midline (tube) and/or a pacemaker with its lead
        kind = rng.integers(0, 3)
        if kind != 1:
            tip = rng.uniform(-0.2, 0.45)
            img += 0.35 * _soft(_segment(u, v, (0.02, -1.0), (0.03, tip)) - thin, px)
        if kind != 0:
            box = np.maximum(np.abs(u - 0.58) - 0.07, np.abs(v + 0.68) - 0.045)
            img += 0.55 * _soft(box, px)
            img += 0.35 * _soft(_segment(u, v, (0.55, -0.64), (0.08, 0.25)) - thin, px)
    if has["Lung Opacity"]:  # faint, diffuse haze over the lower two thirds of one lung
        img += 0.13 * lung_side * np.clip((v + 0.35) / 0.6, 0.0, 1.0)
    if has["Enlarged Cardiomediastinum"]:  # widened upper mediastinum
        img += 0.15 * _soft(np.abs(u) - 0.21, 2 * edge) * _soft(v - 0.15, 2 * edge)
    if has["Fracture"]:  # a wedged, denser vertebral body
        v0 = rng.uniform(-0.3, 0.3)
        img += 0.28 * _soft(np.abs(u) - 0.055, px) * _soft(np.abs(v - v0) - 0.02 - 0.15 * u, px)
    if has["Rib Fracture"]:  # a gap across the ribs with a bright callus beside it
        v0 = rng.uniform(-0.4, 0.2)
        gap = _soft(np.abs(u - side * 0.55) - thin, px) * _soft(np.abs(v - v0) - 0.08, px)
        img -= 0.2 * gap * lung_any
        img += 0.3 * _soft(_ellipse(u, v, side * 0.58, v0, 0.035, 0.025), px)
    if has["Adenopathy"]:  # lobulated right paratracheal and hilar nodes
        for vv in rng.uniform(-0.4, 0.0, 3):
            img += 0.22 * _soft(_ellipse(u, v, -0.14 - rng.uniform(0, 0.04), vv, 0.045, 0.04), px)
    if has["Granuloma"]:  # tiny, very bright calcified dots
        for _ in range(rng.integers(1, 4)):
            cu, cv = rng.choice([-1, 1]) * rng.uniform(0.2, 0.5), rng.uniform(-0.45, 0.3)
            rad = max(0.025, 0.75 * px)  # at least a pixel at any resolution
            img += 0.5 * _soft(_ellipse(u, v, cu, cv, rad, rad), px)
    if has["Fissure"]:  # a thin horizontal line across the right mid lung (minor fissure)
        v0 = rng.uniform(-0.08, 0.05)
        img += 0.3 * _soft(np.abs(v - v0) - thin, px) * lung_l * (u < -0.2)
    if has["Lung Lesion"]:  # spiculated density
        cu, cv = side * rng.uniform(0.28, 0.45), rng.uniform(-0.35, 0.15)
        ang = np.arctan2(v - cv, u - cu)
        rad = 0.07 * (1.0 + 0.4 * np.sin(7 * ang + rng.uniform(0, 6.3)))
        img += 0.26 * _soft(np.hypot(u - cu, v - cv) - rad, px)
    if has["Tuberculosis"]:  # apical opacity with a thick-walled cavity
        cu, cv = side * 0.35, -0.45
        img += 0.18 * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / 0.012) * lung_side
        ring = np.hypot(u - cu, v - cv)
        img += 0.3 * _soft(np.abs(ring - 0.05) - 0.015, px) - 0.2 * _soft(ring - 0.035, px)
    if has["Pulmonary Embolism"]:  # regional oligaemia (Westermark): a lucent, featureless zone
        img -= 0.13 * _soft(_ellipse(u, v, side * 0.37, -0.2, 0.15, 0.15), 3 * edge) * lung_side
    if has["Pulmonary Hypertension"]:  # large, smooth central pulmonary arteries
        for sd in (-1.0, 1.0):
            img += 0.22 * _soft(_ellipse(u, v, sd * 0.18, -0.05, 0.075, 0.09), 2 * edge)
    if has["Kyphosis"]:  # a curved, dense thoracic spine
        img += 0.16 * _soft(np.abs(u - 0.09 * np.cos(1.6 * v)) - 0.04, edge) * (np.abs(v) < 0.7)
    if has["Infarction"]:  # peripheral pleural-based wedge (Hampton's hump)
        img += 0.26 * _soft(_ellipse(u, v, side * 0.58, 0.22, 0.1, 0.07), edge) * lung_side
    if has[
        "Hydropneumothorax"
    ]:  # lucent upper part over a dense lower part: a flat air-fluid level
        level = rng.uniform(0.05, 0.2)
        img += 0.32 * _soft(level - v, px) * lung_side
        img -= 0.18 * _soft(v - level, px) * _soft(-0.25 - v, 2 * edge) * lung_side
    if has["Pleural Other"]:  # calcified plaques on the hemidiaphragm
        for du in rng.uniform(-0.12, 0.12, 2):
            img += 0.4 * _soft(_ellipse(u, v, side * 0.32 + du, 0.42, 0.07, 0.03), px)
    if has["Azygos Lobe"]:  # a fine curved line in the right upper zone ending in a teardrop
        arc = np.abs(_ellipse(u, v, 0.02, -0.7, 0.16, 0.4)) * 0.16
        img += 0.3 * _soft(arc - thin, px) * (u < -0.05) * (v < -0.3)
        img += 0.3 * _soft(_ellipse(u, v, -0.13, -0.31, 0.025, 0.035), px)
    if has["Round(ed) Atelectasis"]:  # round basal density with a comet tail towards the hilum
        cu, cv = side * 0.5, 0.25
        img += 0.3 * _soft(_ellipse(u, v, cu, cv, 0.06, 0.06), edge) * lung_side
        img += 0.2 * _soft(_segment(u, v, (cu, cv), (side * 0.2, 0.02)) - thin, px) * lung_side
    if has["Clavicle Fracture"]:  # a clavicle broken in its middle, the lateral part displaced
        for lateral, drop in ((False, 0.0), (True, rng.uniform(0.03, 0.05))):
            a = (side * (0.36 if lateral else 0.12), -0.62 - drop)
            b = (side * (0.62 if lateral else 0.32), -0.68 - drop)
            img += 0.22 * _soft(_segment(u, v, a, b) - 0.022, px)
    if has["Lobar Atelectasis"]:  # a dense triangle against the upper mediastinum (a "sail")
        depth = np.clip((v + 0.55) / 0.45, 0.0, 1.0)
        tri = (u * side > 0.1) * (u * side < 0.1 + 0.3 * (1.0 - depth)) * (v > -0.55) * (v < -0.1)
        img += 0.28 * tri * lung_side
    return img


def draw_labels(
    num_images: int, counts: dict[str, int], total: int, rng: np.random.Generator
) -> np.ndarray:
    """Long-tailed, co-occurring CXR-19 labels with exact per-label positive counts.

    Args:
        num_images: N.
        counts: positives per label in the reference data.
        total: images in the reference data.
        rng: random generator.

    Returns:
        bool[N, 19] in CXR-19 order; label l has max(2, round(N * counts[l] / total)) positives.
    """
    y = np.zeros((num_images, len(CXR19)), bool)
    col = {n: j for j, n in enumerate(CXR19)}
    # A latent "how sick" score: most images healthy, a few with several findings.
    sickness = rng.gamma(0.5, 1.0, num_images)
    for name in sorted(CXR19, key=lambda n: -counts[n]):
        k = min(num_images, max(MIN_POSITIVES_PER_SPLIT, round(num_images * counts[name] / total)))
        weight = 0.1 + sickness
        for parent in _COOCCURS.get(name, ()):
            weight = weight * np.where(y[:, col[parent]], 4.0, 1.0)
        chosen = rng.choice(num_images, size=k, replace=False, p=weight / weight.sum())
        y[chosen, col[name]] = True
    return y


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (d < 0), 0 outside, a smooth ramp of width `edge`."""
    return np.clip(0.5 - d / edge, 0.0, 1.0)


def _ellipse(u, v, cu, cv, ru, rv):
    return np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2) - 1.0


def render(
    labels: np.ndarray,
    anatomy: np.ndarray,
    resolution: int,
    rng: np.random.Generator,
    shift: bool = False,
    extra: np.ndarray | None = None,
    extra_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Draw one chest-X-ray-like image with the findings of its labels.

    Args:
        labels: bool[19], CXR-19 order.
        anatomy: float[6] patient anatomy in [0, 1) (body width, lung size, heart size, ...).
        resolution: image side in pixels.
        rng: random generator of this image (finding positions, sizes, noise).
        shift: apply the external split's domain shift (contrast, gamma, blur-like noise).
        extra: bool[21], CXR-40's added labels (`EXTRA_LABELS` order), or None; without a positive
            one the image is that of `labels` alone, pixel for pixel.
        extra_rng: random generator of the added findings (required when one is positive).

    Returns:
        uint8 [resolution, resolution].
    """
    r = resolution
    g = (np.arange(r) + 0.5) / r * 2.0 - 1.0
    u, v = np.meshgrid(g, g)  # u: left-right, v: top-down, both in [-1, 1]
    px = 2.0 / r
    edge = max(2 * px, 0.02)
    has = {n: bool(x) for n, x in zip(CXR19, labels, strict=True)}
    a = anatomy
    du, dv = rng.normal(0, 0.015, 2)  # patient positioning
    u, v = u - du, v - dv

    img = np.full((r, r), 0.06)
    img += 0.42 * _soft(_ellipse(u, v, 0.0, 0.12, 0.80 + 0.1 * a[0], 1.02), 4 * edge)
    lung_ru, lung_rv = 0.25 + 0.04 * a[1], 0.50 + 0.06 * a[1]
    if has["Emphysema"]:  # hyperinflated, hyperlucent lungs, flattened diaphragm
        lung_ru, lung_rv = lung_ru * 1.08, lung_rv * 1.14
    lungs = []
    for side in (-1.0, 1.0):
        lung = _soft(_ellipse(u, v, side * 0.37, -0.05, lung_ru, lung_rv), 3 * edge)
        lungs.append(lung)
    lung_l, lung_r = lungs
    lung_any = np.maximum(lung_l, lung_r)
    darkness = 0.30 + (0.10 if has["Emphysema"] else 0.0)
    img -= darkness * lung_any
    ribs = 0.05 * np.clip(np.sin(v * np.pi * 7.0 + 2.5 * u**2 + a[4] * 6), 0, 1) * lung_any
    img += ribs
    img += 0.12 * _soft(np.abs(u) - 0.11, 2 * edge) * _soft(v - 0.45, 2 * edge)  # mediastinum
    img += 0.10 * _soft(np.abs(u) - 0.045, edge)  # spine
    heart_r = 0.22 + 0.03 * a[2]
    if has["Cardiomegaly"]:  # cardiothoracic ratio well above 0.5
        heart_r = rng.uniform(0.34, 0.39)
    img += 0.20 * _soft(_ellipse(u, v, 0.06, 0.27, heart_r, 0.75 * heart_r), 4 * edge)
    knob_u, knob_v, knob_r = 0.13, -0.33, 0.055
    if has[
        "Tortuous Aorta"
    ]:  # bulging, laterally displaced aortic knob and a wavy descending aorta
        knob_u, knob_r = 0.20 + rng.uniform(0, 0.04), 0.08
        wave = 0.12 + 0.05 * np.sin((v + 0.3) * 9.0)
        img += 0.12 * _soft(np.abs(u - wave) - 0.025, edge) * _soft(np.abs(v + 0.05) - 0.3, edge)
    img += 0.18 * _soft(_ellipse(u, v, knob_u, knob_v, knob_r, knob_r), edge)
    if has["Calcification of the Aorta"]:  # thin bright rim of the aortic knob
        ring = np.abs(_ellipse(u, v, knob_u, knob_v, knob_r * 0.9, knob_r * 0.9)) * knob_r
        img += 0.35 * _soft(ring - max(0.012, px), px)

    side = rng.choice([-1.0, 1.0])
    lung_side = lung_r if side > 0 else lung_l
    if has["Effusion"]:  # basal opacity with a meniscus rising laterally
        s2 = side if rng.random() < 0.7 else -side
        both = rng.random() < 0.3
        for sd in (-1.0, 1.0) if both else (s2,):
            level = 0.18 + rng.uniform(0, 0.15) - 0.5 * ((u - sd * 0.37) * sd).clip(0)
            lung_sd = lung_r if sd > 0 else lung_l
            img += 0.34 * _soft(level - v, 2 * edge) * lung_sd
    if has["Atelectasis"]:  # plate-like band, oblique, lower zone
        v0, slope = rng.uniform(0.05, 0.3), rng.uniform(-0.3, 0.3)
        band = np.abs((v - v0) - slope * (u - side * 0.37)) - 0.025
        img += 0.22 * _soft(band, edge) * lung_side
    if has["Infiltration"]:  # patchy opacities scattered over both lungs
        for _ in range(rng.integers(4, 8)):
            cu, cv = rng.choice([-0.37, 0.37]) + rng.normal(0, 0.1), rng.uniform(-0.4, 0.3)
            s = rng.uniform(0.05, 0.09)
            img += 0.10 * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * s * s)) * lung_any
    if has["Mass"]:  # large round density
        cu, cv, rad = (
            side * rng.uniform(0.28, 0.45),
            rng.uniform(-0.35, 0.2),
            rng.uniform(0.10, 0.14),
        )
        img += 0.30 * _soft(_ellipse(u, v, cu, cv, rad, rad), 2 * edge)
    if has["Nodule"]:  # small, well-defined round density
        for _ in range(rng.integers(1, 3)):
            cu, cv = rng.choice([-1, 1]) * rng.uniform(0.25, 0.5), rng.uniform(-0.45, 0.25)
            rad = rng.uniform(0.035, 0.05)
            img += 0.32 * _soft(_ellipse(u, v, cu, cv, rad, rad), edge)
    if has["Pneumonia"]:  # one dense, cloudy, textured lower-zone opacity
        cu, cv, s = side * rng.uniform(0.3, 0.42), rng.uniform(0.0, 0.25), rng.uniform(0.12, 0.16)
        cloud = np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * s * s))
        texture = 0.75 + 0.25 * np.sin(u * 31 + a[5] * 5) * np.sin(v * 27)
        img += 0.28 * cloud * texture * lung_side
    if has["Pneumothorax"]:  # apical lucency without lung markings, bounded by a pleural line
        cu, rad = side * 0.37, rng.uniform(0.18, 0.26)
        pleura = _ellipse(u, v, cu + side * 0.06, -0.55, lung_ru * 0.95, rad + 0.2)
        region = _soft(-pleura, edge) * lung_side * _soft(v + 0.15, 2 * edge)
        img = img - region * (0.14 + ribs)
        img += 0.2 * _soft(np.abs(pleura) - 0.03, px) * lung_side * _soft(v + 0.15, 2 * edge)
    if has["Consolidation"]:  # homogeneous dense upper/mid-zone opacity, sharp lower border
        cv = rng.uniform(-0.35, -0.05)
        block = _soft(_ellipse(u, v, side * 0.37, cv, 0.2, 0.17), 2 * edge)
        img += 0.30 * block * lung_side
    if has["Edema"]:  # bilateral, symmetric perihilar haze ("bat wings")
        for sd in (-1.0, 1.0):
            img += 0.16 * np.exp(-((u - sd * 0.22) ** 2 / 0.03 + (v - 0.0) ** 2 / 0.06)) * lung_any
    if has["Fibrosis"]:  # reticular net in the lower, peripheral zones
        net = np.clip(np.sin(u * 55 + a[3] * 9) * np.sin(v * 55), 0, 1) ** 2
        zone = _soft(0.05 - v, 4 * edge) * _soft(0.2 - np.abs(u), edge)
        img += 0.16 * net * zone * lung_any
    if has["Pleural Thickening"]:  # bright rim along the lateral lung border
        rim = _ellipse(u, v, side * 0.37, -0.05, lung_ru, lung_rv)
        lateral = _soft(-(u * side - 0.37), edge)
        img += 0.30 * _soft(np.abs(rim + 0.06) - 0.05, edge) * lateral * (v < 0.35)
    if has["Hernia"]:  # retrocardiac round density with an air-fluid level
        cv = 0.40 + rng.uniform(-0.03, 0.03)
        bubble = _soft(_ellipse(u, v, -0.02, cv, 0.09, 0.08), edge)
        img += bubble * np.where(v < cv, -0.25, 0.25)
    if has["Pneumomediastinum"]:  # lucent streaks outlining the mediastinum
        for sd in (-1.0, 1.0):
            streak = _soft(np.abs(u - sd * 0.125) - 0.012, px) * _soft(np.abs(v + 0.3) - 0.38, edge)
            img -= 0.22 * streak
    if has["Pneumoperitoneum"]:  # free air: lucent crescent under a hemidiaphragm
        cu = side * 0.37
        dome = _ellipse(u, v, cu, 0.45, 0.24, 0.12)
        img -= 0.30 * _soft(np.abs(dome - 0.25) - 0.12, edge) * (v > 0.47) * (np.abs(u - cu) < 0.22)
    if has["Subcutaneous Emphysema"]:  # gas bubbles and streaks in the lateral chest wall
        for _ in range(rng.integers(4, 8)):
            cu, cv = side * rng.uniform(0.70, 0.82), rng.uniform(-0.6, 0.4)
            img -= 0.25 * _soft(_ellipse(u, v, cu, cv, 0.02, 0.06), edge)

    if extra is not None and extra.any():
        geo = {"u": u, "v": v, "l": lung_l, "r": lung_r, "any": lung_any, "edge": edge, "px": px}
        img = _draw_extra(img, dict(zip(EXTRA_LABELS, extra, strict=True)), geo, extra_rng)
    if shift:  # the external split: another scanner (contrast, gamma, offset)
        img = 0.05 + 0.9 * np.clip(img, 0, 1) ** 0.8
    img += rng.normal(0, 0.025, img.shape)  # quantum noise
    lowfreq = Image.fromarray(rng.normal(0, 1, (5, 5)).astype(np.float32), mode="F")
    img += 0.03 * np.asarray(lowfreq.resize((r, r), Image.Resampling.BILINEAR))  # exposure
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


class SyntheticImages(ImageStore):
    """Generates image i of a synthetic split on demand (the cache keeps it)."""

    def __init__(
        self, labels, anatomy, patient_of, resolution, data_seed, split, identity, extra=None
    ):
        self.labels, self.anatomy, self.patient_of, self.extra = labels, anatomy, patient_of, extra
        self.resolution, self.data_seed, self.split, self.prefix = (
            resolution,
            data_seed,
            split,
            identity,
        )

    def __len__(self) -> int:
        return len(self.labels)

    def identity(self, i: int) -> str:
        return f"{self.prefix}:{i}"

    def read(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.data_seed, _SPLIT_CODES[self.split], i, 1])
        extra_rng = np.random.default_rng(
            [self.data_seed, _SPLIT_CODES[self.split], i, 1, _EXTRA_STREAM]
        )
        img = render(
            self.labels[i],
            self.anatomy[self.patient_of[i]],
            self.resolution,
            rng,
            shift=self.split == "external",
            extra=None if self.extra is None else self.extra[i],
            extra_rng=extra_rng,
        )
        return img[:, :, None]


def draw_classes(num_images: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """One class per image, long-tailed: class k has weight 1 / (k + 1), at least 2 images each.

    Args:
        num_images: N (at least 2 * num_classes).
        num_classes: C.
        rng: random generator.

    Returns:
        int64[N] class indices.
    """
    weights = 1.0 / np.arange(1, num_classes + 1)
    counts = np.maximum(MIN_POSITIVES_PER_SPLIT, np.floor(num_images * weights / weights.sum()))
    counts = counts.astype(np.int64)
    counts[0] += num_images - counts.sum()  # the rest to the most frequent class
    if counts[0] < MIN_POSITIVES_PER_SPLIT:
        raise ValueError(
            f"{num_images} images are too few for {num_classes} classes with at least "
            f"{MIN_POSITIVES_PER_SPLIT} each; raise data.num_train / num_val / num_test"
        )
    return rng.permutation(np.repeat(np.arange(num_classes), counts))


def _make_split(
    split, n, data_seed, resolution, classes: Sequence[str] | None = None, with_extra=False
) -> tuple[SplitIndex, SyntheticImages]:
    """One split's labels and image store: bool[n, 40] (`SYNTHETIC_LABELS`) when `with_extra`,
    else bool[n, 19] (CXR-19), or one-hot over `classes` for a multiclass task."""
    rng = np.random.default_rng([data_seed, _SPLIT_CODES[split], 0])
    onehot = None
    if classes is not None:  # multiclass: one finding (or "No Finding") per image
        cls = draw_classes(n, len(classes), rng)
        onehot = cls[:, None] == np.arange(len(classes))[None, :]
        y = np.zeros((n, len(CXR19)), bool)
        for k, name in enumerate(classes):
            if name in CXR19:
                y[cls == k, CXR19.index(name)] = True
    elif split == "external":
        y = draw_labels(n, MIMIC_CXR_LT_TEST_COUNTS, MIMIC_CXR_LT_TEST_SIZE, rng)
    else:
        y = draw_labels(n, NIH_CXR_LT_TRAIN_COUNTS, NIH_CXR_LT_TRAIN_SIZE, rng)
    # Patients with 1-4 images each (patient-wise splits: a patient lives in one split only).
    sizes = rng.integers(1, 5, n)
    patient_of = np.repeat(np.arange(n), sizes)[:n]
    anatomy = rng.random((n, 6))
    patients = [f"{split}-{p:05d}" for p in patient_of]
    ids = [f"synthetic/{split}/{i:05d}.png" for i in range(n)]
    identity = f"synthetic:v{GENERATOR_VERSION}:{data_seed}:{resolution}:{split}:{n}"
    if classes is not None:  # other labels, other images: never the multilabel set's entries
        identity += ":multiclass:" + "|".join(classes)
    extra = None
    if with_extra:  # CXR-40's added labels and findings, from streams of their own
        extra_rng = np.random.default_rng([data_seed, _SPLIT_CODES[split], 0, _EXTRA_STREAM])
        extra = draw_extra_labels(y, extra_rng)
        identity += ":cxr40"  # the added findings change the images
    store = SyntheticImages(y, anatomy, patient_of, resolution, data_seed, split, identity, extra)
    labels = y if onehot is None else onehot
    if extra is not None:
        labels = np.concatenate([y, extra], axis=1)
    index = SplitIndex(ids, list(range(n)), labels, patients, source=f"synthetic ({split})")
    return index, store


def synthetic(
    task: str | Sequence[str] = "cxr19",
    *,
    num_train: int = 1500,
    num_val: int = 300,
    num_test: int = 300,
    num_external: int = 300,
    resolution: int | None = None,
    data_seed: int = 0,
    on_missing: str = "error",
    external_image_dir: str | os.PathLike | None = None,
    external_label_dir: str | os.PathLike | None = None,
    **loader: Any,
) -> DataModule:
    """The synthetic long-tailed chest-X-ray-like task (the embedded default).

    The images and labels depend only on `data_seed` and the sizes, never on `seed` (the run
    seed), so runs with different seeds train on the same data. CXR-8/14 tasks use the first
    8/14 labels of the same images. With `kind="multiclass"` (task synthetic_mc) each image shows
    exactly one of the task's findings, or none for the class "No Finding", class k drawn with
    weight 1 / (k + 1); the external split then has the same class frequencies (and the
    shifted image statistics). A multilabel task may also ask for CXR-40's other labels
    (task=synthetic40): their findings are then added to the images (see `draw_extra_labels`).

    Args:
        task: label-set name (cxr8, cxr14, cxr19, cxr40, cxr26) or label names among CXR-40's.
        num_train: train images.
        num_val: val images.
        num_test: test images.
        num_external: external test images (MIMIC-like label frequencies, shifted image
            statistics); 0 for none.
        resolution: generated image side; default the preprocessing resize size (no resampling).
        data_seed: seed of the generated dataset.
        on_missing: accepted for a uniform interface (generated images are never missing).
        external_image_dir: a real external set (MIMIC-CXR-JPG root) instead of the synthetic one.
        external_label_dir: its labels.
        **loader: the DataModule's loader settings (`qcxr.data.common.LOADER_SETTINGS`);
            without preprocessing or image_size, 64 px crops.

    Returns:
        A DataModule with train, val, test and (if num_external or external dirs) external.
    """
    labels = resolve_labels(task)
    multiclass = loader.get("kind") == "multiclass"
    known = CXR19 + (("No Finding",) if multiclass else EXTRA_LABELS)
    unknown = [n for n in labels if n not in known]
    if unknown:
        raise ValueError(
            f"the synthetic task draws the CXR-40 labels (CXR-LT 2024 task 1; a multiclass task "
            f"the CXR-19 labels and 'No Finding'); unknown: {unknown}"
        )
    with_extra = not multiclass and any(n in EXTRA_LABELS for n in labels)
    loader = check_loader("synthetic", loader)
    resolution = int(resolution or _resize_size(loader))
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    if num_external and external_image_dir is None:
        sizes["external"] = num_external
    splits = {}
    for split, n in sizes.items():
        index, store = _make_split(
            split, int(n), int(data_seed), resolution, labels if multiclass else None, with_extra
        )
        if not multiclass:
            index.labels = index.labels[:, [SYNTHETIC_LABELS.index(n) for n in labels]]
        index.extra["store"] = store
        splits[split] = index
    return build_module(
        "synthetic",
        splits,
        labels,
        external_image_dir=external_image_dir,
        external_label_dir=external_label_dir,
        on_missing=on_missing,
        **loader,
    )


def _resize_size(loader: dict) -> int:
    """The side of the cached images the loader settings ask for (the generated resolution)."""
    if loader.get("preprocessing") is not None:
        prep = loader["preprocessing"]
        return int(prep["resize_size"] if isinstance(prep, Mapping) else prep.resize_size)
    if loader.get("image_size") is None:
        loader["image_size"] = 64  # the tiny backbone takes any resolution
    return make_preprocess_config(loader["image_size"], loader.get("resize_size")).resize_size
