"""Memory estimate and guard for statevector simulation, from static shapes before allocation.

The model (bytes for one training step of the circuit, forward + backward):
    chunk x state_bytes x (kept + working) + index arrays
where state_bytes = 2^n x itemsize (4 for a real float32 state, 8 for complex64, 16 for complex128),
`kept` counts the full states backprop keeps (one per Kronecker block of every rotation layer, plus
the product state and the final state; with remat only each layer's input plus one layer recomputed)
and `working` = 3 states of live temporaries. Chunks of one sample use the adjoint method
(statevector._adjoint_circuit): the batch's final states (none with remat) plus 6 working states for
each of the `lanes` samples simulated side by side.
It was checked against measured peak memory by `python -m qcxr.bench heads` (see the README).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

from qcxr.quantum.methods.mps import mps_bytes
from qcxr.quantum.methods.split import split_bytes, split_terms

_WORKING_STATES = 3
_ENV_BUDGET = "QCXR_MEMORY_BUDGET_GB"


class MemoryBudgetError(MemoryError):
    """A simulation request that would exceed the memory budget."""


def default_budget() -> float:
    """The memory budget in bytes when none is given.

    `QCXR_MEMORY_BUDGET_GB` if set; else 90% of the accelerator's memory limit, or 85% of physical
    RAM on a CPU.
    """
    env = os.environ.get(_ENV_BUDGET)
    if env:
        return float(env) * 2**30
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        if "bytes_limit" in stats:
            return 0.9 * stats["bytes_limit"]
    return 0.85 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def state_itemsize(is_real: bool, dtype) -> int:
    """Bytes per amplitude."""
    real = jnp.dtype(dtype).itemsize
    return real if is_real else 2 * real


def estimate_bytes(
    ansatz,
    program,
    chunk: int,
    dtype,
    remat: bool,
    block_size: int = 5,
    batch: int | None = None,
    lanes: int = 1,
) -> int:
    """Bytes one forward + backward pass of `chunk` samples keeps alive at its peak.

    Args:
        ansatz: the Ansatz.
        program: its compiled Program (kernels.compile_ansatz).
        chunk: samples simulated at once.
        dtype: float dtype of the computation.
        remat: per-layer rematerialisation.
        block_size: wires per Kronecker block.
        batch: the whole batch (default: chunk); chunks of one keep every sample's final state.
        lanes: samples simulated side by side when chunk is 1.

    Returns:
        Estimated peak bytes.
    """
    n = ansatz.num_qubits
    batch = chunk if batch is None else batch
    if program.final_rows is None:  # no entangler: product states only
        return batch * n * 2 * state_itemsize(False, dtype) * (ansatz.num_layers + 2)
    state = 2**n * state_itemsize(ansatz.is_real, dtype)
    if chunk == 1:  # adjoint: final states of the batch (unless remat) + cotangent, state, temps
        return state * ((0 if remat else batch) + 6 * max(1, lanes)) + 2**n * 4 * 4
    blocks = math.ceil(n / max(1, block_size))
    layers = program.num_state_layers
    if remat:
        kept = layers + 2 + blocks  # layer inputs, product and final state, one layer redone
    else:
        kept = layers * blocks + 2
    index = 2**n * 4 * 4  # two int32 permutation tables and uint32 temporaries
    return chunk * state * (kept + _WORKING_STATES) + index


def _fixes(ansatz, batch: int, chunk: int, remat: bool) -> str:
    fixes = []
    if chunk > 1:
        fixes.append(f"process the batch in chunks (chunk_size={max(1, chunk // 2)} or 'auto')")
    if not remat:
        fixes.append("rematerialise layers in the backward pass (remat=true)")
    if batch > 1:
        fixes.append(f"a smaller batch than {batch}")
    fixes.append(f"fewer qubits than {ansatz.num_qubits}")
    fixes.append(f"a larger budget ({_ENV_BUDGET} or memory_budget=...)")
    return "; ".join(fixes)


def check_memory(
    ansatz, program, batch, chunk, dtype, remat, budget=None, block_size=5, lanes=1
) -> int:
    """Raise MemoryBudgetError if the simulation would not fit the budget; return the estimate."""
    budget = default_budget() if budget is None else float(budget)
    need = estimate_bytes(ansatz, program, chunk, dtype, remat, block_size, batch, lanes)
    if need > budget:
        raise MemoryBudgetError(
            f"simulating {ansatz.name!r} on {ansatz.num_qubits} qubits for a batch of {batch} "
            f"(chunks of {chunk}, remat={remat}, {jnp.dtype(dtype).name}) needs about "
            f"{need / 2**30:.1f} GiB ({2**ansatz.num_qubits} amplitudes x "
            f"{state_itemsize(ansatz.is_real, dtype)} B per state x {chunk} samples x what "
            f"backprop keeps), over the budget of {budget / 2**30:.1f} GiB. Fixes: "
            f"{_fixes(ansatz, batch, chunk, remat)}."
        )
    return need


def cache_bytes() -> int:
    """Bytes of one core's L2 cache (sysfs), the target size of a chunk's state on a CPU.

    Falls back to 2 MiB (this project's 2-core CPU) where sysfs does not say.
    """
    try:
        text = open("/sys/devices/system/cpu/cpu0/cache/index2/size").read().strip().upper()
        scale = {"K": 2**10, "M": 2**20}.get(text[-1], 1)
        return int(text.rstrip("KM")) * scale
    except (OSError, ValueError, IndexError):
        return 2 * 2**20


def choose_chunk_size(ansatz, program, batch, dtype, remat, budget=None, block_size=5) -> int:
    """The chunk `chunk_size="auto"` picks: the batch, or a power of two below it.

    The largest chunk that fits the memory budget; on a CPU, also no larger than keeps one chunk's
    states near the L2 cache size (cache_bytes()), where every pass over the state runs from cache
    instead of memory: measured on the 2-core CPU, 19 qubits, batch 32, chunks of 1 vs the whole
    batch: 0.87 vs 1.04 s per step (chunks of 4 at 17 qubits: 0.25 vs 0.31 s).
    Accelerators get the largest chunk that fits.
    """
    budget = default_budget() if budget is None else float(budget)
    chunk = batch
    state = 2**ansatz.num_qubits * state_itemsize(ansatz.is_real, dtype)
    if jax.default_backend() == "cpu" and program.final_rows is not None:
        # The whole batch if its states fit the cache, else one sample at a time (the adjoint
        # path). Measured on the 2-core CPU, batch 32, one sample at a time vs the whole batch:
        # 0.73 vs 0.99 s at 19 qubits, 0.19 vs 0.29 s at 17, equal at 15-16, slower at 14 (whose
        # batch fits in 2 MiB).
        chunk = batch if batch * state <= cache_bytes() else 1
    while chunk > 1 and estimate_bytes(ansatz, program, chunk, dtype, remat, block_size) > budget:
        chunk = 2 ** (math.ceil(math.log2(chunk)) - 1)
    return chunk


def choose_lanes(ansatz, program, batch, dtype, remat, budget=None, block_size=5) -> int:
    """Samples simulated side by side on the one-sample (adjoint) path: 2, or 1 if two do not fit.

    Two independent samples per step let the CPU runtime overlap one sample's single-threaded
    gradient contractions with the other's matrix products (measured on the 2-core CPU, 19
    qubits, batch 32: ~10% faster per step; three or four lanes gained nothing more).
    """
    budget = default_budget() if budget is None else float(budget)
    fits = estimate_bytes(ansatz, program, 1, dtype, remat, block_size, batch, 2) <= budget
    return 2 if batch > 1 and fits else 1


def check_split_memory(ansatz, program, batch, dtype, budget=None) -> int:
    """Raise MemoryBudgetError if the split method (methods/split.py) would not fit the budget.

    Takes the compiled program, not the plan: it runs before split.plan_split builds its tables.
    """
    budget = default_budget() if budget is None else float(budget)
    need = split_bytes(program, batch, state_itemsize(ansatz.is_real, dtype))
    if need > budget:
        n = program.num_qubits
        smaller = f"a smaller batch than {batch}; " if batch > 1 else ""
        raise MemoryBudgetError(
            f"simulating {ansatz.name!r} on {n} qubits for a batch of {batch} "
            f"by the split method ({split_terms(program)} terms of 2 x 2^{n // 2} amplitudes) "
            f"needs about {need / 2**30:.1f} GiB, over the budget of {budget / 2**30:.1f} GiB. "
            f"Fixes: {smaller}method='mps' or 'auto'; fewer qubits than {n}; a larger budget "
            f"({_ENV_BUDGET} or memory_budget=...)."
        )
    return need


def fits_split_memory(ansatz, program, batch, dtype, budget=None) -> bool:
    """Whether the split method fits the memory budget (see check_split_memory)."""
    budget = default_budget() if budget is None else float(budget)
    return split_bytes(program, batch, state_itemsize(ansatz.is_real, dtype)) <= budget


def mps_memory(ansatz, plan, batch, dtype, max_bond=None, budget=None) -> tuple[int, bool]:
    """Estimated bytes of the MPS method (methods/mps.py) and whether they fit the budget."""
    budget = default_budget() if budget is None else float(budget)
    need = mps_bytes(plan, batch, state_itemsize(ansatz.is_real, dtype), max_bond)
    return need, need <= budget


def check_mps_memory(ansatz, plan, batch, dtype, max_bond=None, budget=None) -> int:
    """Raise MemoryBudgetError if the MPS method would not fit the budget; return the estimate."""
    need, fits = mps_memory(ansatz, plan, batch, dtype, max_bond, budget)
    if not fits:
        budget = default_budget() if budget is None else float(budget)
        smaller = f"a smaller batch than {batch}; " if batch > 1 else ""
        bond = plan.padded_bond if max_bond is None else min(plan.padded_bond, max_bond)
        raise MemoryBudgetError(
            f"simulating {ansatz.name!r} on {ansatz.num_qubits} qubits for a batch of {batch} "
            f"by the MPS method (bond {bond}, exact bond {plan.exact_bond}) needs about "
            f"{need / 2**30:.1f} GiB, over the budget of {budget / 2**30:.1f} GiB. Fixes: "
            f"{smaller}a smaller max_bond (head.max_bond; truncation is approximate); fewer "
            f"layers; a larger budget ({_ENV_BUDGET} or memory_budget=...)."
        )
    return need
