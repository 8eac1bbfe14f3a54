"""Finite shots: <Z> from N sampled bitstrings, differentiated by the parameter-shift rule.

Layer 3 of qcxr.quantum (a method, on top of any method that gives the basis-state distribution:
the ideal statevector, density.probabilities, trajectories.probabilities). Each sample's N shots
are drawn from its full 2^n distribution (inverse CDF), so correlated wires stay correlated
(a binomial per wire would not); readout error flips each measured bit of each shot with
probability p, independently. The estimate of <Z_w> is the mean of (-1)^bit over the shots:
unbiased, variance (1 - <Z_w>^2) / N.

Gradients (training with shots): a custom_vjp whose backward is the parameter-shift rule with
shots, d<Z>/d theta = (<Z>(theta + pi/2) - <Z>(theta - pi/2)) / 2, each shifted circuit
estimated from N fresh shots. The rule is exact for every angle of rx, ry, rz and rot gates (each
angle of Rot = RZ RY RZ enters one Pauli rotation), with or without noise (the channels do not
depend on the angles), so the gradient estimate is unbiased. It costs 2 (P + I) extra shot
estimates of the batch (P weights, I inputs). Every angle must enter exactly one such gate
(the library ansatze do); otherwise a clear error.

Keys: the forward pass uses fold_in(key, 0); the backward pass fold_in(key, 1), split once per
shifted circuit, so no key is used twice.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum.representation.circuit import Circuit

#: Gates the parameter-shift rule of this module differentiates (one Pauli rotation per angle).
SHIFT_GATES = frozenset({"rx", "ry", "rz", "rot"})


def sample_z(probs, num_qubits: int, wires, shots: int, key, readout: float = 0.0):
    """<Z_w> estimated from `shots` bitstrings drawn from each sample's distribution.

    Args:
        probs: f[B, 2^n] basis-state probabilities (wire 0 the most significant bit).
        num_qubits: n.
        wires: the measured wires (k of them).
        shots: N >= 1 shots per sample.
        key: PRNG key.
        readout: symmetric flip probability of each measured bit.

    Returns:
        f[B, k] estimates, the dtype of probs.
    """
    b = probs.shape[0]
    k_draw, k_flip = jax.random.split(key)
    cdf = jnp.cumsum(probs, axis=-1)
    u = jax.random.uniform(k_draw, (b, shots), probs.dtype) * cdf[:, -1:]
    idx = jax.vmap(lambda c, v: jnp.searchsorted(c, v, side="right"))(cdf, u)
    idx = jnp.minimum(idx, probs.shape[-1] - 1)
    shifts = jnp.asarray([num_qubits - 1 - w for w in wires], idx.dtype)
    bits = (idx[..., None] >> shifts) & 1  # [B, N, k]
    if readout > 0:
        bits = bits ^ jax.random.bernoulli(k_flip, readout, bits.shape).astype(bits.dtype)
    return jnp.mean(1.0 - 2.0 * bits.astype(probs.dtype), axis=1)


def shift_sites(circuit: Circuit) -> tuple[list[int], list[int]]:
    """The weight and input indices the parameter-shift rule differentiates, checked.

    Returns:
        (weight indices, input indices), each used by exactly one angle of a SHIFT_GATES gate.
    """
    seen: dict[tuple[str, int], int] = {}
    for o in circuit.ops:
        for a in o.angles:
            if a.source == "const":
                continue
            if o.gate not in SHIFT_GATES:
                raise ValueError(
                    "shots gradients use the two-term parameter-shift rule, which does not hold "
                    f"for a {a.source} angle of gate {o.gate!r}; use angles in "
                    f"{sorted(SHIFT_GATES)}"
                )
            seen[(a.source, a.index)] = seen.get((a.source, a.index), 0) + 1
    shared = [k for k, v in seen.items() if v > 1]
    if shared:
        raise ValueError(
            f"shots gradients need every angle index used once; {shared} are shared (tied "
            "weights): the shift rule would need one shift per use"
        )
    ws = sorted(i for s, i in seen if s == "weight")
    xs = sorted(i for s, i in seen if s == "input")
    return ws, xs


def shot_expvals(prob_fn, circuit: Circuit, weights, x, key, shots: int, readout: float):
    """Shot estimates of <Z> with parameter-shift gradients.

    Args:
        prob_fn: (weights f[P], x f[B, I], key) -> f[B, 2^n] probabilities (the key for any
            randomness of the method, e.g. trajectories; ignored by exact methods).
        circuit: the Circuit measuring <Z> (its measured wires and angle sites).
        weights: f[P] flat weights.
        x: f[B, I] inputs.
        key: PRNG key.
        shots: N shots per sample and circuit.
        readout: readout flip probability.

    Returns:
        f[B, k] estimates; differentiable in weights and x by the parameter-shift rule.
    """
    n, wires = circuit.num_qubits, circuit.measurement.wires
    shots = int(shots)
    if shots < 1:
        raise ValueError(f"shots must be a positive integer, got {shots}")

    def estimate(w, xs, k):
        k_method, k_shots = jax.random.split(k)
        return sample_z(prob_fn(w, xs, k_method), n, wires, shots, k_shots, readout)

    @jax.custom_vjp
    def f(w, xs, k):
        return estimate(w, xs, jax.random.fold_in(k, 0))

    def fwd(w, xs, k):
        return f(w, xs, k), (w, xs, k)

    def bwd(res, ct):
        w, xs, k = res
        w_idx, x_idx = shift_sites(circuit)
        m = len(w_idx) + len(x_idx)
        dw = np.zeros((2 * m, w.shape[0]))
        dx = np.zeros((2 * m, xs.shape[1]))
        half = math.pi / 2
        for j, i in enumerate(w_idx):
            dw[2 * j, i], dw[2 * j + 1, i] = half, -half
        for j, i in enumerate(x_idx):
            r = 2 * (len(w_idx) + j)
            dx[r, i], dx[r + 1, i] = half, -half
        keys = jax.random.split(jax.random.fold_in(k, 1), 2 * m)

        def shifted(args):
            sw, sx, kk = args
            return estimate(w + sw.astype(w.dtype), xs + sx.astype(xs.dtype), kk)

        e = jax.lax.map(shifted, (jnp.asarray(dw), jnp.asarray(dx), keys))  # [2m, B, k]
        d = 0.5 * (e[0::2] - e[1::2])  # [m, B, k]: d<Z>/d angle per sample
        per = jnp.einsum("mbk,bk->mb", d, ct)
        gw = jnp.zeros_like(w)
        if w_idx:
            gw = gw.at[jnp.asarray(w_idx)].set(jnp.sum(per[: len(w_idx)], axis=1).astype(w.dtype))
        gx = jnp.zeros_like(xs)
        if x_idx:
            gx = gx.at[:, jnp.asarray(x_idx)].set(per[len(w_idx) :].T.astype(xs.dtype))
        return gw, gx, None

    f.defvjp(fwd, bwd)
    return f(weights, x, key)
