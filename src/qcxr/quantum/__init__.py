"""Quantum circuits as pure JAX functions (PennyLane only in reference.py, imported on demand).

Layers, imported one way only: representation (gates, circuit, ansatz) -> kernels -> methods
(statevector, split, mps, density, trajectories, shots) -> cutting (wirecut, qcnn) -> the
dispatcher (dispatch/: engine, noisy, memory, and options.SimOptions, the one options value).
"""

from qcxr.quantum.cutting.qcnn import qcnn_circuit, qcnn_cut, qcnn_probs
from qcxr.quantum.cutting.wirecut import WireCut, cut_probs, joined_circuit
from qcxr.quantum.dispatch.engine import expvals, method_bytes, run
from qcxr.quantum.dispatch.memory import MemoryBudgetError, default_budget, estimate_bytes
from qcxr.quantum.dispatch.options import METHODS, SimOptions
from qcxr.quantum.kernels.program import compile_ansatz
from qcxr.quantum.representation.ansatz import (
    ANSATZE,
    ENCODINGS,
    INITS,
    Ansatz,
    make_ansatz,
    match_library,
)
from qcxr.quantum.representation.circuit import Angle, Circuit, Measurement, Op
from qcxr.quantum.representation.noise import CHANNELS as NOISE_CHANNELS
from qcxr.quantum.representation.noise import NoiseModel, make_noise

__all__ = [
    "ANSATZE",
    "ENCODINGS",
    "INITS",
    "Angle",
    "Ansatz",
    "Circuit",
    "Measurement",
    "METHODS",
    "MemoryBudgetError",
    "NOISE_CHANNELS",
    "NoiseModel",
    "Op",
    "SimOptions",
    "WireCut",
    "compile_ansatz",
    "cut_probs",
    "default_budget",
    "estimate_bytes",
    "method_bytes",
    "expvals",
    "joined_circuit",
    "make_ansatz",
    "make_noise",
    "match_library",
    "qcnn_circuit",
    "qcnn_cut",
    "qcnn_probs",
    "run",
]
