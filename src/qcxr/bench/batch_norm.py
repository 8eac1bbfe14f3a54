"""Train-mode against fixed-statistics batch norm: MedMNIST v2's ResNet-18 (28) from scratch on
PneumoniaMNIST, the same code, seed and batches, only the batch-norm mode differs.

`python -m qcxr.bench batch-norm --npz ../shared/data/medmnist/pneumoniamnist.npz [--epochs 2]
[--batch 128] [--lr 1e-3] [--limit N] [--eval-limit N] [--out bench_results/batch_norm.json]`

Both arms build `backbone=resnet18_28` + CDL (Dense 512 -> 2) from one init key and train with
Adam and softmax cross-entropy on the same shuffled batches (MedMNIST's protocol, shortened:
`--epochs`). "train-mode" is the trainer's step (batch statistics, running statistics in the
train state, evaluation on them); "fixed" is what the trainer did before issue 22: batch norm
always on the initial `batch_stats` (mean 0, var 1), never updated. Images are scaled to [0, 1]
and normalised with mean = std = 0.5 (MedMNIST's transform). Reports val and test AUC and ACC
after the last epoch, computed as MedMNIST does for a binary task (AUC of the class-1 softmax
score, ACC at 0.5) with scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import roc_auc_score

from qcxr.models.backbones import resnet18_28
from qcxr.models.classifier import Classifier
from qcxr.models.heads import cdl_head
from qcxr.train import optim, steps

log = logging.getLogger("qcxr.bench.batch_norm")
ARMS = ("train-mode", "fixed")


def load_split(
    npz, split: str, limit: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A PneumoniaMNIST split: images f32[N, 28, 28, 1] in [-1, 1], labels int64[N].

    With `limit`, a random subset of that many images (seeded), in file order: the file's train
    split is sorted by class (its first 1,024 images are all pneumonia), so a prefix would not do.
    """
    labels = npz[f"{split}_labels"].reshape(-1).astype(np.int64)
    keep = np.arange(len(labels))
    if limit is not None and limit < len(labels):
        keep = np.sort(np.random.default_rng([seed, 22]).choice(len(labels), limit, replace=False))
    images = npz[f"{split}_images"][keep].astype(np.float32) / 255.0
    return ((images - 0.5) / 0.5)[..., None], labels[keep]


def _batches(images, labels, batch: int, order: np.ndarray):
    """Fixed-size masked batches in `order` (the last one padded)."""
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        pad = batch - len(idx)
        full = np.concatenate([idx, np.zeros(pad, np.int64)])
        yield {
            "image": images[full],
            "labels": np.eye(2, dtype=bool)[labels[full]],
            "mask": np.arange(batch) < len(idx),
        }


def train_arm(arm: str, data: dict, args) -> dict:
    """Train one arm; returns its metrics and timings."""
    model = Classifier(resnet18_28(), cdl_head(2))
    params, model_state = model.init(jax.random.key(args.seed))
    images, labels = data["train"]
    steps_per_epoch = -(-len(labels) // args.batch)
    tx = optim.adam(
        args.lr,
        total_steps=args.epochs * steps_per_epoch,
        trainable=optim.freeze_labels(params, {"backbone": False}),
    )
    if arm == "train-mode":
        state = steps.init_state(params, tx, model_state)

        def apply(p, batch, *, model_state, train=False):
            return model.logits(p, model_state, batch["image"], train=train)

        train = steps.make_train_step(apply, tx, "multiclass", stateful=True)
        evaluate = steps.make_eval_step(apply, "multiclass", stateful=True)
    else:  # the pre-issue-22 trainer: no model state, the init statistics a constant
        state = steps.init_state(params, tx)
        fixed = jax.tree.map(jnp.array, model_state)  # own buffers: the train step donates

        def apply(p, batch):
            return model.logits(p, fixed, batch["image"])

        train = steps.make_train_step(apply, tx, "multiclass")
        evaluate = steps.make_eval_step(apply, "multiclass")
    history = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        order = np.random.default_rng([args.seed, epoch]).permutation(len(labels))
        losses = []
        for batch in _batches(images, labels, args.batch, order):
            state, loss = train(state, batch)
            losses.append(float(loss))
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses))})
        log.info("%s epoch %d: train loss %.4f", arm, epoch + 1, history[-1]["train_loss"])
    train_s = time.perf_counter() - start
    out = {"arm": arm, "history": history, "train_s": train_s}
    for split in ("val", "test"):
        x, y = data[split]
        scores = []
        for batch in _batches(x, y, args.batch, np.arange(len(y))):
            probs, _ = evaluate(state["params"], batch, state["model_state"])
            scores.append(np.asarray(probs)[batch["mask"], 1])
        score = np.concatenate(scores)
        out[f"{split}_auc"] = float(roc_auc_score(y, score))
        out[f"{split}_acc"] = float(np.mean((score > 0.5) == y))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both arms; write a Markdown table to stdout and JSON to --out.

    Args:
        argv: command-line arguments (see the module docstring).

    Returns:
        Exit status 0.
    """
    p = argparse.ArgumentParser(prog="python -m qcxr.bench batch-norm", description=__doc__)
    p.add_argument("--npz", required=True, help="pneumoniamnist.npz")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="a random N of the train images")
    p.add_argument("--eval-limit", type=int, default=None, help="a random N of val and test")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--out", default="bench_results/batch_norm.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    with np.load(args.npz) as npz:
        data = {"train": load_split(npz, "train", args.limit, args.seed)}
        data.update({s: load_split(npz, s, args.eval_limit, args.seed) for s in ("val", "test")})
    rows = [train_arm(arm, data, args) for arm in args.arms.split(",")]
    lines = [
        f"resnet18_28 + CDL from scratch on PneumoniaMNIST ({len(data['train'][1])} train "
        f"images), {args.epochs} epochs, batch {args.batch}, Adam {args.lr:g}, seed {args.seed}, "
        f"JAX on {jax.devices()[0].device_kind}.",
        "",
        "| batch norm | final train loss | val AUC | val ACC | test AUC | test ACC | train s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['history'][-1]['train_loss']:.4f} | {r['val_auc']:.3f} | "
            f"{r['val_acc']:.3f} | {r['test_auc']:.3f} | {r['test_acc']:.3f} | "
            f"{r['train_s']:.0f} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    log.info("wrote %s", out)
    return 0
