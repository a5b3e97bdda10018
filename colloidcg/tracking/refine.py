"""Overlap-aware sub-pixel refinement: every spot fitted jointly with its neighbours.

In a dense monolayer the tails of neighbouring spots overlap, and a centroid (trackpy's
refinement) is pulled towards the neighbours: at area fraction 0.8 this costs about 0.3
px. Here each spot is modelled as a pixel-integrated Gaussian (a camera pixel collects
the light that falls on its whole area) on a local background,

    I(u, v) = b(u, v) + A gx(u) gy(v),
    gx(u) = [erf((u + 1/2 - x) / (sqrt(2) s)) - erf((u - 1/2 - x) / (sqrt(2) s))] / 2,

(the standard model of single-particle localisation, e.g. Smith et al., Nat. Methods 7,
373 (2010)) and fitted by least squares to the image *minus the current model of all
other spots*. Visiting the spots one after another and updating the model image after
each (nonlinear Gauss-Seidel) converges in a few sweeps to the joint least-squares fit
of all spots, which has no overlap bias. Spots centred just outside the frame are
fitted too (their visible part), so that their light does not bias their neighbours.

Two stages: first every spot has its own background offset b0 above it, and the
background map of the frame is estimated from what the spots leave (block medians);
then x, y, A and s of every spot are refitted on that single smooth background, which
removes a nuisance parameter per spot and brings the error close to the noise limit.

Speed: the model of one spot is separable, A gx(u) gy(v), and so is every column of its
Jacobian (d/dx = A gx' gy, d/dA = gx gy, ...). Every entry of the normal matrix J^T J is
therefore a product of two 1D dot products, and J^T (data) needs only the window times a
few 1D profiles: a Gauss-Newton step costs about 4 m^2 multiply-adds for an m x m
window. Spots whose neighbourhood stopped changing are skipped in later sweeps.

Why hand-written: trackpy, scikit-image and OpenCV offer single-spot centroid or
Gaussian refinement only; none fits neighbouring spots jointly. The per-spot work is a
small Gauss-Newton step, compiled with numba (already a trackpy dependency).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_SQRTPI = math.sqrt(math.pi)

#: Half-width, in spot sigmas, of the window each spot is fitted in.
FIT_HALF_WIDTH = 2.5
#: The same in the first stage, whose fit only has to be good enough for the background.
STAGE1_FIT_HALF_WIDTH = 2.5
#: Half-width, in spot sigmas, to which spots are rendered into the model image: wider
#: than the fit window, since a neighbour's tail cut at 2.5 sigma still holds 4 % of its
#: peak; at 3.5 sigma it holds 0.2 %.
RENDER_HALF_WIDTH = 3.5
#: Largest window half-width (px); wider spots are fitted in this window.
MAX_HALF_WIDTH = 48
#: Free parameters (x, y, A, s, b0, bu, bv) of the two stages: b0 is a background
#: offset under the spot, (bu, bv) a background slope (available, not used by default).
STAGE1_FREE = (1, 1, 1, 1, 1, 0, 0)
STAGE2_FREE = (1, 1, 1, 1, 0, 0, 0)
#: A residual peak above this fraction of the median spot peak is taken for a missed spot.
MISSED_THRESHOLD = 0.35
#: A spot's centre may lie at most this many of its sigmas outside the frame.
OUTSIDE_LIMIT = 2.5
#: Floating-point freedoms for compiled hot loops (uncertainty, weighted_fit): reassociate
#: sums (vectorised) and multiply by reciprocals, but keep NaN and infinity semantics
#: (spots and failed steps are screened by them).
SAFE_FASTMATH = {"reassoc", "contract", "arcp"}

# Parameters: x, y, A, s, b0, bu, bv. Each Jacobian column (and the model) is a sum of
# separable terms coef * X[p](u) * Y[q](v), with the 1D vectors
#   X[0] = gx, X[1] = dgx/dx, X[2] = dgx/ds, X[3] = window mask, X[4] = (u - cu) * mask
# and likewise Y for v. Column k has _COL_N[k] terms (X[_COL_P[k, t]], Y[_COL_Q[k, t]]),
# with coefficient A where _COL_A[k, t] is 1, else 1.
_COL_N = np.array([1, 1, 1, 2, 1, 1, 1])
_COL_P = np.array([[1, 0], [0, 0], [0, 0], [2, 0], [3, 0], [4, 0], [3, 0]])
_COL_Q = np.array([[0, 0], [1, 0], [0, 0], [0, 2], [3, 0], [3, 0], [4, 0]])
_COL_A = np.array([[1, 0], [1, 0], [0, 0], [1, 1], [0, 0], [0, 0], [0, 0]])
# The model's terms: A X0 Y0 + b0 X3 Y3 + bu X4 Y3 + bv X3 Y4.
_MOD_P = np.array([0, 3, 4, 3])
_MOD_Q = np.array([0, 3, 3, 4])


# ------------------------------------------------------------------ 1D profiles
@njit(cache=True)
def _profile(c, w, x, s, n, g, dg, sg, msk, off):
    """Pixel-integrated 1D Gaussian on pixels c-w..c+w (zero outside 0..n-1).

    Fills g, dg/dx, dg/ds, the in-frame mask and the offset (u - c) * mask. With
    a = (t - x) / (sqrt2 s) and E(a) = exp(-a^2) at the pixel edges t = u -+ 1/2,
    dg/dx = -(E(a+) - E(a-)) / (sqrt(2 pi) s) and dg/ds = -(a+ E(a+) - a- E(a-)) / (sqrt(pi) s)
    exactly, and g = [erf(a+) - erf(a-)] / 2 by Simpson's rule over the pixel (relative
    error < 1e-5 for s >= 1.5 px; for narrower spots erf is called). E on the
    half-pixel grid comes from the recurrence E(a + h) = E(a) R, R <- R exp(-2 h^2),
    which needs no exp per pixel.
    """
    k2 = 1.0 / (_SQRT2 * s)
    cdx = 1.0 / (_SQRT2PI * s)
    cds = 1.0 / (_SQRTPI * s)
    a0 = (c - w - 0.5 - x) * k2
    e0 = math.exp(-a0 * a0)
    simpson = s >= 1.5
    h = 0.5 * k2
    r = math.exp(-2.0 * a0 * h - h * h)
    q = math.exp(-2.0 * h * h)
    cg = h / (3.0 * _SQRTPI)
    f0 = 0.0 if simpson else math.erf(a0)
    for k in range(2 * w + 1):
        u = c - w + k
        em = e0 * r
        r *= q
        e1 = em * r
        r *= q
        a1 = a0 + k2
        if simpson:
            gk = cg * (e0 + 4.0 * em + e1)
        else:
            f1 = math.erf(a1)
            gk = 0.5 * (f1 - f0)
            f0 = f1
        if 0 <= u < n:
            g[k] = gk
            dg[k] = -(e1 - e0) * cdx
            sg[k] = -(a1 * e1 - a0 * e0) * cds
            msk[k] = 1.0
            off[k] = u - c
        else:
            g[k] = 0.0
            dg[k] = 0.0
            sg[k] = 0.0
            msk[k] = 0.0
            off[k] = 0.0
        a0 = a1
        e0 = e1


@njit(cache=True)
def _gauss1d(c, w, x, s, n, g):
    """Pixel-integrated 1D Gaussian only (for rendering); as :func:`_profile`."""
    k2 = 1.0 / (_SQRT2 * s)
    a0 = (c - w - 0.5 - x) * k2
    if s < 1.5:
        f0 = math.erf(a0)
        for k in range(2 * w + 1):
            u = c - w + k
            f1 = math.erf(a0 + (k + 1) * k2)
            g[k] = 0.5 * (f1 - f0) if 0 <= u < n else 0.0
            f0 = f1
        return
    e0 = math.exp(-a0 * a0)
    h = 0.5 * k2
    r = math.exp(-2.0 * a0 * h - h * h)
    q = math.exp(-2.0 * h * h)
    cg = h / (3.0 * _SQRTPI)
    for k in range(2 * w + 1):
        u = c - w + k
        em = e0 * r
        r *= q
        e1 = em * r
        r *= q
        g[k] = cg * (e0 + 4.0 * em + e1) if 0 <= u < n else 0.0
        e0 = e1


@njit(cache=True)
def _half_width(s, factor):
    return min(MAX_HALF_WIDTH, max(1, int(math.ceil(factor * s))))


# ------------------------------------------------------------------ the model image
@njit(cache=True)
def _add_outer(canvas, cu, cv, w, a, gx, gy, b, hx, hy):
    """canvas[window] += a gx (x) gy + b hx (x) hy over the (2w+1)^2 window at (cu, cv).

    With b = 0 the second term is not evaluated at all: callers then pass profiles (hx,
    hy) that may be filled for a narrower window only, and 0 x an unfilled entry (NaN or
    inf left in scratch memory) would be NaN. That put NaN into the model image now and
    then, depending on what earlier frames had left in memory: a frame's result changed
    between runs (tests/test_tracking.py::test_locating_is_repeatable)."""
    ny, nx = canvas.shape
    k0 = max(0, w - cu)
    k1 = min(2 * w + 1, nx - cu + w)
    if k1 <= k0:
        return
    ox = gx[k0:k1]
    px = hx[k0:k1]
    for kv in range(2 * w + 1):
        v = cv - w + kv
        if v < 0 or v >= ny:
            continue
        ao = a * gy[kv]
        row = canvas[v, cu - w + k0:cu - w + k1]   # unit-stride slices: vectorised
        if b == 0.0:
            for k in range(k1 - k0):
                row[k] += ao * ox[k]
        else:
            bn = b * hy[kv]
            for k in range(k1 - k0):
                row[k] += ao * ox[k] + bn * px[k]


@njit(cache=True)
def _render_all(canvas, params, render_k, cache_x, cache_y, cache_w):
    """Add every spot to canvas; keep its 1D profiles and window (cu, cv, w) in the caches."""
    ny, nx = canvas.shape
    for i in range(params.shape[0]):
        p = params[i]
        w = _half_width(p[3], render_k)
        cu = int(np.rint(p[0]))
        cv = int(np.rint(p[1]))
        _gauss1d(cu, w, p[0], p[3], nx, cache_x[i])
        _gauss1d(cv, w, p[1], p[3], ny, cache_y[i])
        cache_w[i, 0] = cu
        cache_w[i, 1] = cv
        cache_w[i, 2] = w
        _add_outer(canvas, cu, cv, w, p[2], cache_x[i], cache_y[i], 0.0, cache_x[i], cache_y[i])


class _Model:
    """The spots' parameters (N, 7), the image of all spots, and each spot's rendering."""

    def __init__(self, shape, params):
        m = 2 * MAX_HALF_WIDTH + 1
        self.params = np.ascontiguousarray(params, dtype=np.float64)
        n = len(self.params)
        self.canvas = np.zeros(shape)
        self.cache_x = np.zeros((n, m))
        self.cache_y = np.zeros((n, m))
        self.cache_w = np.zeros((n, 3), np.int64)
        _render_all(self.canvas, self.params, RENDER_HALF_WIDTH, self.cache_x, self.cache_y,
                    self.cache_w)

    def add(self, params):
        """Append spots (rows of x, y, A, s, ...) to the model."""
        params = np.ascontiguousarray(params, dtype=np.float64)
        n, m = len(params), self.cache_x.shape[1]
        cx, cy, cw = np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, 3), np.int64)
        _render_all(self.canvas, params, RENDER_HALF_WIDTH, cx, cy, cw)
        self.params = np.vstack([self.params, params])
        self.cache_x = np.vstack([self.cache_x, cx])
        self.cache_y = np.vstack([self.cache_y, cy])
        self.cache_w = np.vstack([self.cache_w, cw])


def render_spots(shape, params) -> np.ndarray:
    """Sum of spots (no background), ndarray (Y, X), from rows x, y, A, s (px, counts)."""
    return _Model(shape, params).canvas


# ------------------------------------------------------------------ the fit
@njit(cache=True)
def _solve_free(jtj, jtr, free, step, work, idx):
    """Solve jtj[free, free] step[free] = jtr[free] by Cholesky (upper triangle of jtj);
    the other entries of ``step`` are 0. Returns False if the matrix is not positive
    definite. ``work`` (2, 8, 8) and ``idx`` (7,) are scratch space."""
    n = 0
    for k in range(7):
        step[k] = 0.0
        if free[k]:
            idx[n] = k
            n += 1
    L = work[0]
    z = work[1, 0]
    r = work[1, 1]      # 1 / L[i, i]: one division per pivot, products elsewhere
    for i in range(n):
        for j in range(i + 1):
            acc = jtj[idx[j], idx[i]]
            for k in range(j):
                acc -= L[i, k] * L[j, k]
            if i == j:
                if acc <= 0.0:
                    return False
                d = math.sqrt(acc)
                L[i, i] = d
                r[i] = 1.0 / d
            else:
                L[i, j] = acc * r[j]
    for i in range(n):
        acc = jtr[idx[i]]
        for k in range(i):
            acc -= L[i, k] * z[k]
        z[i] = acc * r[i]
    for i in range(n - 1, -1, -1):
        acc = z[i]
        for k in range(i + 1, n):
            acc -= L[k, i] * step[idx[k]]
        step[idx[i]] = acc * r[i]
    return True


@njit(cache=True)
def _normal_equations(a, mod_c, free, n_mod, TT, Gx, Gy, jtj, jtr):
    """J^T J and J^T (T - model) of the free parameters from the 1D projections, for any
    free set (the table-driven general case; :func:`_normal_equations_offset` writes out
    the default one)."""
    for k in range(7):
        if not free[k]:
            continue
        acc_t = 0.0
        acc_m = 0.0
        for l in range(k, 7):
            jtj[k, l] = 0.0
        for t1 in range(_COL_N[k]):
            c1 = a if _COL_A[k, t1] else 1.0
            p1 = _COL_P[k, t1]
            q1 = _COL_Q[k, t1]
            acc_t += c1 * TT[p1, q1]
            for mt in range(n_mod):
                acc_m += c1 * mod_c[mt] * Gx[p1, _MOD_P[mt]] * Gy[q1, _MOD_Q[mt]]
            for l in range(k, 7):
                if not free[l]:
                    continue
                for t2 in range(_COL_N[l]):
                    c2 = a if _COL_A[l, t2] else 1.0
                    jtj[k, l] += c1 * c2 * Gx[p1, _COL_P[l, t2]] * Gy[q1, _COL_Q[l, t2]]
        jtr[k] = acc_t - acc_m


@njit(cache=True)
def _normal_equations_offset(a, b0, TT, Gx, Gy, jtj, jtr):
    """J^T J and J^T (T - model) for x, y, A, s and the offset b0 (the columns
    a X1 Y0, a X0 Y1, X0 Y0, a (X2 Y0 + X0 Y2), X3 Y3; the model a X0 Y0 + b0 X3 Y3),
    written out: what the table-driven :func:`_normal_equations` sums term by term."""
    g00, g01, g02, g03 = Gx[0, 0], Gx[0, 1], Gx[0, 2], Gx[0, 3]
    g11, g12, g13, g22, g23, g33 = Gx[1, 1], Gx[1, 2], Gx[1, 3], Gx[2, 2], Gx[2, 3], Gx[3, 3]
    h00, h01, h02, h03 = Gy[0, 0], Gy[0, 1], Gy[0, 2], Gy[0, 3]
    h11, h12, h13, h22, h23, h33 = Gy[1, 1], Gy[1, 2], Gy[1, 3], Gy[2, 2], Gy[2, 3], Gy[3, 3]
    a2 = a * a
    jtj[0, 0] = a2 * g11 * h00
    jtj[0, 1] = a2 * g01 * h01
    jtj[0, 2] = a * g01 * h00
    jtj[0, 3] = a2 * (g12 * h00 + g01 * h02)
    jtj[0, 4] = a * g13 * h03
    jtj[1, 1] = a2 * g00 * h11
    jtj[1, 2] = a * g00 * h01
    jtj[1, 3] = a2 * (g02 * h01 + g00 * h12)
    jtj[1, 4] = a * g03 * h13
    jtj[2, 2] = g00 * h00
    jtj[2, 3] = a * (g02 * h00 + g00 * h02)
    jtj[2, 4] = g03 * h03
    jtj[3, 3] = a2 * (g22 * h00 + 2.0 * g02 * h02 + g00 * h22)
    jtj[3, 4] = a * (g23 * h03 + g03 * h23)
    jtj[4, 4] = g33 * h33
    # <column, model> = a <column, X0 Y0> + b0 <column, X3 Y3>: columns 2 and 4
    jtr[0] = a * TT[1, 0] - (a * jtj[0, 2] + b0 * jtj[0, 4])
    jtr[1] = a * TT[0, 1] - (a * jtj[1, 2] + b0 * jtj[1, 4])
    jtr[2] = TT[0, 0] - (a * jtj[2, 2] + b0 * jtj[2, 4])
    jtr[3] = a * (TT[2, 0] + TT[0, 2]) - (a * jtj[2, 3] + b0 * jtj[3, 4])
    jtr[4] = TT[3, 3] - (a * jtj[2, 4] + b0 * jtj[4, 4])


@njit(cache=True)
def _radial(knots, knot_px, r):
    """The piecewise-linear radial profile ``knots`` (values every ``knot_px`` px) at r;
    0 beyond its last knot."""
    rr = r / knot_px
    kk = int(rr)
    if kk >= knots.shape[0] - 1:
        return 0.0
    f = rr - kk
    return knots[kk] * (1.0 - f) + knots[kk + 1] * f


@njit(cache=True, fastmath=SAFE_FASTMATH)
def _gs_sweep(img, canvas, params, cache_x, cache_y, cache_w, order, free, n_newton,
              fit_k, render_k, s_min, s_max, max_shift, tol, stats, active, next_active,
              nbr_ptr, nbr_idx, last, dry, knots, knot_px, pw, ppos):
    """One Gauss-Seidel sweep: refit each active spot in ``order`` against img - (others).

    ``canvas`` holds the model of all spots and is updated after each spot, so the next
    spot sees its neighbours' newest fit (``cache_*`` hold each spot's rendered 1D
    profiles and window, so its old contribution need not be recomputed). A spot whose
    fit changes (position by more than ``tol`` px, amplitude or width by more than
    ``tol`` relative) marks itself and its neighbours (CSR lists ``nbr_ptr``,
    ``nbr_idx``) in ``next_active``; spots whose neighbourhood did not change are
    skipped, so late sweeps cost little. ``stats[i, 0]`` receives the residual variance
    per pixel (``stats[i, 1:3]`` are not written: the positions' errors come from
    :mod:`colloidcg.tracking.uncertainty`). With
    ``last`` the sweep is the final one: ``stats[i, 3]`` receives the eccentricity of the
    spot's own light (Gaussian-weighted second moments of the image minus background and
    other spots, sqrt((Mxx - Myy)^2 + 4 Mxy^2) / (Mxx + Myy), 0 for a round spot, as
    trackpy's). With a non-empty radial profile ``knots`` (values every ``knot_px`` px;
    :mod:`colloidcg.tracking.psf`) ``img`` is the frame less every spot's profile (spot i
    at ``ppos[i, :2]``, stretched by ``ppos[i, 2]``, times ``pw[i]``), and each spot's own profile is added back to its
    target: a spot is fitted against its neighbours' whole light, its own as it is.
    With ``dry`` nothing is updated: each spot is fitted against the model as it stands
    (``params[i]`` may hold trial values; the cache holds what the canvas holds) and
    only ``stats`` is written (``stats[i, 0]``: residual variance per pixel after
    ``n_newton`` steps).
    Returns the number of spots refitted.
    """
    ny, nx = img.shape
    m = 2 * MAX_HALF_WIDTH + 1
    X = np.empty((5, m))
    Y = np.empty((5, m))
    hx = np.empty(m)
    hy = np.empty(m)
    T = np.zeros((m, m))
    T0 = np.zeros((m, m)) if knots.shape[0] else np.zeros((1, 1))
    P = np.empty((5, m))
    TT = np.zeros((5, 5))
    Gx = np.zeros((5, 5))
    Gy = np.zeros((5, 5))
    jtj = np.zeros((7, 7))
    jtr = np.zeros(7)
    step = np.empty(7)
    work = np.empty((2, 8, 8))
    idx = np.empty(7, np.int64)
    old = np.empty(7)
    p = np.empty(7)
    mod_c = np.empty(4)
    plane = free[5] or free[6]
    nv = 5 if plane else 4     # 1D vectors in use (the offset ones only with a slope)
    n_mod = 4 if plane else 2  # model terms in use
    nfree = 0
    for k in range(7):
        nfree += free[k]
    n_knots = knots.shape[0]
    done = 0
    for j in range(order.shape[0]):
        i = order[j]
        if not active[i]:
            continue
        for k in range(7):
            old[k] = params[i, k]
            p[k] = old[k]
        w = _half_width(old[3], fit_k)
        mw = 2 * w + 1
        cu = cache_w[i, 0]
        cv = cache_w[i, 1]
        wr = cache_w[i, 2]
        if wr < w:
            continue
        # target T: image minus every other spot (own old contribution added back, from
        # the cached render profiles, whose window holds the fit window)
        gx = cache_x[i, wr - w:wr + w + 1]
        gy = cache_y[i, wr - w:wr + w + 1]
        sum_t2 = 0.0
        k0 = max(0, w - cu)
        k1 = min(mw, nx - cu + w)
        for kv in range(mw):
            trow = T[kv, :mw]
            trow[:] = 0.0
            v = cv - w + kv
            if v < 0 or v >= ny or k1 <= k0:
                continue
            av = old[2] * gy[kv]
            irow = img[v, cu - w + k0:cu - w + k1]
            crow = canvas[v, cu - w + k0:cu - w + k1]
            tseg = T[kv, k0:k1]
            ox = gx[k0:k1]
            for k in range(k1 - k0):
                t = irow[k] - crow[k] + av * ox[k]
                tseg[k] = t
                sum_t2 += t * t
            if n_knots:   # own profile back (it was subtracted at ppos with the others')
                dv2 = (v - ppos[i, 1]) ** 2
                t0seg = T0[kv, k0:k1]
                for k in range(k1 - k0):
                    t0seg[k] = tseg[k] + pw[i] * _radial(knots, knot_px, math.sqrt(
                        (cu - w + k0 + k - ppos[i, 0]) ** 2 + dv2) / ppos[i, 2])
        ok = True
        for it in range(n_newton):
            a = p[2]
            if n_knots:
                # the target less the own profile where the spot is now: the spot is
                # modelled as Gaussian + profile, moving together (the Jacobian has
                # the Gaussian's part only; the fixed point is the same)
                sum_t2 = 0.0
                for kv in range(mw):
                    v = cv - w + kv
                    if v < 0 or v >= ny or k1 <= k0:
                        continue
                    dv2 = (v - p[1]) ** 2
                    for k in range(k0, k1):
                        t = T0[kv, k] - pw[i] * _radial(knots, knot_px, math.sqrt(
                            (cu - w + k - p[0]) ** 2 + dv2) / ppos[i, 2])
                        T[kv, k] = t
                        sum_t2 += t * t
            _profile(cu, w, p[0], p[3], nx, X[0], X[1], X[2], X[3], X[4])
            _profile(cv, w, p[1], p[3], ny, Y[0], Y[1], Y[2], Y[3], Y[4])
            # P[q, u] = sum_v T[v, u] Y[q, v]
            P0 = P[0, :mw]
            P1 = P[1, :mw]
            P2 = P[2, :mw]
            P3 = P[3, :mw]
            P4 = P[4, :mw]
            P0[:] = 0.0
            P1[:] = 0.0
            P2[:] = 0.0
            P3[:] = 0.0
            P4[:] = 0.0
            for kv in range(mw):
                if Y[3, kv] == 0.0:
                    continue
                y0, y1, y2, y3, y4 = Y[0, kv], Y[1, kv], Y[2, kv], Y[3, kv], Y[4, kv]
                trow = T[kv, :mw]
                if plane:
                    for k in range(mw):
                        t = trow[k]
                        P0[k] += t * y0
                        P1[k] += t * y1
                        P2[k] += t * y2
                        P3[k] += t * y3
                        P4[k] += t * y4
                else:
                    for k in range(mw):
                        t = trow[k]
                        P0[k] += t * y0
                        P1[k] += t * y1
                        P2[k] += t * y2
                        P3[k] += t * y3
            # the data projections <X[p] (x) Y[q], T> that the columns and the model use,
            # and the Gram matrices of the 1D vectors
            for pp in range(nv):
                for q in range(nv):
                    if pp == 0 or q == 0 or (pp >= 3 and q >= 3):
                        acc = 0.0
                        for k in range(mw):
                            acc += X[pp, k] * P[q, k]
                        TT[pp, q] = acc
                for r in range(pp, nv):
                    ax = 0.0
                    ay = 0.0
                    for k in range(mw):
                        ax += X[pp, k] * X[r, k]
                        ay += Y[pp, k] * Y[r, k]
                    Gx[pp, r] = ax
                    Gx[r, pp] = ax
                    Gy[pp, r] = ay
                    Gy[r, pp] = ay
            mod_c[0] = a
            mod_c[1] = p[4]
            mod_c[2] = p[5]
            mod_c[3] = p[6]
            if plane:
                _normal_equations(a, mod_c, free, n_mod, TT, Gx, Gy, jtj, jtr)
            else:
                _normal_equations_offset(a, p[4], TT, Gx, Gy, jtj, jtr)
            for k in range(7):
                jtj[k, k] = jtj[k, k] * (1.0 + 1e-6) + 1e-12
            # residual sum of squares at the current parameters (before the step):
            # sum T^2 - 2 sum T M + sum M^2, all from the projections
            msum = 0.0
            mm = 0.0
            for mt in range(n_mod):
                msum += mod_c[mt] * TT[_MOD_P[mt], _MOD_Q[mt]]
                for mt2 in range(n_mod):
                    mm += (mod_c[mt] * mod_c[mt2] * Gx[_MOD_P[mt], _MOD_P[mt2]]
                           * Gy[_MOD_Q[mt], _MOD_Q[mt2]])
            rss = sum_t2 + mm - 2.0 * msum
            npix = Gx[3, 3] * Gy[3, 3]
            stats[i, 0] = max(rss, 0.0) / max(npix - nfree, 1.0)
            if not _solve_free(jtj, jtr, free, step, work, idx):
                ok = False
                break
            shift = math.sqrt(step[0] ** 2 + step[1] ** 2)
            if shift > 1.0:  # trust region: at most 1 px per Gauss-Newton step
                for k in range(7):
                    step[k] /= shift
            finite = True
            for k in range(7):
                p[k] += step[k]
                finite = finite and math.isfinite(p[k])
            if not (finite and p[2] > 0):
                ok = False
                break
            p[3] = min(max(p[3], s_min), s_max)
            lim = OUTSIDE_LIMIT * p[3]
            p[0] = min(max(p[0], -0.5 - lim), nx - 0.5 + lim)
            p[1] = min(max(p[1], -0.5 - lim), ny - 0.5 + lim)
            if shift < 0.1 * tol:
                break
        if not ok:
            continue
        d2 = (p[0] - old[0]) ** 2 + (p[1] - old[1]) ** 2
        if d2 > max_shift * max_shift:
            continue
        done += 1
        if dry:
            continue
        if last:
            # eccentricity from the target's moments, weighted by the fitted profile
            _profile(cu, w, p[0], p[3], nx, X[0], X[1], X[2], X[3], X[4])
            _profile(cv, w, p[1], p[3], ny, Y[0], Y[1], Y[2], Y[3], Y[4])
            mxx = 0.0
            myy = 0.0
            mxy = 0.0
            for kv in range(mw):
                gv = Y[0, kv]
                if gv == 0.0:
                    continue
                dv = cv - w + kv - p[1]
                trow = T[kv, :mw]
                ax = 0.0
                axx = 0.0
                axy = 0.0
                for k in range(mw):
                    t = (trow[k] - p[4]) * X[0, k]
                    du = cu - w + k - p[0]
                    ax += t
                    axx += t * du * du
                    axy += t * du
                mxx += gv * axx
                myy += gv * dv * dv * ax
                mxy += gv * dv * axy
            tot = mxx + myy
            stats[i, 3] = math.sqrt((mxx - myy) ** 2 + 4 * mxy * mxy) / tot if tot > 0 else np.nan
        if (d2 > tol * tol or abs(p[2] - old[2]) > tol * old[2]
                or abs(p[3] - old[3]) > tol * old[3]):
            next_active[i] = 1
            for k in range(nbr_ptr[i], nbr_ptr[i + 1]):
                next_active[nbr_idx[k]] = 1
        # canvas += new spot - old spot; the cache takes the new profiles
        wn = _half_width(p[3], render_k)
        nu = int(np.rint(p[0]))
        nw = int(np.rint(p[1]))
        _gauss1d(nu, wn, p[0], p[3], nx, hx)
        _gauss1d(nw, wn, p[1], p[3], ny, hy)
        if nu == cu and nw == cv and wn == wr:
            _add_outer(canvas, cu, cv, wr, -old[2], cache_x[i], cache_y[i], p[2], hx, hy)
        else:
            _add_outer(canvas, cu, cv, wr, -old[2], cache_x[i], cache_y[i], 0.0, hx, hy)
            _add_outer(canvas, nu, nw, wn, p[2], hx, hy, 0.0, hx, hy)
        for k in range(2 * wn + 1):   # (a loop: a slice copy compiles numba's shape-error text)
            cache_x[i, k] = hx[k]
            cache_y[i, k] = hy[k]
        cache_w[i, 0] = nu
        cache_w[i, 1] = nw
        cache_w[i, 2] = wn
        for k in range(7):
            params[i, k] = p[k]
    return done


def _neighbours(params, reach):
    """CSR lists of the spots within ``reach`` px of each spot."""
    from ..neighbours import pairs as close_pairs

    return pairs_csr(close_pairs(params[:, :2], reach), len(params))


def pairs_csr(pairs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR neighbour lists (``ptr`` (n + 1,), ``nbr``; int64) of n points from their
    unordered pairs (P, 2): each pair listed under both of its points."""
    src = np.r_[pairs[:, 0], pairs[:, 1]]
    dst = np.r_[pairs[:, 1], pairs[:, 0]]
    o = np.argsort(src, kind="stable")
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=ptr[1:])
    return ptr, dst[o].astype(np.int64)


