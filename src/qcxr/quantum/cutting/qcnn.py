"""The distributed QCNN of arXiv 2501.06225 (the second paper): circuits and `qcnn_probs`.

What the paper's public code does (GitHub XY3255095840/distributed-quantum-disease-detection,
commit b43bd6f, code/mps3.py and code/no_cut_qnn.py; the paper's text is vague):
- 8 input angles; encoding H then RY(x_i) on every wire.
- Convolution: an MPS-like staircase over neighbouring pairs (i, i+1), one layer, 5 unshared
  angles per pair, in this order: RZ(w0) on i+1, CRZ(w1) control i target i+1, RY(w2) on i+1,
  CNOT(i, i+1), RY(w3) on i+1, CRZ(w4) control i target i+1.
- Front fragment: wires 0-3, x0..x3, pairs (0,1), (1,2), (2,3) = weights 0..14. Wire 3 is cut.
- Back fragment: 5 wires (logical 3-7); its wire 0 receives the cut wire, then the fragment applies
  its own encoding H.RY to all 5 wires with x3..x7 (x3 is encoded a second time), then pairs
  (3,4), (4,5), (5,6), (6,7) = weights 15..34. Readout: the probabilities of the 5 back wires.
- Reconstruction: the wire cut of cutting.py (9 fragment runs). Exactly reconstructed, this equals
  the marginal on wires 3-7 of one 8-qubit circuit (`qcnn_circuit("exact")`), so cutting itself
  changes no number.
- The paper's uncut comparison (no_cut_qnn.py) is a different circuit: a ring (0,1), (1,2), (2,3),
  (3,0) on wires 0-3, a chain (3,4) .. (6,7), and a closing pair (7,3): 9 pairs, 45 angles, x3
  encoded once (`qcnn_circuit("none")`).
The published code shares weights between its 9 fragment copies by aliasing tensors (each copy
keeps its own optimizer state); here every angle is one parameter (indices into one vector), so
its gradient is the sum over every fragment run that uses it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from qcxr.quantum.cutting.wirecut import WireCut, cut_probs, joined_circuit
from qcxr.quantum.methods.statevector import run_circuit
from qcxr.quantum.representation.circuit import Circuit, Op, inp, op, probs, weight

#: Circuit angles per mode: the cut circuit (fragments and its exact equivalent) and the uncut one.
NUM_WEIGHTS = {"fragments": 35, "exact": 35, "none": 45}
#: Modes of qcnn_probs.
MODES = tuple(NUM_WEIGHTS)
#: Input angles (wires of the joined circuit) and probabilities returned (wires 3..7).
NUM_INPUTS = 8
NUM_OUTPUTS = 32


def conv_pair(control: int, target: int, first_weight: int) -> tuple[Op, ...]:
    """The paper's two-qubit convolution block on (control, target): 5 angles from first_weight.

    Returns:
        RZ(w0) on target, CRZ(w1), RY(w2) on target, CNOT, RY(w3) on target, CRZ(w4).
    """
    w = first_weight
    return (
        op("rz", target, angles=weight(w)),
        op("crz", control, target, angles=weight(w + 1)),
        op("ry", target, angles=weight(w + 2)),
        op("cnot", control, target),
        op("ry", target, angles=weight(w + 3)),
        op("crz", control, target, angles=weight(w + 4)),
    )


def encode(wires, inputs) -> tuple[Op, ...]:
    """H then RY(x[input]) on each wire (the paper's encoding; ansatz encoding "h_ry")."""
    ops = []
    for w, i in zip(wires, inputs, strict=True):
        ops += [op("h", w), op("ry", w, angles=inp(i))]
    return tuple(ops)


@functools.lru_cache(maxsize=1)
def qcnn_cut() -> WireCut:
    """The paper's cut QCNN as two fragments (front 4 wires, back 5 wires, wire 3 cut)."""
    front_ops = encode(range(4), range(4))
    for k, (c, t) in enumerate(((0, 1), (1, 2), (2, 3))):
        front_ops += conv_pair(c, t, 5 * k)
    back_ops = encode(range(5), range(3, 8))
    for k in range(4):
        back_ops += conv_pair(k, k + 1, 15 + 5 * k)
    front = Circuit(4, front_ops, probs([3]))
    back = Circuit(5, back_ops, probs(range(5)))
    return WireCut(front, 3, back)


@functools.lru_cache(maxsize=2)
def qcnn_circuit(mode: str) -> Circuit:
    """The uncut 8-qubit circuit of a mode, measuring the probabilities of wires 3..7.

    Args:
        mode: "exact" (what the fragments reconstruct, 35 angles) or "none" (the paper's uncut
            comparison circuit, 45 angles).

    Returns:
        The Circuit.
    """
    if mode == "exact":
        return joined_circuit(qcnn_cut())
    if mode == "none":
        ops = encode(range(8), range(8))
        pairs = [(i, (i + 1) % 4) for i in range(4)] + [(i, i + 1) for i in range(3, 7)]
        for k, (c, t) in enumerate([*pairs, (7, 3)]):
            ops += conv_pair(c, t, 5 * k)
        return Circuit(8, ops, probs(range(3, 8)))
    raise ValueError(f"qcnn_circuit takes mode 'exact' or 'none', got {mode!r}")


@functools.partial(jax.jit, static_argnames=("mode", "shots"))
def qcnn_probs(
    weights: jnp.ndarray,
    x: jnp.ndarray,
    mode: str = "fragments",
    *,
    shots: int | None = None,
    key: jax.Array | None = None,
) -> jnp.ndarray:
    """Output probabilities of the paper's QCNN for a batch of input angles.

    Jitted, batched over samples (no Python loop over them), differentiable in weights and x
    (exactly; not with shots).

    Args:
        weights: f[35] (front pairs then back pairs, 5 angles each in conv_pair's order) for
            "fragments" and "exact"; f[45] for "none" (pairs (0,1), (1,2), (2,3), (3,0), (3,4) ..
            (6,7), (7,3)).
        x: f[B, 8] input angles (used as they are: the paper's code feeds raw Dense outputs).
        mode: "fragments" (the 9-run wire-cut reconstruction, cutting.py), "exact" (the
            equivalent 8-qubit circuit), or "none" (the paper's uncut 45-angle circuit).
        shots: with "fragments", sample each fragment run with this many shots (what a 5-qubit
            device would see); None for exact fragment probabilities.
        key: PRNG key, required with shots.

    Returns:
        f[B, 32]: probabilities of wires 3..7, wire 3 the most significant bit (with shots, an
        unbiased estimate that may leave [0, 1]).
    """
    if mode not in MODES:
        raise ValueError(f"unknown QCNN mode {mode!r}; choose one of {MODES}")
    if weights.shape != (NUM_WEIGHTS[mode],) or x.ndim != 2 or x.shape[1] != NUM_INPUTS:
        raise ValueError(
            f"qcnn_probs(mode={mode!r}) takes weights f[{NUM_WEIGHTS[mode]}] and x f[B, "
            f"{NUM_INPUTS}], got {tuple(weights.shape)} and {tuple(x.shape)}"
        )
    if shots is not None and mode != "fragments":
        raise ValueError(f"shots apply to mode 'fragments' (fragment runs), not {mode!r}")
    if mode == "fragments":
        return cut_probs(qcnn_cut(), weights, x, shots=shots, key=key)
    return run_circuit(qcnn_circuit(mode), weights, x)
