"""Standard errors of fitted spot positions, with the pixel noise measured from the frame.

The joint fit (:mod:`colloidcg.tracking.refine`) is least squares. Its position error has
the sandwich covariance

    Cov = H^-1 (J^T V J) H^-1,    H = J^T W J,

over the spot's fit window, J the model's Jacobian (columns x, y, A [, s]), W the weights
the fit used (1 for an unweighted fit) and V = diag(var) the pixels' actual noise
variance (for W = V^-1 this is the inverse Fisher information, the Cramér-Rao bound of
the model). Shot noise makes var largest where the spot is bright, on the flanks that fix
its position, so a variance averaged over the window (what a residual sum of squares
gives) underestimates the error by 10-30 %.

The noise variance of a camera pixel is affine in its expected signal, var = v0 + g mu
(Poisson noise times the gain g, plus read noise and the background's own shot noise
in v0). Both coefficients are measured from the frame: the fit's residual (frame less
background less every fitted spot), binned by the fitted model mu, gives a robust
variance per bin (1.4826 x the median absolute deviation, squared), and a weighted line
through them gives v0 and g. Nothing comes from the renderer's settings.

The sandwich holds the neighbours where they were fitted; in a joint fit their errors
move the spot too. Where windows share pixels the neighbours are marginalised in the
Fisher information F = J^T V^-1 J (Schur complement F_ii - sum_j F_ij F_jj^-1 F_ji, each
neighbour with its own information; neighbours of neighbours are not followed), and the
position variance grows by the ratio of the marginalised to the held bound.

Two things the model does not describe are then put back, both measured from the same
residual:

- what the fit leaves around each spot (misfit, a neighbour's shape): the spot's reduced
  chi-square, chi2 = sum r^2 / var / (n_pix - n_free) over its window, multiplies its
  variance (1 on average where the spot model is right);
- noise correlated between pixels (JPEG blocks, interpolation): the correlation of the
  normalised residual between nearest and diagonal neighbours, measured on the spots'
  flanks (:data:`FLANK`), changes the variance of a position estimate, whose pixel
  weights a follow the Jacobian's x column, by 1 + sum_l aa(l) rho(l) / aa(0)
  (:func:`correlated_noise_gain`); 1 for white noise.

Measured on the conditions benchmark (``benchmarks/tracking.py --conditions full``, 75
conditions of the independent renderer): median ep / median radial error 0.64-1.07,
median 0.74, where 0.85 is exact; the tracks' own noise, used before as the scale, gave
0.51-1.65. The ep is thus typically 10-15 % below the real per-axis error, most (0.64-0.70)
for bright, small or very dim Gaussian spots, whose error the fit's Fisher information
does not fully explain (what the background map and the held widths add is not counted).

Reference for the variance model and the Fisher information of a pixelated spot:
K. I. Mortensen et al., Nat. Methods 7, 377 (2010); for the sandwich covariance of a
misweighted least-squares fit: H. White, Econometrica 48, 817 (1980).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..neighbours import pairs as close_pairs
from .refine import FIT_HALF_WIDTH, SAFE_FASTMATH, _half_width, _profile

#: Largest factor by which marginalising the neighbours may raise a position's variance
#: (a spot that its neighbours leave undetermined, e.g. a merged pair, gets this).
MAX_NEIGHBOUR_FACTOR = 25.0
#: Bins of the model's value over which the residual's variance is measured.
VARIANCE_BINS = 16
#: Neighbours closer than this many (largest) spot sigmas are marginalised.
NEIGHBOUR_REACH = 4.0
#: Rounds of marginalisation: 1 takes each neighbour with its own information; each
#: further round uses the neighbours' marginal information of the round before (changed
#: nothing at area fraction 0.7 and made ep unstable where spots overlap heavily, s/d
#: 0.35: ep/err 0.90 -> 1.77 -> 1.34 with 1, 2, 3 rounds).
SCHUR_ROUNDS = 1
#: Side (px) of the central square on which the noise's correlation is measured.
MAX_SIDE = 256
#: At least about this many pixels (a regular subsample) measure the noise model (fewer
#: lose accuracy on sparse frames: g 13 % low from 10^4 pixels of tests/test_tracking_ep.py's).
MAX_PIXELS = 20000
#: Pixels whose model value is below this fraction of the median spot peak count as
#: background in the variance fit (one bin of their own).
BACKGROUND_LEVEL = 0.02


def noise_model(residual: np.ndarray, model: np.ndarray, peak: float) -> tuple[float, float]:
    """Pixel noise variance var = v0 + g * model, measured from a fit's residual.

    Parameters
    ----------
    residual : ndarray (Y, X)
        Frame less background less every fitted spot (image units).
    model : ndarray (Y, X)
        The fitted spots without background (image units, >= 0 where the spots are).
    peak : float
        A typical spot peak (image units): sets which pixels count as background.

    Returns
    -------
    v0 : float
        Variance where there is no spot (image units squared; > 0).
    g : float
        Gain: variance added per unit of signal (image units; >= 0).
    """
    r = np.asarray(residual, dtype=np.float64)
    m = np.asarray(model, dtype=np.float64)
    step = max(1, int(math.sqrt(r.size / MAX_PIXELS)))
    # a regular subsample is enough for two coefficients (and keeps this cheap)
    r, m = r[::step, ::step].ravel(), m[::step, ::step].ravel()
    ok = np.isfinite(r) & np.isfinite(m)
    r, m = r[ok], m[ok]
    if len(r) < 50:
        v = float(np.var(r)) if len(r) > 1 else 1.0
        return max(v, 1e-12), 0.0
    bgmask = m < BACKGROUND_LEVEL * max(peak, 1e-12)
    xs, vs, ns = [], [], []

    def robust(a, axis=None):
        med = np.median(a, axis=axis, keepdims=True)
        return (1.4826 * np.median(np.abs(a - med), axis=axis)) ** 2

    if bgmask.sum() >= 20:
        xs.append(float(np.mean(m[bgmask])))
        vs.append(float(robust(r[bgmask])))
        ns.append(int(bgmask.sum()))
    sm, sr = m[~bgmask], r[~bgmask]
    if len(sm) >= 20 * VARIANCE_BINS:
        # VARIANCE_BINS bins of equal count along the model's value (its quantiles),
        # all measured at once: one row per bin
        per = len(sm) // VARIANCE_BINS
        kth = per * np.arange(1, VARIANCE_BINS)
        order = np.argpartition(sm, kth)[:per * VARIANCE_BINS]
        bm = sm[order].reshape(VARIANCE_BINS, per)
        br = sr[order].reshape(VARIANCE_BINS, per)
        xs.extend(bm.mean(axis=1).tolist())
        vs.extend(robust(br, axis=1).tolist())
        ns.extend([per] * VARIANCE_BINS)
    xs, vs, ns = np.array(xs), np.array(vs), np.array(ns, float)
    if len(xs) < 2 or np.ptp(xs) <= 0:
        v = float(np.average(vs, weights=ns)) if len(vs) else float(robust(r))
        return max(v, 1e-12), 0.0
    # weighted least squares of vs on xs; a bin's variance has relative s.e. ~ sqrt(2 / n)
    w = ns / np.maximum(vs, 1e-12) ** 2
    a = np.c_[np.ones(len(xs)), xs]
    coef = np.linalg.lstsq(a * np.sqrt(w)[:, None], vs * np.sqrt(w), rcond=None)[0]
    v0, g = float(coef[0]), float(coef[1])
    if g < 0:      # no measurable shot noise (e.g. read-noise limited): constant variance
        g = 0.0
        v0 = float(np.average(vs, weights=w))
    if v0 <= 0:
        v0 = max(float(np.min(vs)), 1e-12)
    if not (math.isfinite(v0) and math.isfinite(g)):   # degenerate bins: one variance
        v0, g = max(float(robust(r)), 1e-12), 0.0
    return v0, g


@njit(cache=True)
def inverse_variance(canvas, v0, g):
    """1 / the pixel noise variance of :func:`noise_model`, 1 / (v0 + g * max(canvas, 0))
    (the variance floored at 1e-12), ndarray (Y, X) like ``canvas`` (the fitted spots
    rendered): one compiled pass (numpy's expression made four image-sized temporaries)."""
    ny, nx = canvas.shape
    out = np.empty((ny, nx))
    for v in range(ny):
        for u in range(nx):
            out[v, u] = 1.0 / max(v0 + g * max(canvas[v, u], 0.0), 1e-12)
    return out


@njit(cache=True)
def _spot_profiles(x, y, s, w, nx, ny, px, py):
    """1D profiles of a spot over its window: px[0..2] = gx, dgx/dx, dgx/ds (and py for
    y); returns the window's corner (u0, v0)."""
    cu = int(np.rint(x))
    cv = int(np.rint(y))
    m = px.shape[1]
    mask = np.empty(m)
    off = np.empty(m)
    _profile(cu, w, x, s, nx, px[0], px[1], px[2], mask, off)
    _profile(cv, w, y, s, ny, py[0], py[1], py[2], mask, off)
    return cu - w, cv - w


@njit(cache=True)
def _invert_gauss_jordan(mat, out):
    """``out`` = inverse of the small matrix ``mat`` (k, k), by Gauss-Jordan elimination with
    partial pivoting; returns False (``out`` untouched) unless its determinant is positive.
    (numba's np.linalg.inv / det add several seconds to the first run's compilation, for
    the 4 x 4 matrices of fits with free widths.)"""
    k = mat.shape[0]
    a = np.empty((k, 2 * k))
    for r in range(k):
        for c in range(k):
            a[r, c] = mat[r, c]
            a[r, k + c] = 1.0 if r == c else 0.0
    det = 1.0
    for c in range(k):
        piv = c
        for r in range(c + 1, k):
            if abs(a[r, c]) > abs(a[piv, c]):
                piv = r
        if a[piv, c] == 0.0:
            return False
        if piv != c:
            det = -det
            for t in range(2 * k):
                a[c, t], a[piv, t] = a[piv, t], a[c, t]
        det *= a[c, c]
        inv_p = 1.0 / a[c, c]
        for t in range(2 * k):
            a[c, t] *= inv_p
        for r in range(k):
            if r != c and a[r, c] != 0.0:
                f = a[r, c]
                for t in range(2 * k):
                    a[r, t] -= f * a[c, t]
    if not det > 0:
        return False
    for r in range(k):
        for c in range(k):
            out[r, c] = a[r, k + c]
    return True


@njit(cache=True)
def _invert(mat, out):
    """Inverse of a Fisher or normal matrix ``mat`` (k, k) into ``out``; returns False
    (``out`` untouched) unless ``mat`` is finite with a positive determinant. 3 x 3 by
    cofactors (called for every spot and neighbour: LAPACK's per-call cost dominated),
    larger by Gauss-Jordan elimination."""
    for v in mat.ravel():
        if not math.isfinite(v):
            return False
    if mat.shape[0] != 3:
        return _invert_gauss_jordan(mat, out)
    c00 = mat[1, 1] * mat[2, 2] - mat[1, 2] * mat[2, 1]
    c01 = mat[1, 2] * mat[2, 0] - mat[1, 0] * mat[2, 2]
    c02 = mat[1, 0] * mat[2, 1] - mat[1, 1] * mat[2, 0]
    det = mat[0, 0] * c00 + mat[0, 1] * c01 + mat[0, 2] * c02
    if not det > 0:
        return False
    r = 1.0 / det
    out[0, 0] = c00 * r
    out[1, 0] = c01 * r
    out[2, 0] = c02 * r
    out[0, 1] = (mat[0, 2] * mat[2, 1] - mat[0, 1] * mat[2, 2]) * r
    out[1, 1] = (mat[0, 0] * mat[2, 2] - mat[0, 2] * mat[2, 0]) * r
    out[2, 1] = (mat[0, 1] * mat[2, 0] - mat[0, 0] * mat[2, 1]) * r
    out[0, 2] = (mat[0, 1] * mat[1, 2] - mat[0, 2] * mat[1, 1]) * r
    out[1, 2] = (mat[0, 2] * mat[1, 0] - mat[0, 0] * mat[1, 2]) * r
    out[2, 2] = (mat[0, 0] * mat[1, 1] - mat[0, 1] * mat[1, 0]) * r
    return True


@njit(cache=True)
def _less_sandwich(target, a, c, tr):
    """target -= a c a^T (``tr``: a^T c a), all (k, k); no temporaries beyond a k x k
    product (c a^T first, then a times it)."""
    k = target.shape[0]
    tmp = np.empty((k, k))
    for r in range(k):
        for q in range(k):
            acc = 0.0
            for t in range(k):
                acc += c[r, t] * (a[t, q] if tr else a[q, t])
            tmp[r, q] = acc
    for p in range(k):
        for q in range(k):
            acc = 0.0
            for r in range(k):
                acc += (a[r, p] if tr else a[p, r]) * tmp[r, q]
            target[p, q] -= acc


@njit(cache=True)
def _usable(params, i):
    return (math.isfinite(params[i, 0]) and math.isfinite(params[i, 1])
            and math.isfinite(params[i, 2]) and params[i, 2] > 0
            and math.isfinite(params[i, 3]) and params[i, 3] > 0)


@njit(cache=True)
def _jac(a, px, py, ku, kv, jac):
    jac[0] = a * px[1, ku] * py[0, kv]
    jac[1] = a * px[0, ku] * py[1, kv]
    jac[2] = px[0, ku] * py[0, kv]
    jac[3] = a * (px[2, ku] * py[0, kv] + px[0, ku] * py[2, kv])


@njit(cache=True, fastmath=SAFE_FASTMATH)
def _sandwich(residual, model, v0, g, params, free_s, weighted, fit_k, pairs, rounds, out):
    """Per spot: out[i] = (var_x, var_y, chi2) of the least-squares position with pixel
    variance v0 + g * model (see the module docstring); parameters x, y, A (and s where
    ``free_s``). The covariance (sandwich; with ``weighted`` the inverse Fisher matrix)
    holds the other spots; the neighbours that share pixels with the spot (``pairs``
    (P, 2) of spot indices) are then marginalised in the Fisher information (the Schur
    complement F_ii - sum_j F_ij F_jj^-1 F_ji, each neighbour taken with its own
    information only), and var_x, var_y grow by the ratio of the marginalised to the
    held bound (at most MAX_NEIGHBOUR_FACTOR)."""
    ny, nx = residual.shape
    n = params.shape[0]
    m = 2 * 48 + 1
    ivar = inverse_variance(model, v0, g)     # 1 / the pixels' noise variance
    pxi = np.empty((3, m))
    pyi = np.empty((3, m))
    pxj = np.empty((3, m))
    pyj = np.empty((3, m))
    npar = 4 if free_s else 3
    ji = np.empty(4)
    jj = np.empty(4)
    # each spot's window corner and, for the pairs below (x, y, A), its 1D profiles gx,
    # gx' and gy, gy' (computed once here, not again for each of its neighbours)
    corner = np.zeros((n, 2), np.int64)
    wmax = 1
    for i in range(n):
        if _usable(params, i):
            wmax = max(wmax, _half_width(params[i, 3], fit_k))
    keep = npar == 3 and pairs.shape[0] > 0
    px_all = np.zeros((n if keep else 0, 2, 2 * wmax + 1))
    py_all = np.zeros((n if keep else 0, 2, 2 * wmax + 1))
    fis = np.zeros((n, npar, npar))
    finv = np.zeros((n, npar, npar))
    schur = np.zeros((n, npar, npar))
    okf = np.zeros(n, np.bool_)
    for i in range(n):
        out[i, 0] = np.nan
        out[i, 1] = np.nan
        out[i, 2] = np.nan
        if not _usable(params, i):
            continue
        x, y, a, s = params[i, 0], params[i, 1], params[i, 2], params[i, 3]
        w = _half_width(s, fit_k)
        u0, v0_ = _spot_profiles(x, y, s, w, nx, ny, pxi, pyi)
        corner[i, 0], corner[i, 1] = u0, v0_
        if keep:
            for r in range(2):
                for k in range(2 * w + 1):
                    px_all[i, r, k] = pxi[r, k]
                    py_all[i, r, k] = pyi[r, k]
        # the window's part inside the frame (the profiles are 0 outside it)
        ka, kb = max(0, -u0), min(2 * w + 1, nx - u0)
        la, lb = max(0, -v0_), min(2 * w + 1, ny - v0_)
        h = np.zeros((npar, npar))
        b = np.zeros((npar, npar))
        f = np.zeros((npar, npar))
        chi = 0.0
        npix = max(kb - ka, 0) * max(lb - la, 0)
        if weighted and npar == 3:
            # the default (weighted fit of x, y, A): scalar sums (the weights precomputed in ivar)
            f00 = f01 = f02 = f11 = f12 = f22 = 0.0
            # (slices indexed from 0: no negative-index handling, vector loads)
            gxs = pxi[0, ka:kb]
            dxs = pxi[1, ka:kb]
            for kv in range(la, lb):
                v = v0_ + kv
                gyv = pyi[0, kv]
                dyv = a * pyi[1, kv]
                ivs = ivar[v, u0 + ka:u0 + kb]
                rs = residual[v, u0 + ka:u0 + kb]
                for k in range(kb - ka):
                    iv = ivs[k]
                    j0 = a * dxs[k] * gyv
                    j1 = gxs[k] * dyv
                    j2 = gxs[k] * gyv
                    f00 += j0 * j0 * iv
                    f01 += j0 * j1 * iv
                    f02 += j0 * j2 * iv
                    f11 += j1 * j1 * iv
                    f12 += j1 * j2 * iv
                    f22 += j2 * j2 * iv
                    rr = rs[k]
                    chi += rr * rr * iv
            f[0, 0], f[0, 1], f[0, 2] = f00, f01, f02
            f[1, 1], f[1, 2], f[2, 2] = f11, f12, f22
        else:
            for kv in range(la, lb):
                v = v0_ + kv
                for ku in range(ka, kb):
                    u = u0 + ku
                    var = max(v0 + g * max(model[v, u], 0.0), 1e-12)
                    iv = 1.0 / var
                    _jac(a, pxi, pyi, ku, kv, ji)
                    for p in range(npar):
                        for q in range(p, npar):
                            jq = ji[p] * ji[q]
                            f[p, q] += jq * iv
                            if not weighted:
                                h[p, q] += jq
                                b[p, q] += var * jq
                    rr = residual[v, u]
                    chi += rr * rr * iv
        for p in range(npar):
            for q in range(p):
                h[p, q] = h[q, p]
                b[p, q] = b[q, p]
                f[p, q] = f[q, p]
        if npix <= npar + 1 or not _invert(f, finv[i]):
            continue
        if weighted:     # (weights 1 / var: the sandwich is the inverse Fisher matrix)
            cov = finv[i]
        else:
            hi = np.empty((npar, npar))
            if not _invert(h, hi):
                continue
            cov = np.zeros((2, 2))   # the x and y diagonal of hi b hi
            for d in range(2):
                for p in range(npar):
                    for q in range(npar):
                        cov[d, d] += hi[d, p] * b[p, q] * hi[q, d]
        okf[i] = True
        for p in range(npar):   # (element loops: numba's row copies compile its shape-error text)
            for q in range(npar):
                fis[i, p, q] = f[p, q]
                schur[i, p, q] = f[p, q]
        out[i, 0] = cov[0, 0]
        out[i, 1] = cov[1, 1]
        out[i, 2] = chi / (npix - npar)
    # neighbours sharing pixels: each pair's cross information once, for both
    fij_all = np.zeros((pairs.shape[0], npar, npar))
    has = np.zeros(pairs.shape[0], np.bool_)
    sx = np.empty((3, 3))
    sy = np.empty((3, 3))
    for k in range(pairs.shape[0]):
        i = pairs[k, 0]
        j = pairs[k, 1]
        if not (okf[i] and okf[j]):
            continue
        xi, yi, ai, si = params[i, 0], params[i, 1], params[i, 2], params[i, 3]
        xj, yj, aj, sj = params[j, 0], params[j, 1], params[j, 2], params[j, 3]
        wi = _half_width(si, fit_k)
        wj = _half_width(sj, fit_k)
        ui, vi = corner[i, 0], corner[i, 1]
        uj, vj = corner[j, 0], corner[j, 1]
        ua, ub = max(ui, uj, 0), min(ui + 2 * wi, uj + 2 * wj, nx - 1)
        va, vb = max(vi, vj, 0), min(vi + 2 * wi, vj + 2 * wj, ny - 1)
        if ua > ub or va > vb:
            continue
        fij = fij_all[k]
        if npar == 3:
            # x, y, A: every Jacobian column is separable, X[p](u) Y[p](v); with the
            # weight 1 / var taken where the two spots meet (their midpoint) the cross
            # information is a product of two 1D sums
            um = min(max(int(np.rint(0.5 * (xi + xj))), 0), nx - 1)
            vm = min(max(int(np.rint(0.5 * (yi + yj))), 0), ny - 1)
            wm = 1.0 / max(v0 + g * max(model[vm, um], 0.0), 1e-12)
            # the columns' 1D factors: x (a gx', gx, gx) and y (gy, a gy', gy)
            # (the shared columns and rows as slices indexed from 0: vector loads)
            xgi, xdi = px_all[i, 0, ua - ui:ub - ui + 1], px_all[i, 1, ua - ui:ub - ui + 1]
            xgj, xdj = px_all[j, 0, ua - uj:ub - uj + 1], px_all[j, 1, ua - uj:ub - uj + 1]
            s00 = s01 = s10 = s11 = 0.0
            for t in range(ub - ua + 1):
                xa0, xa1 = ai * xdi[t], xgi[t]
                xb0, xb1 = aj * xdj[t], xgj[t]
                s00 += xa0 * xb0
                s01 += xa0 * xb1
                s10 += xa1 * xb0
                s11 += xa1 * xb1
            sx[0, 0], sx[0, 1], sx[1, 0], sx[1, 1] = s00, s01, s10, s11
            ygi, ydi = py_all[i, 0, va - vi:vb - vi + 1], py_all[i, 1, va - vi:vb - vi + 1]
            ygj, ydj = py_all[j, 0, va - vj:vb - vj + 1], py_all[j, 1, va - vj:vb - vj + 1]
            s00 = s01 = s10 = s11 = 0.0
            for t in range(vb - va + 1):
                ya0, ya1 = ygi[t], ai * ydi[t]
                yb0, yb1 = ygj[t], aj * ydj[t]
                s00 += ya0 * yb0
                s01 += ya0 * yb1
                s10 += ya1 * yb0
                s11 += ya1 * yb1
            sy[0, 0], sy[0, 1], sy[1, 0], sy[1, 1] = s00, s01, s10, s11
            # (column 2 shares its x factor with column 1 and its y factor with column 0)
            for p in range(3):
                sx[p, 2] = sx[p, 1] if p < 2 else sx[1, 1]
                sx[2, p] = sx[1, p] if p < 2 else sx[1, 1]
                sy[p, 2] = sy[p, 0] if p < 2 else sy[0, 0]
                sy[2, p] = sy[0, p] if p < 2 else sy[0, 0]
            for p in range(3):
                for q in range(3):
                    fij[p, q] = wm * sx[p, q] * sy[p, q]
        else:
            _spot_profiles(xi, yi, si, wi, nx, ny, pxi, pyi)
            _spot_profiles(xj, yj, sj, wj, nx, ny, pxj, pyj)
            for v in range(va, vb + 1):
                for u in range(ua, ub + 1):
                    var = max(v0 + g * max(model[v, u], 0.0), 1e-12)
                    _jac(ai, pxi, pyi, u - ui, v - vi, ji)
                    _jac(aj, pxj, pyj, u - uj, v - vj, jj)
                    for p in range(npar):
                        for q in range(npar):
                            fij[p, q] += ji[p] * jj[q] / var
        has[k] = True
    for rnd in range(rounds):
        # the neighbours' information: their own (first round), then their marginal one
        # from the round before (neighbours of neighbours, one step further each round)
        cinv = finv.copy()
        if rnd:
            for i in range(n):
                if okf[i]:
                    _invert(schur[i], cinv[i])
        for i in range(n):
            for p in range(npar):
                for q in range(npar):
                    schur[i, p, q] = fis[i, p, q]
        for k in range(pairs.shape[0]):
            if not has[k]:
                continue
            i = pairs[k, 0]
            j = pairs[k, 1]
            _less_sandwich(schur[i], fij_all[k], cinv[j], False)
            _less_sandwich(schur[j], fij_all[k], cinv[i], True)
    marg = np.empty((npar, npar))
    for i in range(n):
        if not okf[i]:
            continue
        rx = ry = MAX_NEIGHBOUR_FACTOR
        if _invert(schur[i], marg):   # (else the neighbours leave the spot undetermined)
            rx = min(max(marg[0, 0] / finv[i, 0, 0], 1.0), MAX_NEIGHBOUR_FACTOR)
            ry = min(max(marg[1, 1] / finv[i, 1, 1], 1.0), MAX_NEIGHBOUR_FACTOR)
        out[i, 0] *= rx
        out[i, 1] *= ry


#: The pixels (model between these fractions of the median spot peak) on which the
#: noise's correlation between neighbouring pixels is measured: the spots' flanks, where
#: a position's information lies. Between the spots the residual holds the background
#: map's error and faint missed light (on pixel-integrated Gaussian spots, lag-1
#: correlation 0.58 below 2 % of the peak, 0.00 on the flanks; on JPEG 50 spots 0.29-0.34
#: on the flanks).
FLANK = (0.1, 0.6)


def correlated_noise_gain(z: np.ndarray, kernel: np.ndarray, use: np.ndarray) -> float:
    """How much more a linear estimate with pixel weights ``kernel`` (K, K; K odd) varies
    under the noise ``z`` (Y, X; normalised to unit variance) with its correlation
    between neighbouring pixels than under white noise:
    1 + sum_{l != 0} aa(l) rho(l) / aa(0), aa the kernel's autocorrelation and rho(l) the
    correlation coefficient of z at the 8 lags of a pixel's nearest and diagonal
    neighbours, measured over the pixels ``use`` (Y, X bool; both pixels of a pair in it).
    Longer-range correlation is left out: over a frame of spots it is dominated by what
    the fits leave (the spot model's misfit, the background map's error), which the
    spots' chi-square already counts (with every lag over the whole frame the median
    ep / error scattered from 0.7 to 1.3 between conditions). 1 for white noise; >= 0."""
    z = np.asarray(z, dtype=np.float64)
    use = np.asarray(use, bool)
    # a central square of at most MAX_SIDE px measures the correlation (it is the
    # camera's and the compression's, the same over the frame)
    y0, x0 = max(0, (z.shape[0] - MAX_SIDE) // 2), max(0, (z.shape[1] - MAX_SIDE) // 2)
    z, use = z[y0:y0 + MAX_SIDE, x0:x0 + MAX_SIDE], use[y0:y0 + MAX_SIDE, x0:x0 + MAX_SIDE]
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    a0 = _kernel_lag(kernel, 0, 0)
    if a0 <= 0 or use.sum() < 100:
        return 1.0
    var, sums, counts = _lag_sums(np.ascontiguousarray(z), np.ascontiguousarray(use, np.uint8))
    if var <= 0:
        return 1.0
    gain = 1.0
    for k, (dy, dx) in enumerate(_LAGS):
        if counts[k] < 50:
            continue
        rho = sums[k] / counts[k] / var
        # the lag and its opposite
        gain += 2.0 * rho * _kernel_lag(kernel, dy, dx) / a0
    return max(gain, 0.0)


#: The lags (dy, dx) of a pixel's nearest and diagonal neighbours, one of each opposite pair.
_LAGS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _kernel_lag(kernel: np.ndarray, dy: int, dx: int) -> float:
    """The kernel's autocorrelation at lag (dy >= 0, dx): sum k(v, u) k(v + dy, u + dx)."""
    ny, nx = kernel.shape
    a = kernel[:ny - dy, max(0, -dx):nx - max(0, dx)]
    b = kernel[dy:, max(0, dx):nx + min(0, dx)]
    return float((a * b).sum())


@njit(cache=True)
def _lag_sums(z, use):
    """The variance of z over the pixels ``use`` (about their mean), and for each lag of
    _LAGS the sum of zz(p) zz(p + lag) (zz: z less that mean) over the pixel pairs with
    both pixels in ``use``, and their number (two passes, instead of four shifted array
    products: 0.3 against 1.1 ms a frame)."""
    ny, nx = z.shape
    total = 0.0
    n = 0
    for v in range(ny):
        for u in range(nx):
            if use[v, u]:
                total += z[v, u]
                n += 1
    mean = total / n
    zz = np.zeros((ny, nx))
    var = 0.0
    for v in range(ny):
        for u in range(nx):
            if use[v, u]:
                zz[v, u] = z[v, u] - mean
                var += zz[v, u] * zz[v, u]
    sums = np.zeros(4)
    counts = np.zeros(4)
    for v in range(ny):
        for u in range(nx):
            if not use[v, u]:
                continue
            z0 = zz[v, u]
            if u + 1 < nx and use[v, u + 1]:
                sums[0] += z0 * zz[v, u + 1]
                counts[0] += 1
            if v + 1 < ny:
                if use[v + 1, u]:
                    sums[1] += z0 * zz[v + 1, u]
                    counts[1] += 1
                if u + 1 < nx and use[v + 1, u + 1]:
                    sums[2] += z0 * zz[v + 1, u + 1]
                    counts[2] += 1
                if u >= 1 and use[v + 1, u - 1]:
                    sums[3] += z0 * zz[v + 1, u - 1]
                    counts[3] += 1
    return var / n, sums, counts


def position_errors(sub: np.ndarray, model: np.ndarray, params: np.ndarray, free_s: bool,
                    fit_k: float = FIT_HALF_WIDTH, weighted: bool = False,
                    noise: tuple[float, float] | None = None) -> np.ndarray:
    """Standard error (px, per axis: the mean of x's and y's variances) of every fitted
    spot position; see the module docstring.

    Parameters
    ----------
    sub : ndarray (Y, X)
        The frame less its background map (image units).
    model : ndarray (Y, X)
        Every fitted spot rendered (no background).
    params : ndarray (N, >= 4)
        Rows x, y (px), A (integrated counts), s (px) of the fitted spots.
    free_s : bool
        Whether the fit had each spot's width free (one more parameter per spot).
    fit_k : float
        Fit window half-width in spot sigmas.
    weighted : bool
        Whether the fit weighted each pixel by 1 / its noise variance (then the
        covariance is the inverse Fisher matrix) or not (sandwich).
    noise : (v0, g), optional
        The pixel noise model if already measured (:func:`noise_model`).

    Returns
    -------
    ep : ndarray (N,), px; NaN where a spot's window holds too few pixels.
    """
    params = np.ascontiguousarray(params[:, :4], dtype=np.float64)
    n = len(params)
    if n == 0:
        return np.zeros(0)
    residual = np.subtract(sub, model)
    s_med = float(np.median(params[:, 3]))
    peak = float(np.median(params[:, 2])) / (2 * math.pi * s_med ** 2)
    v0, g = noise_model(residual, model, peak) if noise is None else noise
    out = np.empty((n, 3))
    # spots further apart than NEIGHBOUR_REACH sigmas share too little light to matter
    # (two Gaussians 4 sigma apart overlap by exp(-4) = 2 % of their peaks' product)
    reach = NEIGHBOUR_REACH * float(params[:, 3].max())
    pairs = close_pairs(params[:, :2], reach).astype(np.int64).reshape(-1, 2)
    _sandwich(np.ascontiguousarray(residual), np.ascontiguousarray(model, dtype=np.float64),
              v0, g, params, bool(free_s), bool(weighted), float(fit_k), pairs,
              SCHUR_ROUNDS, out)
    var = 0.5 * (out[:, 0] + out[:, 1]) * out[:, 2]
    # correlated noise: the x-weights of a position estimate follow d(spot)/dx
    w = _half_width(s_med, fit_k)
    u = np.arange(-w, w + 1, dtype=np.float64)
    gk = np.exp(-0.5 * (u / s_med) ** 2)
    kernel = (u * gk)[None, :] * gk[:, None]
    # (measured on the central square only, as correlated_noise_gain does)
    y0, x0 = max(0, (model.shape[0] - MAX_SIDE) // 2), max(0, (model.shape[1] - MAX_SIDE) // 2)
    mc = model[y0:y0 + MAX_SIDE, x0:x0 + MAX_SIDE]
    z = residual[y0:y0 + MAX_SIDE, x0:x0 + MAX_SIDE] / np.sqrt(v0 + g * np.maximum(mc, 0.0))
    flank = (mc >= FLANK[0] * peak) & (mc <= FLANK[1] * peak) & np.isfinite(z)
    var = var * correlated_noise_gain(z, kernel, flank)
    return np.sqrt(np.where(var >= 0, var, np.nan))