_NO_PROFILE = (np.zeros(0), 1.0, np.zeros(0), np.zeros((0, 3)))


def _sweeps(img, model, free, n_sweeps, n_newton, sigma, tol, stats, fit_k=None, final=False,
            profile=_NO_PROFILE):
    """Gauss-Seidel sweeps until no spot changes by more than ``tol`` or n_sweeps done.

    The first sweep visits every spot with ``n_newton`` Gauss-Newton steps; later ones
    (one step each) only the spots whose neighbourhood changed. With ``final`` the last
    sweep visits every spot and also gives the eccentricities (``stats[:, 3]``).
    Returns the number of sweeps run.
    """
    free = np.asarray(free, dtype=np.int64)
    fit_k = FIT_HALF_WIDTH if fit_k is None else fit_k
    params = model.params
    n = len(params)
    if n == 0 or n_sweeps < 1:
        return 0
    s_max = 2.5 * sigma
    order = np.arange(n)
    active = np.ones(n, np.uint8)
    ptr = idx = np.zeros(n + 1, np.int64)
    if n_sweeps > 2:   # with two sweeps nearly every spot is active in the second anyway
        reach = (fit_k + RENDER_HALF_WIDTH) * min(s_max, float(params[:, 3].max())) + 2
        ptr, idx = _neighbours(params, reach)
    done = 0
    for k in range(n_sweeps - 1 if final else n_sweeps):
        nxt = np.zeros(n, np.uint8)
        _gs_sweep(img, model.canvas, params, model.cache_x, model.cache_y, model.cache_w,
                  order, free, n_newton if k == 0 else 1, fit_k, RENDER_HALF_WIDTH,
                  0.4 * sigma, s_max, float(sigma), tol, stats, active, nxt, ptr, idx, 0, 0,
                  *profile)
        done += 1
        order = order[::-1].copy()   # symmetric Gauss-Seidel: alternate direction
        if n_sweeps > 2:
            active = nxt
        if not nxt.any():
            break
    if final:
        _gs_sweep(img, model.canvas, params, model.cache_x, model.cache_y, model.cache_w,
                  order, free, n_newton if done == 0 else 1, fit_k, RENDER_HALF_WIDTH,
                  0.4 * sigma, s_max, float(sigma), tol, stats, np.ones(n, np.uint8),
                  np.zeros(n, np.uint8), ptr, idx, 1, 0, *profile)
        done += 1
    return done


