"""Train-step throughput of MedMNIST v2's ResNet-18 (28): qcxr (JAX) against the same network and
step in PyTorch, in one run.

`python -m qcxr.bench train-step-torch [--batch 128] [--rounds 7] [--steps 5] [--warmup 3]
[--classes 2] [--torch-compile] [--out bench_results/train_step_torch.json]`

The step is the full training step of `backbone=resnet18_28` + a CDL head (Dense 512 -> classes):
forward with batch norm in train mode (batch statistics, running statistics updated), softmax
cross-entropy, backward, Adam update. The PyTorch side is MedMNIST's own model (their
MedMNIST2D/models.py ResNet18, 1 input channel, `Linear(512, classes)`), written idiomatically:
`model.train()`, `torch.optim.Adam`, `nn.CrossEntropyLoss`, `torch.set_num_threads(<cores>)`, in
the default (NCHW contiguous) and the channels_last memory formats (and `torch.compile` with
`--torch-compile`). Before anything is timed, both networks must have the same parameter count,
and PyTorch, given qcxr's initial weights, must reproduce qcxr's first-step loss and updated
running statistics (to `AGREE_RTOL`). Then `--rounds` interleaved rounds (each implementation
runs `--steps` steps per round on a fixed batch of random images already in memory), after
`--warmup` untimed steps each (compilation included); images/s is batch * steps / the round's
wall time, and the table reports the median over rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from qcxr.models.backbones import resnet18_28
from qcxr.models.classifier import Classifier
from qcxr.models.heads import cdl_head
from qcxr.train import optim, steps

log = logging.getLogger("qcxr.bench.train_step_torch")

IMAGE_SIZE = 28
# PyTorch's first-step loss and running statistics from qcxr's initial weights, relative to the
# largest magnitude; float32 convolutions in two libraries differ by ~1e-6 relative.
AGREE_RTOL = 1e-3


# ---- the PyTorch model: MedMNIST/experiments MedMNIST2D/models.py (ResNet18) -------------------
def torch_resnet18_28(num_channels: int = 1, num_classes: int = 2):
    """MedMNIST v2's ResNet-18 (28) in PyTorch, as their models.py builds it (kuangliu's
    pytorch-cifar BasicBlock ResNet with an adaptive average pool).

    Args:
        num_channels: input channels (1: grey).
        num_classes: outputs of the final Linear.

    Returns:
        A torch.nn.Module: images f32[B, C, 28, 28] -> logits f32[B, num_classes]; its
        `features(x)` gives the pooled f32[B, 512].
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class BasicBlock(nn.Module):
        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_planes = 64
            self.conv1 = nn.Conv2d(num_channels, 64, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.layer1 = self._make_layer(64, 2, 1)
            self.layer2 = self._make_layer(128, 2, 2)
            self.layer3 = self._make_layer(256, 2, 2)
            self.layer4 = self._make_layer(512, 2, 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(512, num_classes)

        def _make_layer(self, planes, num_blocks, stride):
            layers = []
            for s in [stride] + [1] * (num_blocks - 1):
                layers.append(BasicBlock(self.in_planes, planes, s))
                self.in_planes = planes
            return nn.Sequential(*layers)

        def features(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
            return torch.flatten(self.avgpool(out), 1)

        def forward(self, x):
            return self.linear(self.features(x))

    return ResNet()


def _torch_layers(model) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """qcxr's ConvLayer path in the backbone -> (torch conv, torch batch norm)."""
    pairs = {("embedder", "embedder"): (model.conv1, model.bn1)}
    for i, stage in enumerate([model.layer1, model.layer2, model.layer3, model.layer4]):
        for j, block in enumerate(stage):
            base = ("encoder", f"stages_{i}", f"layers_{j}")
            pairs[(*base, "layer_0")] = (block.conv1, block.bn1)
            pairs[(*base, "layer_1")] = (block.conv2, block.bn2)
            if len(block.shortcut):
                pairs[(*base, "shortcut")] = (block.shortcut[0], block.shortcut[1])
    return pairs


def _get(tree: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        tree = tree[key]
    return tree


def copy_to_torch(params: dict, model_state: dict, model) -> None:
    """Load a qcxr resnet18_28 + CDL classifier's variables into `torch_resnet18_28`'s model.

    Args:
        params: Classifier params {"backbone", "head"}.
        model_state: Classifier model state {"backbone": {"batch_stats"}}.
        model: the torch model (modified in place).
    """
    import torch

    def t(x):
        return torch.from_numpy(np.array(x, dtype=np.float32))

    stats = model_state["backbone"]["batch_stats"]
    with torch.no_grad():
        for path, (conv, bn) in _torch_layers(model).items():
            p, s = _get(params["backbone"], path), _get(stats, path)
            conv.weight.copy_(t(p["convolution"]["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW
            bn.weight.copy_(t(p["normalization"]["scale"]))
            bn.bias.copy_(t(p["normalization"]["bias"]))
            bn.running_mean.copy_(t(s["normalization"]["mean"]))
            bn.running_var.copy_(t(s["normalization"]["var"]))
        model.linear.weight.copy_(t(params["head"]["fc"]["kernel"]).T)
        model.linear.bias.copy_(t(params["head"]["fc"]["bias"]))


def torch_running_stats(model) -> dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]:
    """ConvLayer path -> (running_mean, running_var) of the torch model, as NumPy."""
    return {
        path: (bn.running_mean.numpy().copy(), bn.running_var.numpy().copy())
        for path, (_, bn) in _torch_layers(model).items()
    }


def count_params(tree: Any) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


# ---- the two steps -----------------------------------------------------------------------------
def qcxr_step(num_classes: int, lr: float = 1e-3):
    """qcxr's stateful train step of resnet18_28 + CDL (multiclass), Adam, and its first state.

    Returns:
        (jitted step(state, batch) -> (state, loss), state, classifier).
    """
    model = Classifier(resnet18_28(), cdl_head(num_classes))
    params, model_state = model.init(jax.random.key(0))
    tx = optim.adam(lr, total_steps=1, trainable=optim.freeze_labels(params, {"backbone": False}))

    def apply(p, batch, model_state, train=False):
        return model.logits(p, model_state, batch["image"], train=train)

    step = steps.make_train_step(apply, tx, kind="multiclass", stateful=True)
    return step, steps.init_state(params, tx, model_state), model


def torch_step(model, lr: float = 1e-3, channels_last: bool = False, compile_step: bool = False):
    """An idiomatic PyTorch train step: model.train(), CrossEntropyLoss, Adam.

    Returns:
        step(images NCHW, labels int64[B]) -> loss (a Python float: waits for the step).
    """
    import torch

    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    run = torch.compile(step) if compile_step else step

    def call(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return run(x, y).item()

    return call


def _data(batch: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(batch, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=batch)
    return images, labels


def check_agreement(batch: int, num_classes: int) -> dict[str, float]:
    """Same parameter count, and PyTorch from qcxr's initial weights reproduces qcxr's first
    train step: the loss and every updated running mean and variance.

    Returns:
        {"params_qcxr", "params_torch", "loss_qcxr", "loss_torch", "stats_max_rel_err"}.

    Raises:
        AssertionError: a mismatch (the message says which).
    """
    import torch

    step, state, _ = qcxr_step(num_classes)
    params = jax.tree.map(np.asarray, state["params"])
    model_state = jax.tree.map(np.asarray, state["model_state"])
    net = torch_resnet18_28(1, num_classes)
    ours, theirs = count_params(params), sum(p.numel() for p in net.parameters())
    if ours != theirs:
        raise AssertionError(f"parameter counts differ: qcxr {ours:,}, torch {theirs:,}")
    copy_to_torch(params, model_state, net)
    images, labels = _data(batch, num_classes, seed=1)
    new, loss = step(state, _qcxr_batch(images, labels, num_classes))
    net.train()
    loss_t = torch.nn.functional.cross_entropy(
        net(torch.from_numpy(images).permute(0, 3, 1, 2)), torch.from_numpy(labels)
    ).item()
    worst = 0.0
    ref = torch_running_stats(net)
    stats = new["model_state"]["backbone"]["batch_stats"]
    for path, (mean_t, var_t) in ref.items():
        s = _get(stats, path)["normalization"]
        for a, b in ((s["mean"], mean_t), (s["var"], var_t)):
            a = np.asarray(a)
            worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)))
    if not abs(float(loss) - loss_t) <= AGREE_RTOL * abs(loss_t):
        raise AssertionError(f"first-step loss differs: qcxr {float(loss)}, torch {loss_t}")
    if worst > AGREE_RTOL:
        raise AssertionError(f"running statistics differ from torch's by {worst:.2e} relative")
    return {
        "params_qcxr": ours,
        "params_torch": theirs,
        "loss_qcxr": float(loss),
        "loss_torch": loss_t,
        "stats_max_rel_err": worst,
    }


def _qcxr_batch(images, labels, num_classes):
    return {
        "image": jax.numpy.asarray(images),
        "labels": jax.numpy.asarray(np.eye(num_classes, dtype=bool)[labels]),
        "mask": jax.numpy.ones((len(labels),), bool),
    }


def _runners(args) -> dict[str, Any]:
    """name -> run(n): n train steps of that implementation, blocking until done."""
    import torch

    images, labels = _data(args.batch, args.classes)
    step, state, _ = qcxr_step(args.classes)
    batch = _qcxr_batch(images, labels, args.classes)
    holder = {"state": state}

    def run_qcxr(n):
        s = holder["state"]
        for _ in range(n):
            s, loss = step(s, batch)
        jax.block_until_ready(loss)
        holder["state"] = s

    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels)
    runners = {"qcxr (JAX)": run_qcxr}
    variants = [("torch", False, False), ("torch channels_last", True, False)]
    if args.torch_compile:
        variants.append(("torch channels_last + compile", True, True))
    for name, channels_last, compiled in variants:
        tstep = torch_step(torch_resnet18_28(1, args.classes), 1e-3, channels_last, compiled)

        def run_torch(n, tstep=tstep):
            for _ in range(n):
                tstep(x, y)

        runners[name] = run_torch
    return runners


def measure(args) -> dict[str, list[float]]:
    """Warm-up, then interleaved rounds; name -> images/s per round."""
    runners = _runners(args)
    failed = {}
    for name, run in list(runners.items()):
        try:
            run(args.warmup)
        except Exception as e:  # a peer that cannot run (torch.compile offline) is a row
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            del runners[name]
            log.warning("%s failed in warm-up: %s", name, failed[name])
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(args.rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(args.steps)
            rates[name].append(args.batch * args.steps / (time.perf_counter() - t0))
        log.info(
            "round %d: %s",
            r + 1,
            ", ".join(f"{n} {v[-1]:.1f} img/s" for n, v in rates.items()),
        )
    return {"rates": rates, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write a Markdown table to stdout and JSON to --out.

    Args:
        argv: command-line arguments (see the module docstring).

    Returns:
        Exit status 0.
    """
    p = argparse.ArgumentParser(prog="python -m qcxr.bench train-step-torch", description=__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="steps per implementation per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    p.add_argument("--out", default="bench_results/train_step_torch.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    agree = check_agreement(min(args.batch, 8), args.classes)
    log.info(
        "agreement: %s parameters each; first-step loss qcxr %.6f, torch %.6f; running stats "
        "max rel. error %.1e",
        f"{agree['params_qcxr']:,}",
        agree["loss_qcxr"],
        agree["loss_torch"],
        agree["stats_max_rel_err"],
    )
    result = measure(args)
    medians = {n: statistics.median(v) for n, v in result["rates"].items()}
    ours = medians.get("qcxr (JAX)")
    lines = [
        f"Train step of resnet18_28 + CDL ({agree['params_qcxr']:,} parameters each), batch "
        f"{args.batch} at {IMAGE_SIZE} px, batch norm in train mode, Adam; "
        f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, JAX {jax.__version__} on {jax.devices()[0].device_kind}, "
        f"torch {torch.__version__} ({args.threads} threads); {args.warmup} warm-up steps, "
        f"{args.rounds} interleaved rounds of {args.steps} steps; median.",
        "",
        "| implementation | images/s (median) | min | max | qcxr / this |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in result["rates"].items():
        ratio = f"{ours / medians[name]:.2f}" if ours else "-"
        lines.append(
            f"| {name} | {medians[name]:.1f} | {min(values):.1f} | {max(values):.1f} | {ratio} |"
        )
    for name, why in result["failed"].items():
        lines.append(f"| {name} | failed: {why} | | | |")
    sys.stdout.write("\n".join(lines) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": vars(args), "agreement": agree, "medians": medians, **result}, indent=2)
    )
    log.info("wrote %s", out)
    return 0
