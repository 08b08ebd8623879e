"""Kendall τ_b (SCIENCE.md §3: Kendall-τ_j and Kτ-W_j) for all column pairs at once.

Equal to ``scipy.stats.kendalltau(x, y).statistic`` (variant 'b': same tie terms, same float
operations), but scipy sorts both vectors for every pair, O(n log n) each time. Here each column
is sorted once (a radix sort) and a pair costs O(n) integer work:

Cut the sorted order of x into *buckets* of at most 64 consecutive images that never split a
run of tied x values (a longer run is a bucket of its own: nothing inside it is discordant).
A discordant pair (x_i < x_j, y_i > y_j) then lies either

- inside one bucket: bucket images carry "x strictly larger" bit masks (precomputed); for image
  i, a 64-lane vector compare gives the mask of bucket images with a smaller y; the popcount of
  the AND counts its discordant partners; or
- across buckets: buckets are visited from the largest x down while a bitset over y-sorted
  positions holds the images of the buckets already visited, with per-word prefix counts
  rebuilt after each bucket, so "how many visited images have a smaller y" is two loads and a
  popcount.

Joint ties (equal x and equal y) are counted the same way with an equality compare. All counts
are exact integers; τ is formed in float64 the way scipy forms it. A pair costs about
n·(a few ns) + n²/4096 word operations (the prefix rebuilds); the in-bucket compare is written
as one 64-lane LLVM vector compare, which AVX-512 runs as 2-4 instructions (other CPUs get
LLVM's slower but equivalent lowering).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.extending import intrinsic

__all__ = ["kendall_tau_b", "kendall_tau_diag", "kendall_tau_matrix"]

_CAP = 64  # images per bucket: one machine word of bits
_U = uint64  # unsigned loop indices: numba then skips its negative-index wraparound code


@intrinsic
def _popcount(typingctx, x):
    """One POPCNT of an int64."""
    if x != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.int64), codegen


def _lane_mask(predicate: str):
    """Intrinsic ``f(v, lo, x)`` -> int64 whose bit q is ``v[lo + q] <predicate> x`` for q < 64.

    One compare of 64 int16/int32 lanes (2 or 4 AVX-512 compares into a mask register). ``v``
    must be readable for 64 elements from ``lo``; the caller masks lanes past the bucket.
    """

    @intrinsic
    def mask(typingctx, v, lo, x):
        ok = isinstance(v, types.Array) and v.ndim == 1 and v.dtype in (types.int16, types.int32)
        if not (ok and isinstance(lo, types.Integer) and isinstance(x, types.Integer)):
            return None
        width = v.dtype.bitwidth

        def codegen(context, builder, signature, args):
            lane = ir.IntType(width)
            lanes = ir.VectorType(lane, _CAP)
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.PointerType(lanes))
            vec = builder.load(ptr, align=width // 8)
            xv = args[2]
            if xv.type.width > width:
                xv = builder.trunc(xv, lane)
            elif xv.type.width < width:
                xv = builder.sext(xv, lane)
            undef = ir.Constant(lanes, ir.Undefined)
            first = builder.insert_element(undef, xv, ir.Constant(ir.IntType(32), 0))
            splat = builder.shuffle_vector(
                first, undef, ir.Constant(ir.VectorType(ir.IntType(32), _CAP), [0] * _CAP)
            )
            return builder.bitcast(builder.icmp_signed(predicate, vec, splat), ir.IntType(_CAP))

        return types.int64(v, lo, x), codegen

    return mask


_mask_lt = _lane_mask("<")
_mask_eq = _lane_mask("==")


@njit(cache=True, inline="always")
def _gt_mask(end: int) -> int:
    """Bits end..63; 0 when end == 64."""
    return (-1 << (end & 63)) & ((end >> 6) - 1)


@njit(cache=True)
def _radix_argsort(keys: np.ndarray, order: np.ndarray, tmp: np.ndarray) -> None:
    """Stable LSD radix sort by byte: O(n) per column, where np.argsort is O(n log n)."""
    n = keys.shape[0]
    for i in range(n):
        order[i] = i
    count = np.empty(257, np.int64)
    for shift in range(0, keys.itemsize * 8, 8):
        count[:] = 0
        for i in range(n):
            count[((keys[i] >> _U(shift)) & _U(0xFF)) + _U(1)] += 1
        if count.max() == n:
            continue  # every key has the same byte here
        for d in range(256):
            count[d + 1] += count[d]
        for k in range(n):
            i = order[k]
            d = (keys[i] >> _U(shift)) & _U(0xFF)
            tmp[count[d]] = i
            count[d] += 1
        order[:] = tmp


@njit(cache=True, inline="always")
def _sortable(bits, sign):
    """IEEE-754 bits -> unsigned key with the same order (negatives flipped)."""
    return ~bits if bits & sign else bits | sign


@njit(parallel=True, cache=True)
def _prepare(xt: np.ndarray, ukind: np.ndarray, key_kind: np.ndarray):
    """Per column of ``xt`` [J, n]: sort order, keys, buckets, in-bucket masks and tie counts.

    ``ukind`` = [sign bit] in the unsigned type as wide as the floats; ``key_kind``: the key type.

    Returns perm [J, n] (image at each sorted position); key [J, n] (per image: its sorted
    position, shifted up by half the key's bits, | the first sorted position of its tie run);
    gt [J, n] (per sorted position: bucket positions with a strictly larger value, 0 in an
    oversized tie bucket); lead [J, n] (per sorted position: start of its tie run); offsets
    [J, n + 1] (bucket starts); nbuckets [J]; ties [J] (Σ t(t-1)/2 over tie runs, scipy's xtie).
    """
    ncol, n = xt.shape
    perm = np.empty((ncol, n), np.uint32)
    key = np.empty((ncol, n), key_kind.dtype)
    half = key_kind.itemsize * 4
    gt = np.zeros((ncol, n), np.int64)
    lead = np.empty((ncol, n), np.uint32)
    offsets = np.zeros((ncol, n + 1), np.uint32)
    nbuckets = np.zeros(ncol, np.int64)
    ties = np.zeros(ncol, np.int64)
    sign = ukind[0]
    for c in prange(ncol):
        col = xt[c]
        bits = col.view(ukind.dtype)
        keys = np.empty(n, ukind.dtype)
        for i in range(n):
            keys[i] = _sortable(bits[i], sign)
        order = np.empty(n, np.int64)
        _radix_argsort(keys, order, np.empty(n, np.int64))
        p = 0
        g = 0
        fill = 0  # images in the open bucket
        tie = 0
        while p < n:
            q = p + 1
            while q < n and col[order[q]] == col[order[p]]:  # == also ties -0.0 with 0.0
                q += 1
            size = q - p
            tie += size * (size - 1) // 2
            big = size > _CAP
            if fill > 0 and (big or fill + size > _CAP):
                g += 1
                fill = 0
            offsets[c, g] = p - fill
            for k in range(p, q):
                perm[c, k] = order[k]
                key[c, order[k]] = (np.int64(k) << half) | p
                lead[c, k] = p
                if not big:
                    gt[c, k] = _gt_mask(fill + size)
            fill += size
            if big:
                g += 1
                fill = 0
            p = q
        if fill > 0:
            g += 1
        offsets[c, g] = n
        nbuckets[c] = g
        for h in range(g):  # drop bits past each bucket's end
            lo = offsets[c, h]
            keep = ~_gt_mask(offsets[c, h + 1] - lo)
            for k in range(lo, offsets[c, h + 1]):
                gt[c, k] &= keep
        ties[c] = tie
    return perm, key, gt, lead, offsets, nbuckets, ties


@njit(cache=True)
def _discordant2(pa, gta, oa, ng, key_b, key_c, sb, sc):
    """Discordant pairs of one x column against two y columns b and c (module docstring).

    Two y columns per pass share the x-side loads and loop overhead and give the CPU two
    independent dependency chains. Scratch ``(vs, ps, bits, wp)`` per y column: per x-sorted
    position the image's y tie-run start and y position, the bitset of visited y positions and
    its per-word prefix counts. ``vs`` is left filled for :func:`_joint_ties`.
    """
    vs_b, ps_b, bits_b, wp_b = sb
    vs_c, ps_c, bits_c, wp_c = sc
    half = key_b.itemsize * 4  # key = y position << half | y tie-run start
    low = (np.int64(1) << half) - 1
    nwords = _U(wp_b.shape[0])
    bits_b[:] = 0
    bits_c[:] = 0
    wp_b[:] = 0
    wp_c[:] = 0
    dis_b = 0
    dis_c = 0
    for gg in range(ng):
        g = _U(ng - 1 - gg)
        lo = _U(oa[g])
        hi = _U(oa[g + _U(1)])
        for p in range(lo, hi):  # across buckets: visited (larger-x) images with a smaller y
            i = pa[p]
            e = np.int64(key_b[i])
            f = np.int64(key_c[i])
            run_b = e & low
            run_c = f & low
            vs_b[p] = run_b
            vs_c[p] = run_c
            ps_b[p] = e >> half
            ps_c[p] = f >> half
            w = _U(run_b >> 6)
            dis_b += wp_b[w] + _popcount(bits_b[w] & ((np.int64(1) << (run_b & 63)) - 1))
            w = _U(run_c >> 6)
            dis_c += wp_c[w] + _popcount(bits_c[w] & ((np.int64(1) << (run_c & 63)) - 1))
        if hi - lo <= _U(_CAP):  # inside the bucket: larger x (gt mask) and smaller y (compare)
            for p in range(lo, hi):
                dis_b += _popcount(_mask_lt(vs_b, lo, vs_b[p]) & gta[p])
                dis_c += _popcount(_mask_lt(vs_c, lo, vs_c[p]) & gta[p])
        for p in range(lo, hi):
            pos = _U(ps_b[p])
            bits_b[pos >> _U(6)] |= np.int64(1) << np.int64(pos & _U(63))
            pos = _U(ps_c[p])
            bits_c[pos >> _U(6)] |= np.int64(1) << np.int64(pos & _U(63))
        acc_b = 0
        acc_c = 0
        for w in range(nwords):
            wp_b[w] = acc_b
            wp_c[w] = acc_c
            acc_b += _popcount(bits_b[w])
            acc_c += _popcount(bits_c[w])
    return dis_b, dis_c


@njit(cache=True)
def _joint_ties(oa, ng, leada, vs, seen):
    """Pairs tied in both x and y, from the y tie-run starts ``vs`` by x-sorted position.

    ``seen`` tallies equal values inside an oversized x tie run (all zero on entry and exit).
    """
    joint = 0
    for g in range(ng):
        lo = _U(oa[g])
        hi = _U(oa[g + 1])
        if hi - lo <= _U(_CAP):
            for p in range(lo, hi):
                before = (np.int64(1) << np.int64(p - lo)) - 1
                same_x_before = before & ~((np.int64(1) << np.int64(leada[p] - lo)) - 1)
                joint += _popcount(_mask_eq(vs, lo, vs[p]) & same_x_before)
        else:
            for p in range(lo, hi):
                v = _U(vs[p])
                joint += seen[v]
                seen[v] += 1
            for p in range(lo, hi):
                seen[_U(vs[p])] = 0
    return joint


@njit(cache=True, inline="always")
def _tau(n: int, dis: int, xtie: int, ytie: int, joint: int) -> float:
    """scipy's formula, in scipy's order of float operations."""
    tot = n * (n - 1) // 2
    if n < 2 or xtie == tot or ytie == tot:
        return np.nan
    con_minus_dis = tot - xtie - ytie + joint - 2 * dis
    tau = con_minus_dis / np.sqrt(tot - xtie) / np.sqrt(tot - ytie)
    return min(1.0, max(-1.0, tau))


@njit(cache=True)
def _scratch(n: int, kinds):
    return (
        np.zeros(n + _CAP, kinds[0].dtype),  # + _CAP: the 64-lane loads may run past the end
        np.zeros(n, kinds[2].dtype),
        np.zeros((n + 63) // 64, np.int64),
        np.zeros((n + 63) // 64, np.int32),
    )


@njit(cache=True)
def _row(a, b_from, b_to, prep_a, prep_b, out, shift, kinds) -> None:
    """τ_b of column a of A against columns b_from..b_to-1 of B, into out[a, b - shift]."""
    perm_a, _, gt_a, lead_a, off_a, nb_a, ties_a = prep_a
    key, ties_b = prep_b[1], prep_b[6]
    n = perm_a.shape[1]
    sb = _scratch(n, kinds)
    sc = _scratch(n, kinds)
    seen = np.zeros(n, np.int64)
    for b in range(b_from, b_to, 2):
        c = min(b + 1, b_to - 1)  # an odd tail repeats the last column
        dis_b, dis_c = _discordant2(perm_a[a], gt_a[a], off_a[a], nb_a[a], key[b], key[c], sb, sc)
        for y, dis, vs in ((b, dis_b, sb[0]), (c, dis_c, sc[0])):
            joint = 0
            if ties_a[a] > 0 and ties_b[y] > 0:
                joint = _joint_ties(off_a[a], nb_a[a], lead_a[a], vs, seen)
            out[a, y - shift] = _tau(n, dis, ties_a[a], ties_b[y], joint)


@njit(parallel=True, cache=True)
def _all_pairs(prep_a, prep_b, rows: np.ndarray, sym: bool, kinds) -> np.ndarray:
    """τ_b for each A column in `rows` against all B columns (with `sym`: only b >= a)."""
    nb = prep_b[6].shape[0]
    out = np.full((prep_a[6].shape[0], nb), np.nan)
    for t in prange(rows.shape[0]):
        a = rows[t]
        _row(a, a if sym else 0, nb, prep_a, prep_b, out, 0, kinds)
    return out


@njit(parallel=True, cache=True)
def _diag(prep_a, prep_b, kinds) -> np.ndarray:
    out = np.empty((prep_a[6].shape[0], 1))
    for j in prange(prep_a[6].shape[0]):
        _row(j, j, j + 1, prep_a, prep_b, out, j, kinds)
    return out[:, 0]


_SIGN = {
    np.dtype(np.float32): np.array([1 << 31], np.uint32),
    np.dtype(np.float64): np.array([1 << 63], np.uint64),
}


def _columns(x: np.ndarray, name: str) -> np.ndarray:
    """[n, J] scores -> contiguous [J, n] float32/float64 (exact: only the order matters)."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [n_images, n_units], got shape {x.shape}")
    if x.dtype not in _SIGN:
        x = x.astype(np.float64)
    if np.isnan(x).any():
        raise ValueError(f"{name} contains NaN; Kendall τ_b is computed for NaN-free scores only")
    if x.shape[0] >= 1 << 31:
        raise ValueError(f"{name} has {x.shape[0]} rows; at most 2**31 - 1 images are supported")
    return np.ascontiguousarray(x.T)


def _kinds(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer types (as 1-element arrays) for (compare lanes, keys, positions) at n images.

    Below 2**15 images, int16 lanes halve the compare work and 32-bit keys and 16-bit
    positions halve the memory the gathers touch.
    """
    if n <= np.iinfo(np.int16).max:
        return np.zeros(1, np.int16), np.zeros(1, np.uint32), np.zeros(1, np.uint16)
    return np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, np.uint32)


def _prep(xt: np.ndarray):
    return _prepare(xt, _SIGN[xt.dtype], _kinds(xt.shape[1])[1])


def _same_rows(at: np.ndarray, bt: np.ndarray) -> None:
    if at.shape[1] != bt.shape[1]:
        raise ValueError(f"A and B must score the same images: {at.shape[1]} rows vs {bt.shape[1]} rows")


def kendall_tau_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """τ_b between every column of `a` [n, J_A] and every column of `b` [n, J_B] -> [J_A, J_B].

    Entry [i, j] is ``kendalltau(a[:, i], b[:, j]).statistic``. With ``b`` None or ``b is a``
    only the upper triangle is computed and mirrored. A constant column gives NaN, as in scipy.
    """
    at = _columns(a, "A")
    prep_a = _prep(at)
    if b is None or b is a:
        j = at.shape[0]
        # rows 0, J-1, 1, J-2, ...: each thread's contiguous half of this list gets half the triangle
        rows = np.empty(j, np.int64)
        rows[0::2] = np.arange((j + 1) // 2)
        rows[1::2] = np.arange(j - 1, (j + 1) // 2 - 1, -1)
        out = _all_pairs(prep_a, prep_a, rows, True, _kinds(at.shape[1]))
        lower = np.tril_indices(j, -1)
        out[lower] = out.T[lower]
        return out
    bt = _columns(b, "B")
    _same_rows(at, bt)
    rows = np.arange(at.shape[0], dtype=np.int64)
    return _all_pairs(prep_a, _prep(bt), rows, False, _kinds(at.shape[1]))


def kendall_tau_diag(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """τ_b between column j of `a` and column j of `b` for every j -> [J] (Kendall-τ_j)."""
    at = _columns(a, "A")
    bt = _columns(b, "B")
    _same_rows(at, bt)
    if at.shape[0] != bt.shape[0]:
        raise ValueError(f"A and B must have the same units: {at.shape[0]} vs {bt.shape[0]} columns")
    return _diag(_prep(at), _prep(bt), _kinds(at.shape[1]))


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """τ_b of two vectors, equal to ``scipy.stats.kendalltau(x, y).statistic``."""
    x = np.asarray(x).ravel()
    y = np.asarray(y).ravel()
    if x.size != y.size:
        raise ValueError(f"x and y must have the same length: {x.size} vs {y.size}")
    if x.size == 0:
        return float("nan")
    return float(kendall_tau_diag(x, y)[0])


def warm_jit() -> None:
    """Compile the kernels for the inputs a sweep gives them (float32 scores, shared.hooks, of fewer
    than 2**15 images) into numba's on-disk cache (``cache=True``: ``__pycache__`` beside this file).

    ``make install`` runs this once (~20 s). Without it, the first trials of a fresh install each
    compile them at once: 25 s of a 54 s trial in the quickstart's first two trials on 2 cores.
    """
    a, b = (np.random.default_rng(s).standard_normal((16, 3)).astype(np.float32) for s in (0, 1))
    kendall_tau_matrix(a)
    kendall_tau_matrix(a, b)
    kendall_tau_diag(a, b)