# ------------------------------------------------------------------ shared widths
#: Most particle populations (distinct spot widths) one frame is split into.
MAX_POPULATIONS = 3
#: Two groups of fitted widths are separate populations when their medians differ by more
#: than this many robust standard deviations of log width within the groups ...
POPULATION_SEPARATION = 4.0
#: ... and by more than this fraction (widths within 8 % are one population).
POPULATION_MIN_RATIO = 1.08
#: ... and the smaller group holds at least this share of the spots.
POPULATION_MIN_SHARE = 0.05
#: Half-width, in the widest population's sigmas, of the window in which the widths are
#: compared spot by spot (the same window for every candidate width).
CHOICE_HALF_WIDTH = 2.0


def width_populations(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group fitted spot widths into populations (particle sizes).

    Widths (N,) px are split on log scale by k-means for k = 1 .. MAX_POPULATIONS; the
    largest k is kept whose neighbouring groups all differ by more than
    POPULATION_SEPARATION robust standard deviations (1.4826 x the median absolute
    deviation of log width within the groups) and by POPULATION_MIN_RATIO, each group
    holding at least POPULATION_MIN_SHARE of the spots. Returns the populations' widths
    (K,) px (each group's median, ascending) and every spot's population (N,) int.
    """
    s = np.asarray(sigma, dtype=np.float64)
    good = np.isfinite(s) & (s > 0)
    if good.sum() < 10:
        w = float(np.median(s[good])) if good.any() else 1.0
        return np.array([w]), np.zeros(len(s), np.int64)
    ls = np.log(s[good])
    best = (np.array([np.median(ls)]), np.zeros(len(ls), np.int64))
    for k in range(2, MAX_POPULATIONS + 1):
        centres = _lloyd_medians(ls, np.quantile(ls, (np.arange(k) + 0.5) / k), 50)
        lab = np.argmin(np.abs(ls[:, None] - centres[None, :]), axis=1)
        share = np.bincount(lab, minlength=k) / len(ls)
        if share.min() < POPULATION_MIN_SHARE:
            break
        spread = 1.4826 * np.median(np.abs(ls - centres[lab]))
        gaps = np.diff(np.sort(centres))
        if spread <= 0 or gaps.min() < max(POPULATION_SEPARATION * spread,
                                           np.log(POPULATION_MIN_RATIO)):
            break
        best = (centres, lab)
    centres, lab = best
    order = np.argsort(centres)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    labels = np.zeros(len(s), np.int64)
    labels[good] = rank[lab]
    # a spot without a usable width joins the most common population
    labels[~good] = np.bincount(rank[lab]).argmax()
    widths = np.exp(np.sort(centres))
    return widths, labels


@njit(cache=True)
def _lloyd_medians(ls, centres, iterations):
    """Lloyd's iterations in 1D with medians: each value joins its nearest centre (the
    first of equally near ones), each centre moves to its group's median (an empty
    group's stays), until no centre moves by more than 1e-8 + 1e-5 |centre| (numpy's
    allclose) or after ``iterations``. ``ls`` (N,), ``centres`` (K,); returns the centres.
    (Compiled: as numpy calls, 0.45 ms an iteration, 8 ms a frame.)"""
    n, k = len(ls), len(centres)
    centres = centres.copy()
    new = np.empty(k)
    lab = np.empty(n, np.int64)
    buf = np.empty(n)
    for _ in range(iterations):
        for i in range(n):
            best, q_best = abs(ls[i] - centres[0]), 0
            for q in range(1, k):
                d = abs(ls[i] - centres[q])
                if d < best:
                    best, q_best = d, q
            lab[i] = q_best
        for q in range(k):
            m = 0
            for i in range(n):
                if lab[i] == q:
                    buf[m] = ls[i]
                    m += 1
            new[q] = _median_inplace(buf, m) if m else centres[q]
        settled = True
        for q in range(k):
            if abs(new[q] - centres[q]) > 1e-8 + 1e-5 * abs(centres[q]):
                settled = False
        if settled:
            break
        for q in range(k):
            centres[q] = new[q]
    return centres


def _choose_widths(img, model, widths, labels, sigma):
    """Each spot's population by the residual of its own fit with each width.

    Every spot is fitted (x, y, amplitude; 3 Gauss-Newton steps) against the model of
    all other spots, once with each population's width, in the same window of
    CHOICE_HALF_WIDTH widest sigmas; it takes the width with the least residual. Spots
    whose fit cannot be made (rendered window too small) keep ``labels``.
    """
    n, k = len(model.params), len(widths)
    rss = np.full((n, k), np.inf)
    half = math.ceil(CHOICE_HALF_WIDTH * float(widths.max()))
    free = np.array([1, 1, 1, 0, 0, 0, 0], np.int64)
    dummy = np.zeros(n + 1, np.int64)
    for q, wq in enumerate(widths):
        trial = model.params.copy()
        trial[:, 3] = wq
        stats = np.full((n, 4), np.nan)
        _gs_sweep(img, model.canvas, trial, model.cache_x, model.cache_y, model.cache_w,
                  np.arange(n), free, 3, (half - 0.5) / wq, RENDER_HALF_WIDTH, 0.4 * sigma,
                  2.5 * sigma, float(sigma), 1e-4, stats, np.ones(n, np.uint8),
                  np.zeros(n, np.uint8), dummy, dummy, 0, 1, *_NO_PROFILE)
        rss[:, q] = np.where(np.isfinite(stats[:, 0]), stats[:, 0], np.inf)
    out = np.argmin(rss, axis=1)
    keep = ~np.isfinite(rss).all(axis=1)
    out[keep] = labels[keep]
    return out


# ------------------------------------------------------------------ background
@njit(cache=True)
def _block_median(img, block):
    """Median of each ``block`` x ``block`` square of img (edge blocks: what exists)."""
    ny, nx = img.shape
    by = -(-ny // block)
    bx = -(-nx // block)
    out = np.empty((by, bx))
    buf = np.empty(block * block)
    for i in range(by):
        for j in range(bx):
            n = 0
            for v in range(i * block, min(ny, (i + 1) * block)):
                for u in range(j * block, min(nx, (j + 1) * block)):
                    buf[n] = img[v, u]
                    n += 1
            out[i, j] = _median_inplace(buf, n)
    return out


# The tracking kernels take medians and sorts of a few to a few hundred values with these
# rather than numba's np.median / np.sort: the results are the same, but numba's generic
# versions (and its slice-copy shape checks, whose error text builds strings) took about
# a quarter of the kernels' first-run compilation, which every fresh install pays.
@njit(cache=True)
def _median_inplace(buf, n):
    """Median of ``buf[:n]`` (n >= 1) as numpy gives it (the mean of the two middle values
    for even n); reorders ``buf[:n]``. Quickselect (Hoare, C. A. R., Comm. ACM 4, 321 (1961))."""
    k = n // 2
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    upper = buf[k]
    if n % 2:
        return upper
    lower = buf[0]
    for t in range(1, k):   # the largest of the lower part
        if buf[t] > lower:
            lower = buf[t]
    return (lower + upper) / 2


@njit(cache=True)
def _sort_small(a, n):
    """Sort ``a[:n]`` in place (insertion sort: for a dozen values)."""
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


def _cells(img: np.ndarray, cell: int) -> np.ndarray:
    """Means over ``cell`` x ``cell`` px squares (edge cells: what exists)."""
    import cv2

    ny, nx = img.shape
    return cv2.resize(img, (-(-nx // cell), -(-ny // cell)), interpolation=cv2.INTER_AREA)


def _upsample(med: np.ndarray, size: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear map of block values (block centres at (k + 1/2) size - 1/2) to ``shape``."""
    import cv2

    by, bx = med.shape
    full = cv2.resize(med, (bx * size, by * size), interpolation=cv2.INTER_LINEAR)
    return full[:shape[0], :shape[1]]


