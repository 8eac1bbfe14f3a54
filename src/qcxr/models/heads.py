"""Classification heads on backbone features: CDL, DQC (the dressed quantum circuit), DQC-NN, QCNN.

Each head maps features f[B, m] to logits f[B, n]; the sigmoid (or softmax) lives in the loss
(section III-B of the first paper applies it after the last linear layer). Nothing in a head
assumes a loss. Every head takes `train` (the classifier passes it with a "dropout" PRNG stream in
the train step only); heads without dropout ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.quantum import METHODS, Ansatz, SimOptions
from qcxr.quantum.cutting import qcnn
from qcxr.quantum.dispatch import engine
from qcxr.quantum.representation.noise import CHANNELS, NoiseModel

#: simulator option -> implementation ("native" is ours; the others run PennyLane, see reference.py)
SIMULATORS = ("native", "pennylane", "pennylane_lightning")
#: noise channels of the DQC head (`head.noise.<channel>`: a probability, gamma or lambda in
#: [0, 1]), applied by the native engine after every gate on the wires it touches (readout: a flip
#: probability per measured wire). A level of 0 means no channel at all.
NOISE_CHANNELS = CHANNELS
#: the "noise" PRNG stream's seed when the head runs without one (evaluation, `eval_step`): the
#: key is `eval_noise_key(angles)`, fold_in(key(EVAL_NOISE_SEED), a hash of the batch's circuit
#: inputs), the same for every run and seed, so evaluating a noisy or finite-shot head is a
#: deterministic function of its parameters and the batch, and two batches never share their
#: draws (one fixed key would give sample j of every batch the same shot and trajectory draws).
#: Training passes fold_in(noise stream, step) instead (qcxr.run.NOISE_STREAM).
EVAL_NOISE_SEED = 0x0E7A


def eval_noise_key(angles: jax.Array) -> jax.Array:
    """The evaluation key of a batch: fold_in(key(EVAL_NOISE_SEED), the bits of a float32
    checksum of the circuit inputs f[B, n] (no gradient flows through it))."""
    a = jax.lax.stop_gradient(angles).astype(jnp.float32)
    w = jnp.arange(1, a.size + 1, dtype=jnp.float32).reshape(a.shape) / a.size  # order matters
    bits = jax.lax.bitcast_convert_type(jnp.sum(a * (1.0 + w)), jnp.uint32)
    return jax.random.fold_in(jax.random.key(EVAL_NOISE_SEED), bits)


def noise_items(noise: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    """The non-zero channels of a noise mapping, validated, in NOISE_CHANNELS order.

    Args:
        noise: channel -> level (`head.noise`), or None; zero levels are dropped (no channel).

    Returns:
        ((channel, level), ...) with every level in (0, 1]; () for an ideal circuit.

    Raises:
        ValueError: an unknown channel or a level outside [0, 1].
    """
    noise = dict(noise or {})
    unknown = sorted(set(map(str, noise)) - set(NOISE_CHANNELS))
    if unknown:
        raise ValueError(
            f"unknown noise channel(s) {unknown} in head.noise; choose from {NOISE_CHANNELS}"
        )
    items = []
    for channel in NOISE_CHANNELS:
        level = float(noise.get(channel, 0.0) or 0.0)
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"head.noise.{channel}={level} must be in [0, 1]")
        if level > 0.0:
            items.append((channel, level))
    return tuple(items)


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
    sim: SimOptions | None = None,
    return_discarded: bool = False,
) -> Callable[..., jnp.ndarray]:
    """The circuit as a function (weights, angles f[B, n], key=None) -> <Z> f[B, n] on a simulator.

    With return_discarded (native only) it returns (<Z> f[B, n], discarded weight f[B]) (see
    engine.expvals). With noise or finite shots (`sim.stochastic`) the native engine simulates
    them and `key` feeds its trajectories and shot sampling; without, the call is the ideal one.
    `sim` None: SimOptions() (the ideal circuit, method auto).
    """
    sim = SimOptions() if sim is None else sim
    if sim.stochastic and simulator != "native":
        raise ValueError(
            f"head.noise and head.shots need simulator=native (got {simulator!r}): set "
            "head.simulator=native or remove the noise"
        )
    if simulator == "native":

        def run(weights, x, key=None):
            return engine.expvals(
                ansatz, weights, x, sim, key=key, return_discarded=return_discarded
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
    postprocess): Table I of the paper counts them separately. Noise and shots add none.

    `sim` is the one SimOptions value the native engine runs with (dqc_head builds it from the
    head.* keys). A noisy or finite-shot circuit (`sim.stochastic`) draws its randomness from the
    "noise" PRNG stream when `apply(..., rngs={"noise": key})` gives one (the train step:
    fold_in(noise stream, step)), else from eval_noise_key(the batch's angles).
    """

    ansatz: Ansatz
    simulator: str = "native"
    sim: SimOptions = SimOptions()

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
            truncating = self.sim.max_bond is not None and self.simulator == "native"
            run = circuit_fn(
                self.ansatz, simulator=self.simulator, sim=self.sim, return_discarded=truncating
            )
            if self.sim.stochastic:
                key = self.make_rng("noise") if self.has_rng("noise") else eval_noise_key(angles)
                q = run(weights, angles.astype(weights.dtype), key)
            else:
                q = run(weights, angles.astype(weights.dtype))
            if truncating:
                # The MPS truncation error of this batch (mean over samples of the discarded
                # weight summed over bonds), sown for the train step to log (train/steps.py).
                q, lost = q
                self.sow("intermediates", "mps_discarded_weight", jnp.mean(lost))
        return nn.Dense(n, name="post")(q)

    def resolved(self, batch_size: int) -> SimOptions | None:
        """The SimOptions with the method the native engine runs for this batch (resolve_method,
        the one place a method is chosen); None for a PennyLane simulator."""
        if self.simulator != "native":
            return None
        return self.sim.replace(
            method=engine.resolve_method(self.ansatz, batch_size, "float32", self.sim)
        )


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
    noise: Mapping[str, float] | None = None,
    noisy_encoding: bool = True,
    trajectories: int = 64,
    shots: int | None = None,
) -> DQCHead:
    """Build the DQC head (`conf/head/dqc.yaml`); one qubit per label. The engine keys become one
    SimOptions value, here and nowhere else.

    Args:
        num_labels: labels of the task; must equal the ansatz's qubits.
        ansatz: the circuit description.
        simulator: one of SIMULATORS.
        block_size, remat, chunk_size, method, max_bond: native-engine options (SimOptions;
            method: auto, statevector, split, mps, or for noise density_matrix / trajectories;
            max_bond: the MPS bond limit, None for exact).
        noise: channel -> level (NOISE_CHANNELS); zero levels (the default) mean no channel,
            so an all-zero mapping is the ideal circuit.
        noisy_encoding: whether the encoding gates get the channels too (default: every gate).
        trajectories: Monte Carlo trajectories per sample when the method is trajectories.
        shots: None (exact expectations) or the measurement shots per <Z> estimate.

    Raises:
        ValueError: a label/qubit mismatch, an unknown simulator, method or noise channel, a
            noise level outside [0, 1], trajectories or shots below 1.
    """
    if int(num_labels) != ansatz.num_qubits:
        raise ValueError(
            f"the DQC head uses one qubit per label: the task has {num_labels} labels but the "
            f"ansatz has {ansatz.num_qubits} qubits (set ansatz.num_qubits=${{task.num_labels}})"
        )
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {SIMULATORS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    items = noise_items(noise)
    if int(trajectories) < 1:
        raise ValueError(f"head.trajectories={trajectories} must be at least 1")
    if shots is not None and int(shots) < 1:
        raise ValueError(f"head.shots={shots} must be at least 1, or null for exact expectations")
    if (items or shots is not None) and simulator != "native":
        raise ValueError(
            f"head.noise and head.shots need simulator=native (got {simulator!r}): set "
            "head.simulator=native or remove the noise"
        )
    if method == "trajectories" and not items:
        raise ValueError(
            "head.method=trajectories samples noise, but every head.noise level is 0: the "
            f"{int(trajectories)} trajectories would be one pure state repeated (and "
            "head.trajectories would not change the result). Fix: set a head.noise level "
            "(e.g. head.noise.depolarizing=0.001), or head.method=auto for the exact ideal circuit"
        )
    sim = SimOptions(
        method=method,
        block_size=block_size,
        remat=remat,
        chunk_size=chunk_size,
        max_bond=max_bond,
        noise=NoiseModel(**dict(items), noisy_encoding=bool(noisy_encoding)),
        trajectories=trajectories,
        shots=shots,
    )
    return DQCHead(ansatz, simulator=simulator, sim=sim)


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


def noisy_variant(
    head: DQCHead,
    noise: Mapping[str, float] | None,
    shots: int | None = None,
    *,
    trajectories: int | None = None,
    method: str | None = None,
    noisy_encoding: bool | None = None,
) -> DQCHead:
    """The same DQC head (same parameters) with another noise model and shot count: for
    re-evaluating a trained head under noise (`python -m qcxr.robustness`).

    Args:
        head: a built DQCHead.
        noise: channel -> level (replaces the head's noise; None or all zero: ideal).
        shots: None (exact expectations) or shots per <Z> estimate.
        trajectories, method, noisy_encoding: replace the head's values when given.

    Returns:
        A new DQCHead; `head` is unchanged.

    Raises:
        ValueError: `head` is not a DQCHead, or a value `dqc_head` would refuse.
    """
    if not isinstance(head, DQCHead):
        raise ValueError(f"only a DQC head can be re-evaluated under noise, got {type(head)}")
    sim = head.sim
    method = sim.method if method is None else method
    if method == "trajectories" and not noise_items(noise):
        # The ideal row of a grid for a head trained by trajectories: the exact circuit (no
        # noise to sample; dqc_head refuses noiseless trajectories).
        method = "auto"
    return dqc_head(
        head.ansatz.num_qubits,
        head.ansatz,
        simulator=head.simulator,
        block_size=sim.block_size,
        remat=sim.remat,
        chunk_size=sim.chunk_size,
        method=method,
        max_bond=sim.max_bond,
        noise=dict(noise or {}),
        noisy_encoding=sim.noise.noisy_encoding if noisy_encoding is None else noisy_encoding,
        trajectories=sim.trajectories if trajectories is None else trajectories,
        shots=shots,
    )
