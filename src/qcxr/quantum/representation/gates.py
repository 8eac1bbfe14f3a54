"""Single-qubit gate matrices as pure JAX functions of their angles.

Conventions match PennyLane: RX(t) = exp(-i t X / 2), RY(t) = exp(-i t Y / 2),
RZ(t) = exp(-i t Z / 2),
Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi); controlled gates CRX/CRY/CRZ/CRot act with
their control (the first wire) as the more significant bit: diag(I, R). Every function maps angles
f[...] to matrices [..., 2, 2] (or [..., 4, 4] for two-qubit gates); H and RY are real, RX, RZ,
Rot complex. `matrix` gives any gate of the representation (circuit.GATES).
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


_FIXED = {
    "x": ((0, 1), (1, 0)),
    "y": ((0, -1j), (1j, 0)),
    "z": ((1, 0), (0, -1)),
    "s": ((1, 0), (0, 1j)),
    "sdg": ((1, 0), (0, -1j)),
    "cnot": ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0)),
    "cz": ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, -1)),
    "swap": ((1, 0, 0, 0), (0, 0, 1, 0), (0, 1, 0, 0), (0, 0, 0, 1)),
}
#: Fixed gates with complex entries.
_COMPLEX_FIXED = frozenset({"y", "s", "sdg"})


def controlled(m: jnp.ndarray) -> jnp.ndarray:
    """The controlled version diag(I, m) of single-qubit matrices, control the first wire.

    Args:
        m: [..., 2, 2] matrices.

    Returns:
        [..., 4, 4] matrices.
    """
    eye = jnp.broadcast_to(jnp.eye(2, dtype=m.dtype), m.shape)
    zero = jnp.zeros_like(m)
    top = jnp.concatenate([eye, zero], -1)
    bottom = jnp.concatenate([zero, m], -1)
    return jnp.concatenate([top, bottom], -2)


def matrix(gate: str, angles: tuple[jnp.ndarray, ...], dtype=jnp.float32) -> jnp.ndarray:
    """The matrix of one gate of the representation (a key of circuit.GATES).

    Args:
        gate: the gate name.
        angles: one array per gate angle, f[...] each (broadcast together; empty for fixed gates).
        dtype: the float dtype of the computation (fixed gates: its real or complex version).

    Returns:
        [..., 2, 2] (one wire) or [..., 4, 4] (two wires, control first), real where the gate is
        real, else complex of `dtype`'s precision.
    """
    if gate == "h":
        return h(dtype)
    if gate in _FIXED:
        return jnp.asarray(_FIXED[gate], _complex(dtype) if gate in _COMPLEX_FIXED else dtype)
    if gate in ("rx", "ry", "rz"):
        return matrices(gate, angles[0])
    if gate == "rot":
        return rot(jnp.stack(jnp.broadcast_arrays(*angles), -1))
    if gate in ("crx", "cry", "crz"):
        return controlled(matrices(gate[1:], angles[0]))
    if gate == "crot":
        return controlled(rot(jnp.stack(jnp.broadcast_arrays(*angles), -1)))
    raise ValueError(f"unknown gate {gate!r}")