def smooth_background(residual: np.ndarray, block: int) -> np.ndarray:
    """A smooth background map from a residual image, robust to unmodelled spots.

    The image is averaged over 4 x 4 px cells; the median of the cells in each square of
    about ``block`` px (robust to the few cells that a missed or poorly fitted spot
    leaves) is interpolated bilinearly back to full size.
    """
    cell = 4 if block >= 12 else 1
    nb = max(1, int(round(block / cell)))
    img = np.asarray(residual, dtype=np.float64)
    med = _block_median(_cells(img, cell) if cell > 1 else img, nb)
    return _upsample(med, cell * nb, img.shape)


def background_floor(img: np.ndarray, width: int, block: int) -> np.ndarray:
    """A smooth map at or below the background between spots: a minimum filter of
    ``width`` px, block medians, bilinear interpolation."""
    import cv2

    k = max(1, int(width)) | 1
    low = cv2.erode(np.asarray(img, dtype=np.float32), np.ones((k, k), np.uint8),
                    borderType=cv2.BORDER_REPLICATE)
    return smooth_background(low, block)


# ------------------------------------------------------------------ missed spots
@njit(cache=True)
def _local_maxima(img, half, threshold):
    """Pixels above ``threshold`` that are the maximum of their (2 half + 1)^2 square."""
    ny, nx = img.shape
    ys = []
    xs = []
    for v in range(ny):
        for u in range(nx):
            c = img[v, u]
            if c <= threshold:
                continue
            top = True
            for dv in range(max(0, v - half), min(ny, v + half + 1)):
                for du in range(max(0, u - half), min(nx, u + half + 1)):
                    if img[dv, du] > c:
                        top = False
                        break
                if not top:
                    break
            if top:
                ys.append(v)
                xs.append(u)
    return np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)


