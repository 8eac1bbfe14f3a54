"""SimOptions: how the dispatcher simulates a circuit, as one value from config to simulator.

The DQC head's factory builds it once from the `head.*` keys (conf/head/dqc.yaml), the head holds
it (`DQCHead.sim`), `expvals` takes it, `resolve` turns "auto" into the method that runs (the one
place a method is chosen, engine.resolve_method), and the run logs that resolved value. A new
engine option is a field here plus its YAML key and schema field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from qcxr.quantum.methods.mps import check_max_bond
from qcxr.quantum.representation.noise import NoiseModel, make_noise

#: Simulation methods of expvals: the ideal ones (engine.py) and the noisy ones (noisy.py).
METHODS = ("auto", "statevector", "split", "mps", "density_matrix", "trajectories")
#: The methods noisy.py runs (noise or shots also send a call there).
NOISY_METHODS = ("density_matrix", "trajectories")
#: Trajectories per sample when not given.
DEFAULT_TRAJECTORIES = 64


@dataclass(frozen=True)
class SimOptions:
    """How to simulate: method, speed knobs, noise, shots and the memory budget (hashable, so a
    Flax module can hold it and jit can take it as static).

    Attributes:
        method: one of METHODS ("auto": the cheapest that fits the memory budget).
        block_size: wires per Kronecker block in rotation layers (a speed knob).
        remat: rematerialise each layer in the backward pass (statevector).
        chunk_size: micro-batch size inside the step, "auto" or None (statevector).
        max_bond: the MPS bond limit; None is exact.
        noise: the NoiseModel (channels after every gate, readout, noisy_encoding); a mapping
            channel -> level is accepted and turned into one.
        trajectories: T per sample for the trajectories method.
        shots: None (exact expectations) or bitstrings per sample.
        memory_budget: bytes the simulation may use; None: memory.default_budget().
    """

    method: str = "auto"
    block_size: int = 5
    remat: bool = False
    chunk_size: int | str | None = "auto"
    max_bond: int | None = None
    noise: NoiseModel = NoiseModel()
    trajectories: int = DEFAULT_TRAJECTORIES
    shots: int | None = None
    memory_budget: float | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if int(self.block_size) < 1:
            raise ValueError(f"block_size={self.block_size} must be at least 1")
        if self.chunk_size not in ("auto", None) and int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size={self.chunk_size} must be 'auto', None or at least 1")
        if int(self.trajectories) < 1:
            raise ValueError(f"trajectories={self.trajectories} must be a positive integer")
        if self.shots is not None and int(self.shots) < 1:
            raise ValueError(
                f"shots={self.shots} must be a positive integer, or None for exact <Z>"
            )
        if self.memory_budget is not None and not float(self.memory_budget) > 0:
            raise ValueError(f"memory_budget={self.memory_budget} must be positive bytes")
        chunk = self.chunk_size if self.chunk_size in ("auto", None) else int(self.chunk_size)
        normal = {
            "block_size": int(self.block_size),
            "remat": bool(self.remat),
            "chunk_size": chunk,
            "max_bond": check_max_bond(self.max_bond),
            "noise": make_noise(self.noise),
            "trajectories": int(self.trajectories),
            "shots": None if self.shots is None else int(self.shots),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_keys(
        cls,
        *,
        noise: Mapping[str, float] | NoiseModel | None = None,
        noisy_encoding: bool = True,
        trajectories: int | None = None,
        **keys,
    ) -> SimOptions:
        """SimOptions from flat keys as the config and expvals spell them (`noise` a mapping
        with a separate `noisy_encoding`, `trajectories` None for the default)."""
        model = make_noise(noise, noisy_encoding)
        t = DEFAULT_TRAJECTORIES if trajectories is None else trajectories
        return cls(noise=model, trajectories=t, **keys)

    @property
    def stochastic(self) -> bool:
        """Noise or finite shots: each call draws from a PRNG key."""
        return not self.noise.is_ideal or self.shots is not None

    @property
    def noisy(self) -> bool:
        """Whether the call runs in noisy.py (a noisy method, noise or shots)."""
        return self.method in NOISY_METHODS or self.stochastic

    def replace(self, **changes) -> SimOptions:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
