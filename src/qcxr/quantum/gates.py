"""Single-qubit gate matrices as pure JAX functions of their angles.

Conventions match PennyLane: RX(t) = exp(-i t X / 2), RY(t) = exp(-i t Y / 2),
RZ(t) = exp(-i t Z / 2),
Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi). Every function maps angles f[...] to
matrices [..., 2, 2]; H and RY are real, the others complex.
"""

from __future__ import annotations

import jax.numpy as jnp

#: Gates whose matrices are real: a circuit made only of these (and CNOT/CZ) keeps a real state.
REAL_GATES = frozenset({"h", "ry"})
#: Number of angles each parametrised single-qubit gate takes.
GATE_NUM_PARAMS = {"h": 0, "rx": 1, "ry": 1, "rz": 1, "rot": 3}


def _stack(a, b, c, d):
    return jnp.stack([jnp.stack([a, b], -1), jnp.stack([c, d], -1)], -2)


def h(dtype=jnp.float32) -> jnp.ndarray:
    """Hadamard gate.

    Returns:
        f[2, 2] real matrix.
    """
    s = 1.0 / jnp.sqrt(jnp.asarray(2.0, dtype))
    return jnp.asarray([[s, s], [s, -s]], dtype)


def ry(theta: jnp.ndarray) -> jnp.ndarray:
    """RY rotation (real).

    Args:
        theta: f[...] angles.

    Returns:
        f[..., 2, 2] real matrices.
    """
    c, s = jnp.cos(theta / 2), jnp.sin(theta / 2)
    return _stack(c, -s, s, c)


def rx(theta: jnp.ndarray) -> jnp.ndarray:
    """RX rotation.

    Args:
        theta: f[...] angles.

    Returns:
        c[..., 2, 2] complex matrices.
    """
    c = jnp.cos(theta / 2).astype(_complex(theta.dtype))
    s = (-1j * jnp.sin(theta / 2)).astype(_complex(theta.dtype))
    return _stack(c, s, s, c)


def rz(theta: jnp.ndarray) -> jnp.ndarray:
    """RZ rotation.

    Args:
        theta: f[...] angles.

    Returns:
        c[..., 2, 2] complex matrices.
    """
    ct = _complex(theta.dtype)
    e = jnp.exp(-0.5j * theta.astype(ct))
    z = jnp.zeros_like(e)
    return _stack(e, z, z, jnp.conj(e))


def rot(angles: jnp.ndarray) -> jnp.ndarray:
    """General rotation Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi), as PennyLane's.

    Args:
        angles: f[..., 3] (phi, theta, omega).

    Returns:
        c[..., 2, 2] complex matrices.
    """
    phi, theta, omega = angles[..., 0], angles[..., 1], angles[..., 2]
    ct = _complex(angles.dtype)
    c, s = jnp.cos(theta / 2).astype(ct), jnp.sin(theta / 2).astype(ct)
    ep = jnp.exp(-0.5j * (phi + omega).astype(ct))
    em = jnp.exp(-0.5j * (phi - omega).astype(ct))
    return _stack(ep * c, -jnp.conj(em) * s, em * s, jnp.conj(ep) * c)


def matrices(gate: str, params: jnp.ndarray) -> jnp.ndarray:
    """Matrices of one parametrised gate kind for a stack of parameters.

    Args:
        gate: one of "rx", "ry", "rz", "rot".
        params: f[..., p] with p = GATE_NUM_PARAMS[gate] (the trailing axis is dropped when p == 1,
            so f[...] is also accepted for the one-angle gates).

    Returns:
        [..., 2, 2] matrices, real for "ry", complex otherwise.
    """
    if gate == "rot":
        return rot(params)
    fn = {"rx": rx, "ry": ry, "rz": rz}.get(gate)
    if fn is None:
        raise ValueError(f"unknown rotation gate {gate!r}; choose one of rx, ry, rz, rot")
    return fn(params)


def _complex(dtype) -> jnp.dtype:
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64