def find_missed(residual: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float,
                threshold: float, min_distance: float, noise_sigmas: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of the model residual that no spot accounts for.

    Returns positions (px) of local maxima of the residual, smoothed at the spot scale,
    that exceed ``threshold`` (peak counts) and lie further than ``min_distance`` from
    every known spot. On the image border these are spots whose centres lie just
    outside the frame: they are fitted too (so that their light does not bias their
    neighbours) and dropped from the output afterwards. With ``noise_sigmas`` > 0 a peak
    must also exceed that many robust standard deviations (1.4826 x the median absolute
    deviation) of the smoothed residual: where the spots are faint the noise's own peaks
    are not spots.
    """
    import cv2

    from ..neighbours import nearest

    # on 2 x 2 px cells (spots are several px wide; the fit refines the positions)
    res = np.asarray(residual, dtype=np.float32)
    f = 2 if sigma >= 2.5 and min(res.shape) >= 16 else 1
    if f > 1:
        res = cv2.resize(res, (res.shape[1] // f, res.shape[0] // f), interpolation=cv2.INTER_AREA)
    sm = cv2.GaussianBlur(res, (0, 0), sigma / (2 * f))
    if noise_sigmas > 0:
        sub = sm[::2, ::2]
        spread = 1.4826 * float(np.median(np.abs(sub - np.median(sub))))
        threshold = max(float(threshold), noise_sigmas * spread)
    px, py = _local_maxima(sm, max(1, int(sigma / f)), float(threshold))
    px, py = (px + 0.5) * f - 0.5, (py + 0.5) * f - 0.5
    if len(px) and len(x):
        d, _ = nearest(np.c_[x, y], query=np.c_[px, py])
        keep = d > min_distance
        px, py = px[keep], py[keep]
    return px, py


# ------------------------------------------------------------------ shared-width stage
#: Rounds of the shared-width stage (populations, refit, missed spots).
SHARED_ROUNDS = 3
#: Most sweeps per background pass, and background passes, of the shared-width stage
#: (4 rounds of 5 passes: the same positions within 0.001 px on the dense bidisperse
#: analogue, at 1.5 times the time).
SHARED_SWEEPS = 10
SHARED_BACKGROUND_PASSES = 2
#: In the shared-width stage a residual peak above this fraction of the median spot peak,
#: further than SHARED_MISSED_DISTANCE narrowest widths from every spot, is a missed spot
#: (a partner merged into one detection, a spot centred outside the frame). A spot fitted
#: midway between two touching Airy spots (sigma/d 0.35) leaves each a residual of
#: 0.2-0.25 of a peak: with 0.25 they stayed merged (recall 0.985-0.997 on the conditions
#: benchmark's Airy s/d 0.35); at 0.2 they are found, and the spot left between them is
#: then removed by :func:`_prune_redundant` (recall and precision 1.000, RMS 0.44 -> 0.29 px).
SHARED_MISSED_THRESHOLD = 0.2
SHARED_MISSED_DISTANCE = 1.5
#: ... and above this many robust standard deviations of the smoothed residual (with a
#: too small --diameter on a dense video the spots are noise-level and, without it,
#: their residual's noise peaks were added: 1440 detections a frame for 137 particles).
SHARED_MISSED_SIGMAS = 5.0


#: In the shared-width stage every spot with another spot closer than PRUNE_REACH of the
#: narrowest population's widths is tested for redundancy: removed, its neighbours refitted
#: (positions and amplitudes, PRUNE_SWEEPS sweeps), and left out when the residual sum of
#: squares grows by less than PRUNE_FRACTION of the light of a median spot (its sum of
#: squared pixel values, A^2 / (4 pi s^2)). Touching partners lie 2.7 widths apart (Airy
#: or Gaussian spots of sigma/d 0.35 or narrower); a spot left midway between two
#: partners that were found after it lies at half that.
PRUNE_REACH = 2.2
PRUNE_SWEEPS = 2
PRUNE_FRACTION = 0.1
#: Diagnostics: (x, y, fraction) of every tested spot is appended here when it is a list.
PRUNE_LOG = None


def _prune_redundant(sub, model, sigma, tol, w0, added):
    """Mask (N,) of the spots to keep: see PRUNE_REACH. Only pairs with a spot found in
    the residual (``added`` (N,) bool) are tested. ``sub`` is the frame less its
    background, ``model`` the fit (its canvas and caches are updated for the removals)."""
    from ..neighbours import Tree

    p = model.params
    n = len(p)
    alive = np.ones(n, bool)
    if n < 3:
        return alive
    tree = Tree(p[:, :2])
    pairs = tree.pairs(PRUNE_REACH * w0)
    if len(pairs):
        pairs = pairs[added[pairs[:, 0]] | added[pairs[:, 1]]]
    if len(pairs) == 0:
        return alive
    unit = float(np.median(p[:, 2])) ** 2 / (4 * np.pi * w0 ** 2)
    cand = np.unique(pairs)
    cand = cand[np.argsort(p[cand, 2])]          # the faintest first
    reach = (FIT_HALF_WIDTH + RENDER_HALF_WIDTH) * w0 + 2
    free = np.array([1, 1, 1, 0, 0, 0, 0], np.int64)
    dummy = np.zeros(n + 1, np.int64)
    ny, nx = sub.shape
    for i in cand:
        nb = np.asarray(tree.within(reach, query=p[i:i + 1, :2])[0], dtype=np.int64)
        nb = nb[(nb != i) & alive[nb]]
        if not np.any(np.hypot(p[nb, 0] - p[i, 0], p[nb, 1] - p[i, 1]) < PRUNE_REACH * w0):
            continue
        rows = np.r_[i, nb]
        # the box every changed render can reach
        half = RENDER_HALF_WIDTH * float(p[rows, 3].max()) + 2 * sigma + 2
        x0 = max(0, int(p[rows, 0].min() - half))
        x1 = min(nx, int(p[rows, 0].max() + half) + 2)
        y0 = max(0, int(p[rows, 1].min() - half))
        y1 = min(ny, int(p[rows, 1].max() + half) + 2)
        box = (slice(y0, y1), slice(x0, x1))
        saved = (model.canvas[box].copy(), p[rows].copy(), model.cache_x[rows].copy(),
                 model.cache_y[rows].copy(), model.cache_w[rows].copy())
        rss0 = float(np.sum((sub[box] - model.canvas[box]) ** 2))
        cu, cv, wr = model.cache_w[i]
        _add_outer(model.canvas, cu, cv, wr, -p[i, 2], model.cache_x[i], model.cache_y[i],
                   0.0, model.cache_x[i], model.cache_y[i])
        stats = np.zeros((n, 4))
        for k in range(PRUNE_SWEEPS):
            _gs_sweep(sub, model.canvas, p, model.cache_x, model.cache_y, model.cache_w,
                      nb, free, 2 if k == 0 else 1, FIT_HALF_WIDTH, RENDER_HALF_WIDTH,
                      0.4 * sigma, 2.5 * sigma, float(sigma), tol, stats, np.ones(n, np.uint8),
                      np.zeros(n, np.uint8), dummy, dummy, 0, 0, *_NO_PROFILE)
        rss1 = float(np.sum((sub[box] - model.canvas[box]) ** 2))
        frac = (rss1 - rss0) / unit
        if isinstance(PRUNE_LOG, list):
            PRUNE_LOG.append((float(p[i, 0]), float(p[i, 1]), frac))
        if frac < PRUNE_FRACTION:
            alive[i] = False
        else:
            model.canvas[box], p[rows], model.cache_x[rows], model.cache_y[rows], \
                model.cache_w[rows] = saved
    return alive


def _shared_width_stage(img, model, bg, sigma, block, tol, passes, add_missed, start, added,
                        partner):
    """Populations' widths, refit with the widths held, missed spots; see refine_jointly.

    Returns the model, background map, the final sweep's stats, start positions, the
    ``added`` and ``partner`` flags (all extended by the spots found here; ``partner``
    True for those), and ``alive`` (M,) bool over those rows: False for the spots
    :func:`_prune_redundant` left out (not in the model).
    """
    ny, nx = img.shape
    fixed = (1, 1, 1, 0, 0, 0, 0)
    passes = min(passes, SHARED_BACKGROUND_PASSES)
    sub = np.subtract(img, bg)
    prev = None
    for rnd in range(SHARED_ROUNDS):
        if prev is None:
            widths, labels = width_populations(model.params[:, 3])
        if len(widths) > 1:   # (after the first round, with the held widths as they are)
            labels = _choose_widths(sub, model, widths, labels, sigma)
        if prev is not None and len(prev) == len(labels) and np.array_equal(prev, labels):
            break
        prev = labels
        params = model.params.copy()
        params[:, 3] = widths[labels]
        model = _Model(img.shape, params)
        n = len(params)
        for k in range(passes):
            if k:
                bg = smooth_background(np.subtract(img, model.canvas), block)
                np.subtract(img, bg, out=sub)
            _sweeps(sub, model, fixed, SHARED_SWEEPS, 2, sigma, tol, np.zeros((n, 4)))
        if not add_missed or rnd == SHARED_ROUNDS - 1:
            continue
        p = model.params
        peak = np.median(p[:, 2] / (2 * np.pi * p[:, 3] ** 2))
        w0 = float(widths[0])
        mx, my = find_missed(np.subtract(sub, model.canvas), p[:, 0], p[:, 1], w0,
                             SHARED_MISSED_THRESHOLD * peak, SHARED_MISSED_DISTANCE * w0,
                             SHARED_MISSED_SIGMAS)
        if len(mx) == 0:
            continue
        cu = np.clip(np.rint(mx).astype(np.int64), 0, nx - 1)
        cv = np.clip(np.rint(my).astype(np.int64), 0, ny - 1)
        res = np.subtract(sub, model.canvas)
        extra = np.zeros((len(mx), 7))
        extra[:, 0], extra[:, 1], extra[:, 3] = mx, my, w0
        extra[:, 2] = np.maximum(res[cv, cu], 1.0) * 2 * np.pi * w0 ** 2
        model.add(extra)
        start = np.vstack([start, extra[:, :2]])
        added = np.r_[added, np.ones(len(mx), bool)]
        partner = np.r_[partner, np.ones(len(mx), bool)]
        # every width free again for a few sweeps: the new spots find theirs, and the
        # populations are found again
        _sweeps(sub, model, STAGE2_FREE, 4, 2, sigma, tol, np.zeros((len(model.params), 4)))
        prev = None
    alive = np.ones(len(model.params), bool)
    if add_missed and PRUNE_FRACTION > 0 and added.any():
        alive = _prune_redundant(sub, model, sigma, tol, float(widths[0]), added)
        if not alive.all():
            model = _Model(img.shape, model.params[alive])
    stats = np.zeros((len(model.params), 4))
    stats[:, 3] = np.nan
    _sweeps(sub, model, fixed, 1, 1, sigma, tol, stats, final=True)
    return model, bg, stats, start, added, partner, alive


# ------------------------------------------------------------------ driver
def refine_jointly(image: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float,
                   n_sweeps: int = 8, n_newton: int = 2, add_missed: bool = True,
                   tol: float = 1e-3, stage1_sweeps: int = 8,
                   stage2_newton: int = 2, background_passes: int = 1,
                   return_background: bool = False, profile=None,
                   fit_sigma: bool = True, shared_widths: bool = False,
                   weighted: bool = True) -> dict[str, np.ndarray]:
    """Refine spot centres by fitting all spots of a frame jointly.

    Parameters
    ----------
    image : ndarray (Y, X)
        Image with bright spots (invert dark-on-bright images first), any background.
    x, y : ndarray (N,)
        Starting positions in px (column, row), e.g. trackpy centroids.
    sigma : float
        Starting Gaussian width of the spots in px.
    n_sweeps : int
        Most refit sweeps of the final stage (it stops earlier once no spot changes by
        more than ``tol``).
    n_newton, stage2_newton : int
        Gauss-Newton steps per spot in the first sweep of the first and of the second
        stage (later sweeps: one).
    add_missed : bool
        Look for spots the detector missed in the residual of the first stage (including
        spots centred just outside the frame) and fit them too.
    tol : float
        Convergence tolerance: px for positions, relative for amplitude and width.
    stage1_sweeps : int
        Most sweeps of the first stage (a background offset per spot; the background
        map comes from its residual, so its convergence sets the final accuracy).
    return_background : bool
        Also return the smooth background map (``background_map``, ndarray (Y, X)).
    profile : (knots, knot_px, weight, scale, correction), optional
        The spots' common non-Gaussian radial profile (:mod:`colloidcg.tracking.psf`):
        values ``knots`` (K,) every ``knot_px`` px, each spot's ``weight`` and ``scale`` (N,), and
        ``correction`` (Y, X), the profile rendered around every spot at (x, y). The
        frame less the correction is fitted, each spot's own profile added back to its
        target (it is fitted against its neighbours' whole light). No spots are added.
    fit_sigma : bool
        Fit each spot's width (else every spot keeps ``sigma``).
    shared_widths : bool
        After the second stage, group the fitted widths into populations
        (:func:`width_populations`), give every spot its population's width (the one
        that fits it best, :func:`_choose_widths`) and refit positions and amplitudes
        with the widths held; look for missed spots in that fit's residual and repeat
        (SHARED_ROUNDS times). Free widths per spot cost accuracy where spots overlap:
        on the dense bidisperse analogue, from the true positions, 0.150 px with free
        widths against 0.127 px with each population's width.

    weighted : bool
        Finally refit positions and amplitudes by least squares weighted by each pixel's
        noise variance (:func:`colloidcg.tracking.weighted_fit.weighted_polish`; not with ``profile``).

    Returns
    -------
    dict of ndarray (M,)
        ``x``, ``y`` (px), ``amplitude`` (integrated counts above background), ``sigma``
        (px), ``background`` (counts under the spot), ``converged`` (bool), ``added``
        (bool: found in the residual; the first rows are the given spots, in order, all N
        of them unless the shared-width stage left some out as redundant,
        :func:`_prune_redundant`), ``partner`` (bool: found by the shared-width stage's
        search, whose peaks must also exceed the residual's noise; see SHARED_MISSED_*),
        ``ep`` (px: standard error of x and of y, :func:`colloidcg.tracking.uncertainty.position_errors`:
        the fit's sandwich covariance with the pixel noise measured from its residual) and ``ecc`` (eccentricity of the spot with its
        neighbours and background removed, 0 for a round spot).
        A spot whose fit fails keeps its starting position; a spot that ends more than
        2 sigma from its start is marked not converged.
    """
    img = np.ascontiguousarray(image, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    prof = _NO_PROFILE
    if profile is not None:
        knots, knot_px, weight, scale, correction = profile
        img = np.ascontiguousarray(img - correction)
        prof = (np.ascontiguousarray(knots, dtype=np.float64), float(knot_px),
                np.ascontiguousarray(weight, dtype=np.float64),
                np.ascontiguousarray(np.c_[x, y, scale], dtype=np.float64))
        add_missed = False
    free1, free2 = STAGE1_FREE, STAGE2_FREE
    if not fit_sigma:
        free1, free2 = free1[:3] + (0,) + free1[4:], free2[:3] + (0,) + free2[4:]
    w = int(np.ceil(FIT_HALF_WIDTH * sigma))
    n0 = len(x)
    shared = shared_widths and fit_sigma and profile is None and n0 >= 10
    ny, nx = img.shape
    block = 2 * w + 1

    def init(xs, ys, base):
        params = np.zeros((len(xs), 7))
        params[:, 0], params[:, 1], params[:, 3] = xs, ys, sigma
        cu = np.clip(np.rint(xs).astype(np.int64), 0, nx - 1)
        cv = np.clip(np.rint(ys).astype(np.int64), 0, ny - 1)
        params[:, 2] = np.maximum(img[cv, cu] - base[cv, cu], 1.0) * 2 * np.pi * sigma ** 2
        params[:, 4] = base[cv, cu]
        return params

    # Stage 1: spots and a background offset under each (starting from the image floor).
    floor = background_floor(img, w, block)
    model = _Model(img.shape, init(x, y, floor))
    start = model.params[:, :2].copy()
    stats = np.zeros((n0, 4))
    _sweeps(img, model, free1, stage1_sweeps, n_newton, sigma, tol, stats,
            STAGE1_FIT_HALF_WIDTH, profile=prof)
    residual = np.subtract(img, model.canvas)
    bg = smooth_background(residual, block)
    residual -= bg
    added = np.zeros(n0, bool)
    if add_missed and n0:
        params = model.params
        peak = np.median(params[:, 2]) / (2 * np.pi * np.median(params[:, 3]) ** 2)
        mx, my = find_missed(residual, params[:, 0], params[:, 1], sigma,
                             MISSED_THRESHOLD * peak, 2.0 * sigma)
        if len(mx):
            extra = init(mx, my, bg + model.canvas)
            model.add(extra)
            start = np.vstack([start, extra[:, :2]])
            added = np.r_[added, np.ones(len(mx), bool)]
    # Stage 2: the smooth background map; x, y, A and s per spot.
    model.params[:, 4:] = 0.0
    stats = np.zeros((len(model.params), 4))
    stats[:, 3] = np.nan
    sub = np.subtract(img, bg, out=residual)
    for k in range(background_passes):
        if k:   # the background again, from what the current spots leave
            bg = smooth_background(np.subtract(img, model.canvas), block)
            np.subtract(img, bg, out=sub)
        _sweeps(sub, model, free2, n_sweeps, stage2_newton, sigma, tol, stats,
                final=k == background_passes - 1 and not shared, profile=prof)
    if shared:
        model, bg, stats, start, added, partner, alive = _shared_width_stage(
            img, model, bg, sigma, block, tol, max(background_passes, 1), add_missed,
            start, added, np.zeros(len(added), bool))
        start, added, partner = start[alive], added[alive], partner[alive]
    else:
        partner = np.zeros(len(added), bool)
    params = model.params
    moved = np.hypot(params[:, 0] - start[:, 0], params[:, 1] - start[:, 1])
    ecc = stats[:, 3]
    from .uncertainty import position_errors
    from .weighted_fit import WEIGHTED_SWEEPS, weighted_polish

    sub = np.subtract(img, bg)
    weighted = bool(weighted and profile is None and WEIGHTED_SWEEPS > 0)
    noise = None
    if weighted:
        noise = weighted_polish(sub, model, sigma)
        params = model.params
    ep = position_errors(sub, model.canvas, params,
                         free_s=bool(fit_sigma and not shared and not weighted),
                         weighted=weighted, noise=noise)
    cu = np.clip(np.rint(params[:, 0]).astype(np.int64), 0, nx - 1)
    cv = np.clip(np.rint(params[:, 1]).astype(np.int64), 0, ny - 1)
    out = {"x": params[:, 0].copy(), "y": params[:, 1].copy(),
           "amplitude": params[:, 2].copy(), "sigma": params[:, 3].copy(),
           "background": bg[cv, cu], "converged": moved <= 2 * sigma, "added": added,
           "partner": partner,
           "ep": ep, "ecc": ecc}
    if return_background:
        out["background_map"] = bg
    return out

