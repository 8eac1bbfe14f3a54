"""Quantum circuits as pure JAX functions (PennyLane only in reference.py, imported on demand)."""

from qcxr.quantum.ansatz import ANSATZE, ENCODINGS, INITS, Ansatz, make_ansatz
from qcxr.quantum.engine import compile_ansatz, expvals
from qcxr.quantum.memory import MemoryBudgetError, default_budget, estimate_bytes

__all__ = [
    "ANSATZE",
    "ENCODINGS",
    "INITS",
    "Ansatz",
    "MemoryBudgetError",
    "compile_ansatz",
    "default_budget",
    "estimate_bytes",
    "expvals",
    "make_ansatz",
]
