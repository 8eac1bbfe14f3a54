"""Classification heads on backbone features: CDL, DQC (the dressed quantum circuit), DQC-NN, QCNN.

Each head maps features f[B, m] to logits f[B, n]; the sigmoid (or softmax) lives in the loss
(section III-B of the first paper applies it after the last linear layer). Nothing in a head
assumes a loss. Every head takes `train` (the classifier passes it with a "dropout" PRNG stream in
the train step only); heads without dropout ignore it.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.quantum import Ansatz, engine, qcnn

#: simulator option -> implementation ("native" is ours; the others run PennyLane, see reference.py)
SIMULATORS = ("native", "pennylane", "pennylane_lightning")


class CDLHead(nn.Module):
    """Classical head: Dense(n) (the paper's CDL)."""

    num_labels: int

    @nn.compact
    def __call__(self, features: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Logits f[B, n] from features f[B, m]; `train` is accepted and ignored (no dropout)."""
        return nn.Dense(self.num_labels, name="fc")(features)


def circuit_fn(
    ansatz: Ansatz,
    simulator: str = "native",
    block_size: int = 5,
    remat: bool = False,
    chunk_size: int | str | None = "auto",
    method: str = "auto",
    max_bond: int | None = None,
    return_discarded: bool = False,
) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
    """The circuit as a function (weights, angles f[B, n]) -> <Z> f[B, n] on a simulator.

    With return_discarded (native only) it returns (<Z> f[B, n], discarded weight f[B]) (see
    engine.expvals).
    """
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
                max_bond=max_bond,
                return_discarded=return_discarded,
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
    max_bond: int | None = None

    @nn.compact
    def __call__(self, features: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Logits f[B, n] from features f[B, m]; `train` is accepted and ignored (no dropout)."""
        n = self.ansatz.num_qubits
        # tanh rescaled to [-pi/2, pi/2] (section III-B) before the RY angle encoding.
        angles = jnp.tanh(nn.Dense(n, name="pre")(features)) * (jnp.pi / 2)
        weights = self.param("circuit", lambda key: self.ansatz.init_weights(key, jnp.float32))
        if self.is_initializing():
            # Parameter shapes do not depend on the circuit's output: initialisation never
            # simulates it, so the memory guard speaks at the first real batch, with its size
            # (not during init with a batch of one, issue 11).
            q = jnp.zeros(angles.shape, weights.dtype)
        else:
            truncating = self.max_bond is not None and self.simulator == "native"
            run = circuit_fn(
                self.ansatz,
                self.simulator,
                self.block_size,
                self.remat,
                self.chunk_size,
                self.method,
                self.max_bond,
                return_discarded=truncating,
            )
            q = run(weights, angles.astype(weights.dtype))
            if truncating:
                # The MPS truncation error of this batch (mean over samples of the discarded
                # weight summed over bonds), sown for the train step to log (train/steps.py).
                q, lost = q
                self.sow("intermediates", "mps_discarded_weight", jnp.mean(lost))
        return nn.Dense(n, name="post")(q)


class DQCNNHead(nn.Module):
    """Classical ablation of DQC: the circuit replaced by Dense(n, n) + tanh."""

    num_labels: int

    @nn.compact
    def __call__(self, features: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Logits f[B, n] from features f[B, m]; `train` is accepted and ignored (no dropout)."""
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
    max_bond: int | None = None,
) -> DQCHead:
    """Build the DQC head (`conf/head/dqc.yaml`); one qubit per label.

    Args:
        num_labels: labels of the task; must equal the ansatz's qubits.
        ansatz: the circuit description.
        simulator: one of SIMULATORS.
        block_size, remat, chunk_size, method, max_bond: native-engine options (see
            qcxr.quantum.expvals; method: auto, statevector, split or mps; max_bond: the MPS
            bond limit, None for exact).
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
    from qcxr.quantum.mps import check_max_bond

    max_bond = check_max_bond(max_bond)
    return DQCHead(ansatz, simulator, int(block_size), bool(remat), chunk_size, method, max_bond)


def dqc_nn_head(num_labels: int) -> DQCNNHead:
    """Build the DQC-NN ablation head (`conf/head/dqc_nn.yaml`)."""
    return DQCNNHead(int(num_labels))


#: QCNN cut options: the 9-run reconstruction, the same circuit uncut, the paper's uncut comparison.
QCNN_CUTS = qcnn.MODES
#: QCNN angle scalings: raw Dense outputs (the paper's code) or tanh * pi/2 (as the DQC).
QCNN_ANGLE_SCALES = ("none", "tanh_pi2")
#: QCNN circuit initialisations: U[0, 1) (the paper's code: torch.rand), U[0, 2 pi), N(0, (2 pi)^2),
#: N(0, 0.01^2).
QCNN_INITS = ("uniform_01", "uniform_2pi", "normal_2pi", "small")


def _qcnn_init(kind: str, num: int):
    def init(key):
        if kind == "uniform_01":
            return jax.random.uniform(key, (num,), jnp.float32)
        if kind == "uniform_2pi":
            return jax.random.uniform(key, (num,), jnp.float32, 0.0, 2 * jnp.pi)
        scale = 2 * jnp.pi if kind == "normal_2pi" else 0.01
        return scale * jax.random.normal(key, (num,), jnp.float32)

    return init


class QCNNHead(nn.Module):
    """The distributed QCNN head of arXiv 2501.06225 (its public code):
    Dropout -> Dense(8) -> QCNN circuit (probabilities of wires 3..7) -> Dense(n).

    Parameters: `pre` (Dense(m -> 8)), `circuit` (35 angles, or 45 for cut="none": one parameter
    per angle however many fragment runs use it), `post` (Dense(32 -> n)).
    """

    num_labels: int
    cut: str = "fragments"
    angle_scale: str = "none"
    dropout: float = 0.2
    circuit_init: str = "uniform_01"  # `init` would shadow flax's Module.init

    @nn.compact
    def __call__(self, features: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Logits f[B, n] from features f[B, m].

        Args:
            features: f[B, m].
            train: apply dropout (needs a "dropout" PRNG stream in `apply(..., rngs=...)`).

        Returns:
            f[B, num_labels] logits.
        """
        h = nn.Dropout(self.dropout, deterministic=not train)(features)
        angles = nn.Dense(qcnn.NUM_INPUTS, name="pre")(h)
        if self.angle_scale == "tanh_pi2":
            angles = jnp.tanh(angles) * (jnp.pi / 2)
        weights = self.param("circuit", _qcnn_init(self.circuit_init, qcnn.NUM_WEIGHTS[self.cut]))
        p = qcnn.qcnn_probs(weights, angles.astype(weights.dtype), self.cut)
        return nn.Dense(self.num_labels, name="post")(p)


def qcnn_head(
    num_labels: int,
    cut: str = "fragments",
    angle_scale: str = "none",
    dropout: float = 0.2,
    init: str = "uniform_01",
) -> QCNNHead:
    """Build the QCNN head (`conf/head/qcnn.yaml`).

    Args:
        num_labels: outputs (the task's labels or classes).
        cut: one of QCNN_CUTS: "fragments" (a 4- and a 5-qubit fragment, 9 runs, exact
            reconstruction), "exact" (the same circuit on 8 qubits: equal numbers), "none" (the
            paper's uncut 45-angle comparison circuit).
        angle_scale: one of QCNN_ANGLE_SCALES.
        dropout: dropout rate on the features (0.2 in the paper's code).
        init: circuit weight initialisation, one of QCNN_INITS.

    Returns:
        The QCNNHead.
    """
    for name, value, options in (
        ("cut", cut, QCNN_CUTS),
        ("angle_scale", angle_scale, QCNN_ANGLE_SCALES),
        ("init", init, QCNN_INITS),
    ):
        if value not in options:
            raise ValueError(
                f"unknown QCNN head {name} {value!r} (head.{name}); choose one of {options}"
            )
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"head.dropout must be in [0, 1), got {dropout}")
    return QCNNHead(int(num_labels), cut, angle_scale, float(dropout), init)
