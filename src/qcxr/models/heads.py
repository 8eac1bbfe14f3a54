"""Classification heads on backbone features: CDL, DQC (the dressed quantum circuit) and DQC-NN.

Each head maps features f[B, m] to logits f[B, n]; the sigmoid lives in the loss (section III-B of
the paper applies it after the last linear layer).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from qcxr.quantum import Ansatz, engine

#: simulator option -> implementation ("native" is ours; the others run PennyLane, see reference.py)
SIMULATORS = ("native", "pennylane", "pennylane_lightning")


class CDLHead(nn.Module):
    """Classical head: Dense(n) (the paper's CDL)."""

    num_labels: int

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        """Logits f[B, n] from features f[B, m]."""
        return nn.Dense(self.num_labels, name="fc")(features)


def circuit_fn(
    ansatz: Ansatz,
    simulator: str = "native",
    block_size: int = 5,
    remat: bool = False,
    chunk_size: int | str | None = "auto",
    method: str = "auto",
) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
    """The circuit as a function (weights, angles f[B, n]) -> <Z> f[B, n] on a simulator."""
    if simulator == "native":

        def run(weights, x):
            return engine.expvals(
                ansatz,
                weights,
                x,
                block_size=block_size,
                remat=remat,
                chunk_size=chunk_size,
                method=method,
            )

        return run
    if simulator in SIMULATORS:
        from qcxr.quantum import reference  # PennyLane is imported only when asked for

        def run_pl(weights, x):
            return reference.expvals(ansatz, weights, x, simulator=simulator)

        return run_pl
    raise ValueError(f"unknown simulator {simulator!r}; choose one of {SIMULATORS}")


class DQCHead(nn.Module):
    """Dressed quantum circuit: Dense(n) -> tanh * pi/2 -> circuit -> Dense(n) (paper, Fig. 2).

    Parameters: `pre` (classical preprocess), `circuit` (the ansatz weights), `post` (classical
    postprocess): Table I of the paper counts them separately.
    """

    ansatz: Ansatz
    simulator: str = "native"
    block_size: int = 5
    remat: bool = False
    chunk_size: int | str | None = "auto"
    method: str = "auto"

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        """Logits f[B, n] from features f[B, m]."""
        n = self.ansatz.num_qubits
        # tanh rescaled to [-pi/2, pi/2] (section III-B) before the RY angle encoding.
        angles = jnp.tanh(nn.Dense(n, name="pre")(features)) * (jnp.pi / 2)
        weights = self.param(
            "circuit", lambda key: self.ansatz.init_weights(key, jnp.float32)
        )
        run = circuit_fn(
            self.ansatz, self.simulator, self.block_size, self.remat, self.chunk_size, self.method
        )
        q = run(weights, angles.astype(weights.dtype))
        return nn.Dense(n, name="post")(q)


class DQCNNHead(nn.Module):
    """Classical ablation of DQC: the circuit replaced by Dense(n, n) + tanh."""

    num_labels: int

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        """Logits f[B, n] from features f[B, m]."""
        n = self.num_labels
        angles = jnp.tanh(nn.Dense(n, name="pre")(features)) * (jnp.pi / 2)
        q = jnp.tanh(nn.Dense(n, name="mix")(angles))
        return nn.Dense(n, name="post")(q)


def cdl_head(num_labels: int) -> CDLHead:
    """Build the CDL head (`conf/head/cdl.yaml`)."""
    return CDLHead(int(num_labels))


def dqc_head(
    num_labels: int,
    ansatz: Ansatz,
    simulator: str = "native",
    block_size: int = 5,
    remat: bool = False,
    chunk_size: int | str | None = "auto",
    method: str = "auto",
) -> DQCHead:
    """Build the DQC head (`conf/head/dqc.yaml`); one qubit per label.

    Args:
        num_labels: labels of the task; must equal the ansatz's qubits.
        ansatz: the circuit description.
        simulator: one of SIMULATORS.
        block_size, remat, chunk_size, method: native-engine options (see
            qcxr.quantum.expvals; method: auto, statevector or split).
    """
    if int(num_labels) != ansatz.num_qubits:
        raise ValueError(
            f"the DQC head uses one qubit per label: the task has {num_labels} labels but the "
            f"ansatz has {ansatz.num_qubits} qubits (set ansatz.num_qubits=${{task.num_labels}})"
        )
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {SIMULATORS}")
    if method not in engine.METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {engine.METHODS}")
    return DQCHead(ansatz, simulator, int(block_size), bool(remat), chunk_size, method)


def dqc_nn_head(num_labels: int) -> DQCNNHead:
    """Build the DQC-NN ablation head (`conf/head/dqc_nn.yaml`)."""
    return DQCNNHead(int(num_labels))
