"""The MPS method: an exact matrix product state simulation of the library ansatze.

Layer 3 of qcxr.quantum (a method, like statevector.py and split.py): built from the compiled
program of kernels.compile_ansatz, imports kernels only.

The state is a chain of site tensors A_k[l, p, r] (bond l to the left, physical bit p, bond r to
the right), one per wire, wire 0 first. The split method (split.py) is the special case of one cut;
this keeps a cut at every bond, so the cost grows as n * chi^3 per sample instead of 2^(n/2).

- The encoding and the rotation layers before the first entangler give a product state: bond 1.
- A rotation layer is one 2x2 gate per site: every site tensor is updated at once (no sweep).
- A CNOT network (a permutation of basis indices, y = F b over GF(2), as in kernels.permute) is
  applied exactly as a matrix product operator of 0/1 tensors W_k[a, y_k, b_k, a']. Its bond at
  the cut after wire k is the trellis of the parity checks y_j + F_j . b = 0: the partial
  syndromes of the wires left of the cut that can still be completed to zero on the right. That
  space has dimension rank(F[right rows, left cols]) + rank(F[left rows, right cols]) -- the same
  r1 + r2 the split method counts at its one cut -- so the MPO bond is 2^(r1 + r2) at every cut,
  derived from the circuit, never guessed (`network_mpo`). Applying it multiplies the MPS bond by
  it, exactly: A'_k[(l, a), y, (r, a')] = sum_b A_k[l, b, r] W_k[a, y, b, a'].
- The ring's periodic CNOT(n-1, 0) needs no swap network: it is part of the network's GF(2) map,
  and its effect is that every cut is crossed twice (the prefix parity travels right, the parity
  of the right part travels left to wire 0): bond 4 per ring at every cut, whatever n.
- The trailing CNOT network (the paper's last ring) is never applied to the state: as in the other
  methods it is folded into the measurement. <Z_j> after it is a sum over |psi_b|^2 of
  (-1)^(y_j) with y = F b; the probabilities are the doubled chain (ket x bra, bond chi^2) and the
  map b -> y its MPO (bond D), summed over y except y_j, which is signed. Left and right
  environments L_k[l, l', a] (lax.scan over the sites) then give every <Z_j> in O(n chi^3 D).
  So the paper's 3-layer ring runs at bond 16 (two applied rings, 4 x 4) with a measurement
  environment of 16 x 16 x 4, exact for any n.
- Every site tensor is padded to the largest bond (zeros: the boundary bonds use index 0 only),
  stacked into one array [n, B, chi, 2, chi]: rotation layers and MPOs are one batched
  contraction over all sites, the environments one scan, so the compiled program does not grow
  with n (compile time is flat in n).

Cost per sample: O(n chi^3 D) with chi = prod of the applied networks' MPO bonds and D the
folded network's. Ring or basic_entangler with L layers: chi = 4^(L-1), D = 4. strongly_entangling
layer l has CNOT(i, i + r) with r = l mod (n-1) + 1: its network crosses a cut about 2 r times,
so its MPO bond is up to 4^r (capped by 2^(wires on the smaller side)) and chi is the product of
those over the applied layers: 4^(1+2+...) grows fast; the engine's memory guard and `auto` see
that cost before anything runs (`mps_bond`, `mps_cost`, `mps_bytes`).

`max_bond` truncates the bond after each applied network by an SVD sweep (left-canonical form) and
another SVD sweep from the right keeping the largest Schmidt values, renormalising. The discarded
weight of one sample is the sum, over every truncated bond and every network, of the discarded
squared Schmidt values of the normalised state (an upper estimate of 1 - fidelity to first
order). At max_bond >= the exact bond nothing is truncated and the result is exact. The SVD's
gradient uses a broadened inverse (s_i^2 - s_j^2) / ((s_i^2 - s_j^2)^2 + eps) so degenerate or
zero Schmidt values (padding) give finite gradients.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum.kernels.program import precision


class _Span:
    """A GF(2) vector space of ints in echelon form (membership and insertion)."""

    def __init__(self, vectors=()):
        self.basis: dict[int, int] = {}  # highest bit -> vector
        for v in vectors:
            self.add(v)

    def reduce(self, v: int) -> int:
        while v:
            top = v.bit_length() - 1
            b = self.basis.get(top)
            if b is None:
                return v
            v ^= b
        return 0

    def add(self, v: int) -> None:
        v = self.reduce(v)
        if v:
            self.basis[v.bit_length() - 1] = v

    def copy(self) -> _Span:
        s = _Span()
        s.basis = dict(self.basis)
        return s


@dataclass(frozen=True)
class NetworkMPO:
    """A CNOT network (GF(2) rows, kernels.cnot_rows) as an MPO of 0/1 tensors.

    Attributes:
        tensors: per wire, int8[D_left, 2 (y), 2 (b), D_right]: 1 where the partial syndrome
            moves from the left state to the right state reading input bit b and output bit y.
        bonds: D at the cut after each wire (the last is 1).
    """

    tensors: tuple[np.ndarray, ...]
    bonds: tuple[int, ...]

    @property
    def max_bond(self) -> int:
        """The largest bond."""
        return max(self.bonds, default=1)

    def stacked(self) -> np.ndarray:
        """int8[n, D, 2, 2, D]: every tensor zero-padded to the largest bond."""
        d = self.max_bond
        out = np.zeros((len(self.tensors), d, 2, 2, d), np.int8)
        for k, t in enumerate(self.tensors):
            out[k, : t.shape[0], :, :, : t.shape[3]] = t
        return out


@functools.lru_cache(maxsize=64)
def network_mpo(rows: tuple[int, ...], n: int) -> NetworkMPO:
    """The exact MPO of the permutation |b> -> |F b> of a CNOT network (minimal trellis).

    Parity check j reads y_j + sum_w F[j, w] b_w = 0 (F[j, w]: bit n-1-w of rows[j]). The state
    at the cut after wire k is the partial syndrome of wires 0..k (an n-bit int), kept only if the
    wires right of the cut can still cancel it. Reachable and co-reachable syndromes form a space
    of dimension rank(F[rows > k, cols <= k]) + rank(F[rows <= k, cols > k]).

    Args:
        rows: the network's GF(2) rows (row j: mask of input index bits giving output wire j).
        n: wires.

    Returns:
        The NetworkMPO.
    """
    col_b = [0] * n  # syndrome flipped by input bit b_w
    for j, mask in enumerate(rows):
        for w in range(n):
            if mask >> (n - 1 - w) & 1:
                col_b[w] |= 1 << j
    col_y = [1 << w for w in range(n)]
    future = [_Span()] * n  # future[k]: span of the columns of wires k+1..n-1
    span = _Span()
    for k in range(n - 1, -1, -1):
        future[k] = span.copy()
        span.add(col_b[k])
        span.add(col_y[k])
    states = [0]
    tensors, bonds = [], []
    for k in range(n):
        index: dict[int, int] = {}
        moves = []
        for a, s in enumerate(states):
            for y in (0, 1):
                for b in (0, 1):
                    t = s ^ (col_b[k] if b else 0) ^ (col_y[k] if y else 0)
                    if future[k].reduce(t) == 0:
                        moves.append((a, y, b, index.setdefault(t, len(index))))
        w = np.zeros((len(states), 2, 2, len(index)), np.int8)
        for a, y, b, c in moves:
            w[a, y, b, c] = 1
        tensors.append(w)
        bonds.append(len(index))
        states = sorted(index, key=index.get)
    return NetworkMPO(tuple(tensors), tuple(bonds))


@dataclass(frozen=True, eq=False)
class MPSPlan:
    """A compiled program (kernels.Program) for the MPS method.

    Attributes:
        num_qubits: wires.
        steps: ("rot", layer) and ("mpo", int8[n, D, 2, 2, D]) in order.
        bonds: per cut (n - 1 cuts), the MPS bond before the measurement that the exact
            simulation carries: the product of the applied networks' MPO bonds.
        step_bonds: per step, the exact bond that a truncation after it needs: per cut the
            smaller of the product so far and 2^(wires on the smaller side), max over cuts.
        measure: int8[n, D, 2, 2, D]: the folded trailing network's MPO.
        measure_bonds: its bonds per cut.
        padded_bond: the bond of the stacked tensors (max over cuts of the per-step products).
    """

    num_qubits: int
    steps: tuple
    bonds: tuple[int, ...]
    measure: np.ndarray
    measure_bonds: tuple[int, ...]
    padded_bond: int
    step_bonds: tuple[int, ...]

    @property
    def exact_bond(self) -> int:
        """The bond for exactness: max over cuts of min(carried bond, 2^(smaller side)).

        A max_bond at or above it never truncates (the result is the exact one).
        """
        return max(self.step_bonds, default=1)


@functools.lru_cache(maxsize=32)
def plan_mps(program) -> MPSPlan:
    """Compile a program (kernels.compile_ansatz, with an entangler) for the MPS method."""
    n = program.num_qubits
    if program.final_rows is None:
        raise ValueError("the MPS method needs a circuit with an entangler (final_rows is None)")
    steps, bonds, padded, step_bonds = [], [1] * max(n - 1, 0), 1, []
    cap = schmidt_cap(n)
    for kind, arg in program.ops:
        if kind == "perm":
            mpo = network_mpo(arg, n)
            steps.append(("mpo", mpo.stacked()))
            bonds = [b * d for b, d in zip(bonds, mpo.bonds[:-1], strict=True)]
            padded *= mpo.max_bond
        else:
            steps.append(("rot", arg))
        step_bonds.append(max((min(b, c) for b, c in zip(bonds, cap, strict=True)), default=1))
    final = network_mpo(tuple(program.final_rows), n)
    return MPSPlan(
        n,
        tuple(steps),
        tuple(bonds),
        final.stacked(),
        final.bonds[:-1],
        padded,
        tuple(step_bonds),
    )


def mps_bond(program) -> int:
    """The exact MPS bond of a compiled program (the largest over cuts)."""
    return plan_mps(program).exact_bond


def _bond_after(plan: MPSPlan, max_bond: int | None) -> list[int]:
    """The stacked bond after each step (truncated to max_bond where that loses something)."""
    chi, out = 1, []
    for (kind, arg), exact in zip(plan.steps, plan.step_bonds, strict=True):
        if kind == "mpo":
            chi *= arg.shape[1]
            if max_bond is not None and chi > max_bond and exact > max_bond:
                chi = max_bond
        out.append(chi)
    return out


def mps_cost(plan: MPSPlan, max_bond: int | None = None) -> float:
    """Multiply-adds per sample of one forward pass by the MPS method (the engine's choice)."""
    n = plan.num_qubits
    cost, chi = 0.0, 1
    for (kind, arg), after in zip(plan.steps, _bond_after(plan, max_bond), strict=True):
        if kind == "mpo":
            d = arg.shape[1]
            cost += n * chi * chi * 4 * d * d
            if after < chi * d:
                cost += n * 12 * (chi * d) ** 3  # two SVD sweeps
        else:
            cost += n * 4 * chi * chi
        chi = after
    d = plan.measure.shape[1]
    # left, right environments and the <Z_j> contractions: 3 x (2 chi^3 D + 2 chi^3 D + D^2 chi^2)
    return cost + 3 * n * (4 * chi**3 * d + 2 * d * d * chi * chi)


def mps_bytes(plan: MPSPlan, batch: int, itemsize: int, max_bond: int | None = None) -> int:
    """Peak bytes of a forward + backward pass of the MPS method for a batch.

    Every step's stacked tensors n x chi^2 x 2 are kept for backprop; the environment scans keep
    n environments chi^2 D and their intermediates (chi^2 D x 2 per site, a few copies).
    """
    n = plan.num_qubits
    chi, total = 1, 2 * n
    for after in _bond_after(plan, max_bond):
        chi = after
        total += 3 * n * 2 * chi * chi
    d = plan.measure.shape[1]
    total += 12 * n * chi * chi * d * 2
    return batch * itemsize * total


def _mm(spec: str, a, b):
    return jnp.einsum(spec, a, b, precision=precision())


def _conj(a):
    return jnp.conj(a) if jnp.iscomplexobj(a) else a


def _apply_mpo(a: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """[n, B, l, 2, r] x [n, D, 2 (y), 2 (b), D] -> [n, B, l D, 2, r D] (exact)."""
    n, b, left, _, right = a.shape
    d = w.shape[1]
    out = _mm("kblpr,kaypc->kblayrc", a, w.astype(a.dtype))
    return out.reshape(n, b, left * d, 2, right * d)


def _left_env(env, site, v):
    """L'[r, r', c] = sum L[l, l', a] A[l, p, r] conj(A)[l', p, r'] V[a, p, c] (batched)."""
    m = _mm("bxya,apc->bxypc", env, v)
    m = _mm("bxypc,bxpr->bypcr", m, site)
    return _mm("bypcr,bypz->brzc", m, _conj(site))


def _right_env(env, site, v):
    """R'[l, l', a] = sum A[l, p, r] conj(A)[l', p, r'] V[a, p, c] R[r, r', c] (batched)."""
    m = _mm("brzc,apc->brzap", env, v)
    m = _mm("brzap,blpr->bzapl", m, site)
    return _mm("bzapl,bypz->blya", m, _conj(site))


def _measure(plan: MPSPlan, a: jnp.ndarray) -> jnp.ndarray:
    """<Z_j> for every wire after the folded trailing network: f[B, n]."""
    b, chi = a.shape[1], a.shape[2]
    w = jnp.asarray(plan.measure, a.real.dtype)  # [n, D, 2 (y), 2 (b), D]
    d = w.shape[1]
    v_id = jnp.sum(w, axis=2)  # [n, D, 2, D]: output bit summed
    v_z = w[:, :, 0] - w[:, :, 1]  # output bit signed: Z on wire j after the network
    edge = jnp.zeros((b, chi, chi, d), a.dtype).at[:, 0, 0, 0].set(1)

    def left(env, xs):
        site, v = xs
        new = _left_env(env, site, v.astype(a.dtype))
        return new, env  # emit the environment left of this site

    def right(env, xs):
        site, v = xs
        new = _right_env(env, site, v.astype(a.dtype))
        return new, env

    _, lefts = jax.lax.scan(left, edge, (a, v_id))  # lefts[k]: sites < k
    _, rights = jax.lax.scan(right, edge, (a, v_id), reverse=True)  # rights[k]: sites > k
    m = _mm("kbxya,kapc->kbxypc", lefts, v_z.astype(a.dtype))
    m = _mm("kbxypc,kbxpr->kbypcr", m, a)
    m = _mm("kbypcr,kbrzc->kbypz", m, rights)
    z = jnp.sum(m * _conj(a), axis=(2, 3, 4))  # [n, B]
    return jnp.real(z).T


def _svd_jvp_eps(dtype) -> float:
    return 1e-12 if jnp.dtype(dtype).itemsize >= 8 else 1e-6


@jax.custom_jvp
def _safe_svd(m: jnp.ndarray):
    """Thin SVD (u, s, vh) of a batch of matrices with a broadened JVP (finite at degeneracies)."""
    u, s, vh = jnp.linalg.svd(m, full_matrices=False)
    return u, s, vh


def _h(m):
    return jnp.conj(jnp.swapaxes(m, -1, -2))


@_safe_svd.defjvp
def _safe_svd_jvp(primals, tangents):
    # JAX's own rule (jax._src.lax.linalg._svd_jvp_rule) with 1 / (s_j^2 - s_i^2) and 1 / s
    # broadened by eps: zero or repeated Schmidt values (zero padding, degenerate spectra) give
    # finite gradients instead of inf / nan.
    (m,), (dm,) = primals, tangents
    u, s, vh = _safe_svd(m)
    eps = _svd_jvp_eps(s.dtype)
    ut, v = _h(u), _h(vh)
    s_dim = s[..., None, :]
    ds_full = ut @ dm @ v
    ds = jnp.real(jnp.diagonal(ds_full, axis1=-2, axis2=-1))
    diffs = (s_dim + jnp.swapaxes(s_dim, -1, -2)) * (s_dim - jnp.swapaxes(s_dim, -1, -2))
    f = diffs / (diffs * diffs + eps)
    s_inv = s / (s * s + eps)
    dss = s_dim.astype(m.dtype) * ds_full
    sds = jnp.swapaxes(s_dim, -1, -2).astype(m.dtype) * ds_full
    diag = (
        0.5 * (ds_full - _h(ds_full)) * (jnp.eye(s.shape[-1]) * s_inv[..., None, :]).astype(m.dtype)
    )
    du = u @ (f.astype(m.dtype) * (dss + _h(dss)) + diag)
    dv = v @ (f.astype(m.dtype) * (sds + _h(sds)))
    rows, cols = m.shape[-2:]
    if rows > cols:
        dav = dm @ v
        du = du + (dav - u @ (ut @ dav)) * s_inv[..., None, :].astype(m.dtype)
    if cols > rows:
        dahu = _h(dm) @ u
        dv = dv + (dahu - v @ (vh @ dahu)) * s_inv[..., None, :].astype(m.dtype)
    return (u, s, vh), (du, ds.astype(s.dtype), _h(dv))


def _truncate(a: jnp.ndarray, max_bond: int):
    """Truncate stacked site tensors [n, B, chi, 2, chi] to bond max_bond < chi.

    An SVD sweep left to right (left-canonical form), then one right to left keeping the
    max_bond largest Schmidt values of every cut and renormalising.

    Returns:
        (tensors [n, B, max_bond, 2, max_bond], discarded weight f[B] summed over the cuts).
    """
    b, chi = a.shape[1], a.shape[2]
    t = max_bond
    eye = jnp.broadcast_to(jnp.eye(chi, dtype=a.dtype), (b, chi, chi))

    def qr_step(r, site):
        # An SVD instead of a QR: the same left-canonical factor, but with a gradient that stays
        # finite for the rank-deficient (zero-padded) matrices (QR's needs R invertible).
        m = _mm("bxl,blpr->bxpr", r, site).reshape(b, chi * 2, chi)
        u, s, vh = _safe_svd(m)
        return s[:, :, None].astype(vh.dtype) * vh, u.reshape(b, chi, 2, chi)

    r_last, left = jax.lax.scan(qr_step, eye, a[:-1])
    last = _mm("bxl,blpr->bxpr", r_last, a[-1])
    a = jnp.concatenate([left, last[None]], axis=0)

    def svd_step(c, site):
        m = _mm("blpr,brs->blps", site, c).reshape(b, chi, 2 * t)
        u, s, vh = _safe_svd(m)  # s: [B, min(chi, 2t)]
        kept = s[:, :t]
        total = jnp.sum(s * s, axis=-1)
        keep = jnp.sum(kept * kept, axis=-1)
        norm = jnp.sqrt(keep)
        c_new = u[:, :, :t] * (kept / norm[:, None])[:, None, :].astype(u.dtype)
        return c_new, (vh[:, :t].reshape(b, t, 2, t), jnp.sum(s[:, t:] ** 2, axis=-1) / total)

    c0 = jnp.broadcast_to(jnp.eye(chi, t, dtype=a.dtype), (b, chi, t))
    c_first, (right, lost) = jax.lax.scan(svd_step, c0, a[1:], reverse=True)
    first = _mm("blpr,brs->blps", a[0], c_first)[:, :t]
    return jnp.concatenate([first[None], right], axis=0), jnp.sum(lost, axis=0)


#: Up to this many wires the exact path runs as a Python loop over sites with every tensor at its
#: own bond (no padding; the edge bonds are 4x smaller than the middle ones). On the 2-core CPU the
#: scan's per-iteration overhead, larger still in the backward pass, dominated the tiny chi = 16
#: contractions (19 qubits, batch 32, value and gradient: 117 ms scanned, see docs/quantum.md for
#: the unrolled time); above it the scan keeps the compiled program (and compile time) flat in n.
UNROLL_MAX_QUBITS = 40


def _site_tensors(stacked: np.ndarray) -> list[np.ndarray]:
    """Per wire, the MPO tensor [D_left, 2, 2, D_right] cut back from the padded stack.

    Every trellis state is used (network_mpo keeps only reachable, co-reachable ones), so the
    extent of the nonzeros is the bond.
    """
    out = []
    for w in stacked:
        nz = np.nonzero(w)
        out.append(w[: nz[0].max() + 1, :, :, : nz[3].max() + 1])
    return out


def _identity_site(b: int, left: int, dtype) -> jnp.ndarray:
    """[B, left, 2, 2 left]: the isometry (l, p) -> 2 l + p (a site of a state in the basis)."""
    eye = jnp.eye(2 * left, dtype=dtype).reshape(1, left, 2, 2 * left)
    return jnp.broadcast_to(eye, (b, left, 2, 2 * left))


def _edge_exact(sites: list) -> list:
    """The same state with the bond at each edge cut cut down to 2^(wires on the edge's side).

    Near an end the applied networks' bond (16 for the paper's ring) exceeds what the wires there
    can carry (2, 4, 8, ...): the left block is multiplied out into the next site and replaced by
    identity sites in the computational basis (exact, no decomposition), and likewise from the
    right, so the measurement sweeps contract smaller tensors there.
    """
    sites = list(sites)
    n, b, dtype = len(sites), sites[0].shape[0], sites[0].dtype
    k = 0  # sites[0..k] in the basis: bond 2^(k+1) at cut k instead of sites[k]'s right bond
    while k + 1 < n - 1 and 2 ** (k + 1) < sites[k].shape[3]:
        block = sites[k].reshape(b, 2 ** (k + 1), sites[k].shape[3])
        sites[k] = _identity_site(b, 2**k, dtype)
        sites[k + 1] = _mm("bxl,blpr->bxpr", block, sites[k + 1])
        k += 1
    k = n - 1
    while k - 1 > 0 and 2 ** (n - k) < sites[k].shape[1]:
        left = sites[k].shape[1]
        block = jnp.moveaxis(sites[k], 1, 3).reshape(b, 2 ** (n - k), left)  # [B, (p, r), l]
        eye = jnp.eye(2 ** (n - k), dtype=dtype).reshape(1, 2 ** (n - k), 2, 2 ** (n - k - 1))
        sites[k] = jnp.broadcast_to(eye, (b, 2 ** (n - k), 2, 2 ** (n - k - 1)))  # (p, r) -> l
        sites[k - 1] = _mm("blpr,bxr->blpx", sites[k - 1], block)
        k -= 1
    return sites


def _simulate_unrolled(plan: MPSPlan, layer_mats, vec: jnp.ndarray) -> jnp.ndarray:
    """The exact path as a loop over sites, each tensor [B, l, 2, r] at its own bond: f[B, n]."""
    n, dtype = plan.num_qubits, vec.dtype
    sites = [vec[:, k, None, :, None] for k in range(n)]  # [B, 1, 2, 1]
    for kind, arg in plan.steps:
        if kind == "rot":
            mats = layer_mats(arg)
            dtype = jnp.result_type(dtype, mats.dtype)
            mats = mats.astype(dtype)
            sites = [_mm("pq,blqr->blpr", mats[k], s.astype(dtype)) for k, s in enumerate(sites)]
        else:
            new = []
            for s, w in zip(sites, _site_tensors(arg), strict=True):
                b, left, _, right = s.shape
                out = _mm("blpr,aypc->blayrc", s, jnp.asarray(w, dtype))
                new.append(out.reshape(b, left * w.shape[0], 2, right * w.shape[3]))
            sites = new
    sites = _edge_exact(sites)
    # Two sweeps: left environments L_k (sites < k), then from the right the site-pair tensor
    # G_k[x, y, p, c] = sum A_k[x, p, r] A_k[y, p, z] R_{k+1}[r, z, c], which gives both the next
    # right environment (G_k V_id) and <Z_k> (L_k V_z G_k) -- a third sweep saved.
    b = vec.shape[0]
    measure = _site_tensors(plan.measure)
    one = jnp.ones((b, 1, 1, 1), dtype)
    lefts, env = [one], one
    for s, w in zip(sites[:-1], measure[:-1], strict=True):
        v = jnp.asarray(w.sum(axis=1), dtype)  # [D, 2 (b), D]: output bit summed
        m = _mm("bxya,bxpr->byapr", env, s)
        m = _mm("byapr,apc->byprc", m, v)
        env = _mm("byprc,bypz->brzc", m, _conj(s))
        lefts.append(env)
    z = [None] * n
    env = one
    for k in range(n - 1, -1, -1):
        w, s = measure[k], sites[k]
        g = _mm("brzc,bypz->brcyp", env, _conj(s))
        g = _mm("brcyp,bxpr->bxypc", g, s)
        vz = jnp.asarray(w[:, 0] - w[:, 1], dtype)  # output bit signed: Z on wire k
        lz = _mm("bxya,apc->bxypc", lefts[k], vz)
        z[k] = jnp.sum(lz * g, axis=(1, 2, 3, 4))
        if k:
            env = _mm("bxypc,apc->bxya", g, jnp.asarray(w.sum(axis=1), dtype))
    return jnp.real(jnp.stack(z, axis=-1))


def simulate(plan: MPSPlan, layer_mats, vec: jnp.ndarray, max_bond: int | None = None):
    """<Z_i> for every wire by the MPS method, and the discarded weight.

    Args:
        plan: plan_mps of the program.
        layer_mats: function layer -> [n, 2, 2] gate matrices of that rotation layer.
        vec: [B, n, 2] single-qubit states after the encoding and the folded layers.
        max_bond: truncate the bond to this after each network (None: exact).

    Returns:
        (f[B, n] expectations, f[B] discarded weight: 0 when nothing was truncated).
    """
    b = vec.shape[0]
    lost = jnp.zeros((b,), vec.real.dtype)
    truncates = max_bond is not None and max(plan.step_bonds, default=1) > max_bond
    if not truncates and plan.num_qubits <= UNROLL_MAX_QUBITS:
        return _simulate_unrolled(plan, layer_mats, vec), lost
    a = jnp.transpose(vec, (1, 0, 2))[:, :, None, :, None]  # [n, B, 1, 2, 1]
    for (kind, arg), exact in zip(plan.steps, plan.step_bonds, strict=True):
        if kind == "rot":
            mats = layer_mats(arg)
            dtype = jnp.result_type(a.dtype, mats.dtype)
            a = _mm("kpq,kblqr->kblpr", mats.astype(dtype), a.astype(dtype))
        else:
            a = _apply_mpo(a, jnp.asarray(arg))
            # At max_bond >= the exact bond a truncation would lose nothing: skipped, so the
            # result is the exact method's.
            if max_bond is not None and a.shape[2] > max_bond and exact > max_bond:
                a, d = _truncate(a, int(max_bond))
                lost = lost + d.astype(lost.dtype)
    return _measure(plan, a), lost


def check_max_bond(max_bond) -> int | None:
    """Validate a max_bond option: None or an int >= 1."""
    if max_bond is None:
        return None
    if isinstance(max_bond, bool) or not isinstance(max_bond, (int, np.integer)) or max_bond < 1:
        raise ValueError(f"max_bond must be None (exact) or an integer >= 1, got {max_bond!r}")
    return int(max_bond)


def schmidt_cap(n: int) -> list[int]:
    """2^min(left wires, right wires) per cut: no state needs a larger bond."""
    return [2 ** min(k + 1, n - k - 1) for k in range(n - 1)]


__all__ = [
    "MPSPlan",
    "NetworkMPO",
    "check_max_bond",
    "mps_bond",
    "mps_bytes",
    "mps_cost",
    "network_mpo",
    "plan_mps",
    "schmidt_cap",
    "simulate",
]
