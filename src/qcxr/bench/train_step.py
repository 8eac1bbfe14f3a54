"""Train-step benchmark: the paper's Table III protocol for CDL and DQC heads on a backbone.

`python -m qcxr.bench train-step [--labels 8,14,19] [--simulators native,pennylane]
[--backbone resnet50] [--batch 32] [--image-size 224] [--warmup 10] [--steps 30] [--frozen]`

Paper, section IV-A: one fixed batch of zero images and zero labels already on the device, 10
training steps to absorb compilation and caching, then 30 timed steps; the models are "functionally
equivalent" CDL and DQC classifiers with the ResNet50 backbone, trained whole (a training step
updates the backbone too; `--frozen` masks it instead). The backbone is randomly initialised
(timing does not depend on the weights). Reports the mean step time and the DQC/CDL ratio per
simulator, as a Markdown table and as JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.models import backbones
from qcxr.models.classifier import Classifier
from qcxr.models.heads import cdl_head, dqc_head
from qcxr.quantum import make_ansatz
from qcxr.train import optim, steps

log = logging.getLogger("qcxr.bench.train_step")


def _backbone(name: str, image_size: int, frozen: bool):
    if name == "tiny":
        return backbones.tiny(image_size=image_size, freeze=frozen)
    factory = {"resnet50": backbones.resnet50, "resnet18": backbones.resnet18}[name]
    return factory(pretrained=False, freeze=frozen, image_size=image_size)


def time_step(backbone, head, batch: int, warmup: int, timed: int) -> dict:
    """Mean seconds per training step of backbone + head on a fixed zero batch.

    Args:
        backbone: the Backbone.
        head: the head module.
        batch: batch size.
        warmup: untimed steps first (compilation included).
        timed: timed steps.

    Returns:
        {"step_s": mean, "std_s": standard deviation, "compile_s": first step's time}.
    """
    model = Classifier(backbone, head)
    params, consts = model.init(jax.random.key(0))
    labels = optim.freeze_labels(params, {"backbone": backbone.freeze})
    tx = optim.adam(1e-4, total_steps=warmup + timed, trainable=labels)
    state = steps.init_state(params, tx, consts)
    size = backbone.image_size
    data = {
        "image": jnp.zeros((batch, size, size, 3), jnp.float32),
        "labels": jnp.zeros((batch, head_labels(head)), bool),
        "mask": jnp.ones((batch,), bool),
    }
    # Batch norm of a trained backbone in train mode, as the paper's PyTorch step runs it.
    step = steps.make_train_step(
        lambda p, b, **kw: model.logits(p, kw.pop("model_state"), b["image"], **kw),
        tx,
        stateful=True,
    )
    start = time.perf_counter()
    state, loss = step(state, data)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        state, loss = step(state, data)
    jax.block_until_ready(loss)
    times = []
    for _ in range(timed):
        t0 = time.perf_counter()
        state, loss = step(state, data)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    return {"step_s": float(np.mean(times)), "std_s": float(np.std(times)), "compile_s": compile_s}


def head_labels(head) -> int:
    """Output size of a head."""
    return head.ansatz.num_qubits if hasattr(head, "ansatz") else head.num_labels


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; log a Markdown table and write JSON.

    Args:
        argv: command-line arguments (see the module docstring).

    Returns:
        Exit status 0.
    """
    p = argparse.ArgumentParser(prog="python -m qcxr.bench train-step", description=__doc__)
    p.add_argument("--labels", default="8,14,19")
    p.add_argument("--simulators", default="native,pennylane")
    p.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18", "tiny"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--frozen", action="store_true", help="freeze the backbone (mask)")
    p.add_argument("--out", default="bench_results/train_step.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    rows = []
    backbone = _backbone(args.backbone, args.image_size, args.frozen)
    for n in [int(x) for x in args.labels.split(",")]:
        cdl = time_step(backbone, cdl_head(n), args.batch, args.warmup, args.steps)
        rows.append({"labels": n, "head": "cdl", "simulator": "-", **cdl})
        log.info("%d labels, CDL: %.3f s/step", n, cdl["step_s"])
        for sim in args.simulators.split(","):
            head = dqc_head(n, make_ansatz("ry_cnot_ring", n), simulator=sim)
            dqc = time_step(backbone, head, args.batch, args.warmup, args.steps)
            rows.append(
                {
                    "labels": n,
                    "head": "dqc",
                    "simulator": sim,
                    **dqc,
                    "ratio_to_cdl": dqc["step_s"] / cdl["step_s"],
                }
            )
            log.info(
                "%d labels, DQC (%s): %.3f s/step, %.2fx CDL",
                n,
                sim,
                dqc["step_s"],
                rows[-1]["ratio_to_cdl"],
            )
    lines = [
        f"Train step (Table III protocol) on {jax.devices()[0].device_kind} "
        f"({platform.processor() or platform.machine()}): {args.backbone} "
        f"({'frozen' if args.frozen else 'trained'}), batch {args.batch} of zero images at "
        f"{args.image_size} px, Adam; {args.warmup} warm-up steps, {args.steps} timed.",
        "",
        "| labels | head | simulator | s/step | ± | DQC/CDL |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['ratio_to_cdl']:.2f}" if "ratio_to_cdl" in r else "1"
        lines.append(
            f"| {r['labels']} | {r['head']} | {r['simulator']} | {r['step_s']:.3f} | "
            f"{r['std_s']:.3f} | {ratio} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    log.info("wrote %s", out)
    return 0
