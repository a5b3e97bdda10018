"""Noise-weighted final fit: positions and amplitudes refitted with every pixel weighted
by its noise variance.

The joint fit of :mod:`colloidcg.tracking.refine` is unweighted least squares, which is
efficient only when every pixel has the same noise. With Poisson (shot) noise the
variance grows with the light, v(u, v) = v0 + g * model(u, v), and where spots are bright
above a faint background the unweighted fit loses precision; weighting each pixel by
1 / v is the maximum-likelihood fit for Gaussian noise of known variance (the standard
approach of single-molecule localisation, e.g. Mortensen et al., Nat. Methods 7, 377
(2010)). The variance model (v0, g) is measured from the unweighted fit's residual
(:func:`colloidcg.tracking.uncertainty.noise_model`), never taken from a renderer.

The widths are held in this fit. Where the unweighted fit left each spot its own width,
those widths are first pulled towards their population's (:func:`shrink_widths`): at
low photon counts a spot's free width is mostly noise, and that noise, passed on to
the position through the neighbours' overlap and the window's edges, is what kept the
positions above the Cramér-Rao bound, which takes the width as known
(:mod:`colloidcg.tracking.crb`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .refine import (FIT_HALF_WIDTH, MAX_HALF_WIDTH, OUTSIDE_LIMIT, RENDER_HALF_WIDTH,
                     MAX_POPULATIONS, SAFE_FASTMATH, _add_outer, _gauss1d, _half_width, _Model,
                     _profile, width_populations)

#: After the unweighted joint fit, positions and amplitudes are refitted by least squares
#: weighted by each pixel's noise variance (Poisson + read noise, measured from the fit's
#: residual): this many Gauss-Seidel sweeps of WEIGHTED_NEWTON Gauss-Newton steps (more
#: change nothing: photons / 3 0.151 px with 1, 2 or 4 sweeps, 2 or 4 steps; one step
#: against two: the same RMS to 0.001 px on base, phi 0.85, photons / 3 and / 10, dark
#: particles and the issue 15 case of ``benchmarks/tracking.py --conditions quick``).
#: Where the spots are bright above a faint background an unweighted fit is not efficient.
WEIGHTED_SWEEPS = 1
WEIGHTED_NEWTON = 1
#: The weighted fit refines the unweighted one: a spot it would move further than this
#: many sigmas keeps its unweighted position (at a dish's wall and black frame borders,
#: with 1 sigma allowed, precision fell 0.97+ -> 0.968 on tests/test_tracking_robust.py's
#: dish analogue; with 0.25 six conditions of the benchmark checked (base, photons / 3,
#: photons / 10, dark, gauss_pixel s/d 0.20, soft bidisperse) moved by at most 0.001 px).
WEIGHTED_MAX_SHIFT = 0.25
#: Before the weighted fit each spot's width, fitted freely by the unweighted fit, is
#: pulled towards its population's width by as much as its scatter is noise
#: (:func:`shrink_widths`). At low photon counts the free widths' noise is what keeps the
#: positions above the Cramér-Rao bound (which takes the width as known): photons / 3 of
#: the conditions table 0.151 -> 0.149 px (bound 0.146; 0.152 -> 0.149 and 0.153 -> 0.150
#: on two other seeds), photons / 10 0.313 -> 0.305, base 0.080 -> 0.078; crowded frames,
#: whose widths are already one per population, are untouched. False: every spot keeps
#: its free width.
SHRINK_WIDTHS = True
#: A population needs at least this many spots for the spread of its widths to be measured
#: (else its widths stay).
SHRINK_MIN_SPOTS = 10
#: ... and its widths' median standard error must be at least this fraction of their
#: median. Better measured widths are left alone: there what they differ by is the spots'
#: real differences and the model's local misfit (the background map, the PSF's shape),
#: which a spot's own width absorbs. The median se / width is 0.029 on photons / 3, 0.015
#: on base and psf airy, 0.004-0.008 on d 20 and d 30 ratio 1.4 and photons 200 d^2; on
#: d 30 ratio 1.4 shrinking there cost 0.0006-0.0012 px over three seeds.
SHRINK_MIN_NOISE = 0.01
#: ... measured on at most this many spots of each population, evenly spaced in the
#: detection order (computing every spot's variance cost about a tenth of a dense frame's
#: locating, mostly for frames whose widths are then left alone). On five populations of
#: 201-793 spots (dense benchmark, photons / 3, dense bidisperse analogue) the sample's
#: median se / width was within 1.3 % of the whole population's, so only a population
#: that close to SHRINK_MIN_NOISE can be decided differently.
SHRINK_SAMPLE = 128
#: No width moves by more than this many of its own standard errors (the limited-
#: translation rule of Efron & Morris: a spot whose width really differs, e.g. one of
#: another size that the grouping put here, keeps most of its own; 1, 2 or no limit gave
#: photons / 3 0.149 px and d 20, ratio 1.4, phi 0.8 0.090 px alike).
SHRINK_LIMIT = 1.0




@njit(cache=True, fastmath=SAFE_FASTMATH)
def _weighted_sweep(sub, canvas, ivar, params, order, n_newton, fit_k, render_k, max_shift):
    """One Gauss-Seidel sweep of weighted least squares: each spot's x, y and A refitted
    (``n_newton`` Gauss-Newton steps, width and background held) against ``sub`` less the
    other spots, every pixel weighted by ``ivar`` (Y, X), 1 / its noise variance.
    ``canvas`` (the model of all spots) is updated after each spot. A spot whose step
    fails or moves it more than ``max_shift`` px keeps its parameters. Returns the number
    of spots refitted."""
    ny, nx = sub.shape
    m = 2 * MAX_HALF_WIDTH + 1
    gx, dgx, sgx, mx, ox = _profile_buffers(m)
    gy, dgy, sgy, my, oy = _profile_buffers(m)
    rx = np.empty(m)
    ry = np.empty(m)
    hx = np.empty(m)
    hy = np.empty(m)
    done = 0
    for j in range(order.shape[0]):
        i = order[j]
        x0, y0, a0, s = params[i, 0], params[i, 1], params[i, 2], params[i, 3]
        if not (math.isfinite(x0) and math.isfinite(y0) and a0 > 0 and s > 0):
            continue
        w = _half_width(s, fit_k)
        wr = _half_width(s, render_k)
        cu = int(np.rint(x0))
        cv = int(np.rint(y0))
        # the fit window's part inside the frame
        ka, kb = max(0, w - cu), min(2 * w + 1, nx - cu + w)
        la, lb = max(0, w - cv), min(2 * w + 1, ny - cv + w)
        _gauss1d(cu, wr, x0, s, nx, rx)
        _gauss1d(cv, wr, y0, s, ny, ry)
        x, y, a = x0, y0, a0
        ok = True
        for it in range(n_newton):
            _profile(cu, w, x, s, nx, gx, dgx, sgx, mx, ox)
            _profile(cv, w, y, s, ny, gy, dgy, sgy, my, oy)
            # normal equations H step = b, H symmetric (6 sums), b (3 sums)
            h00 = h01 = h02 = h11 = h12 = h22 = 0.0
            b0 = b1 = b2 = 0.0
            # the window's in-frame columns as slices indexed from 0, so that the loop
            # needs no negative-index handling and compiles to vector loads
            gxs = gx[ka:kb]
            dgxs = dgx[ka:kb]
            rxs = rx[ka + wr - w:kb + wr - w]
            u0 = cu - w + ka
            for kv in range(la, lb):
                v = cv - w + kv
                gyv = gy[kv]
                dyv = a * dgy[kv]
                ryv = a0 * ry[kv + wr - w]
                ivs = ivar[v, u0:u0 + kb - ka]
                sbs = sub[v, u0:u0 + kb - ka]
                cvs = canvas[v, u0:u0 + kb - ka]
                for k in range(kb - ka):
                    wt = ivs[k]
                    gg = gxs[k] * gyv
                    # the data less the other spots (own old rendering added back)
                    r = sbs[k] - cvs[k] + ryv * rxs[k] - a * gg
                    j0 = a * dgxs[k] * gyv
                    j1 = gxs[k] * dyv
                    wj0 = wt * j0
                    wj1 = wt * j1
                    wj2 = wt * gg
                    h00 += wj0 * j0
                    h01 += wj0 * j1
                    h02 += wj0 * gg
                    h11 += wj1 * j1
                    h12 += wj1 * gg
                    h22 += wj2 * gg
                    b0 += wj0 * r
                    b1 += wj1 * r
                    b2 += wj2 * r
            # solve by cofactors (H positive definite, else the step fails)
            c00 = h11 * h22 - h12 * h12
            c01 = h12 * h02 - h01 * h22
            c02 = h01 * h12 - h11 * h02
            det = h00 * c00 + h01 * c01 + h02 * c02
            if not (math.isfinite(det) and det > 0 and math.isfinite(b0)
                    and math.isfinite(b1) and math.isfinite(b2)):
                ok = False
                break
            c11 = h00 * h22 - h02 * h02
            c12 = h02 * h01 - h00 * h12
            c22 = h00 * h11 - h01 * h01
            s0 = (c00 * b0 + c01 * b1 + c02 * b2) / det
            s1 = (c01 * b0 + c11 * b1 + c12 * b2) / det
            s2 = (c02 * b0 + c12 * b1 + c22 * b2) / det
            shift = math.sqrt(s0 * s0 + s1 * s1)
            if shift > 1.0:
                s0 /= shift
                s1 /= shift
                s2 /= shift
            x += s0
            y += s1
            a += s2
            if not (math.isfinite(x) and math.isfinite(y) and a > 0):
                ok = False
                break
            if shift < 1e-4:
                break
        if not ok or (x - x0) ** 2 + (y - y0) ** 2 > max_shift * max_shift:
            continue
        lim = OUTSIDE_LIMIT * s
        x = min(max(x, -0.5 - lim), nx - 0.5 + lim)
        y = min(max(y, -0.5 - lim), ny - 0.5 + lim)
        nu = int(np.rint(x))
        nv = int(np.rint(y))
        _gauss1d(nu, wr, x, s, nx, hx)
        _gauss1d(nv, wr, y, s, ny, hy)
        if nu == cu and nv == cv:   # (the usual case) old out and new in, one pass
            _add_outer(canvas, cu, cv, wr, -a0, rx, ry, a, hx, hy)
        else:
            _add_outer(canvas, cu, cv, wr, -a0, rx, ry, 0.0, rx, ry)
            _add_outer(canvas, nu, nv, wr, a, hx, hy, 0.0, hx, hy)
        params[i, 0] = x
        params[i, 1] = y
        params[i, 2] = a
        done += 1
    return done


@njit(cache=True)
def _profile_buffers(m):
    """Scratch for one axis of ``_profile`` (m = window length): g, dg/dx, dg/ds, mask,
    offset."""
    return np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m)


@njit(cache=True, fastmath=SAFE_FASTMATH)
def _width_variances(canvas, params, v0, g, fit_k, out):
    """out[i] = the variance (px^2) of spot i's width as the unweighted least-squares fit
    of x, y, A and s estimates it in its window, the other spots held: the sandwich
    H^-1 (J^T V J) H^-1 (element s, s), H = J^T J, V the pixel variance v0 + g * canvas.
    NaN where the window is degenerate.

    Every Jacobian column is a sum of separable terms X(u) Y(v) (x: A gx' gy, y: A gx gy',
    A: gx gy, s: A (gx_s gy + gx gy_s)), so H is a sum of products of 1D sums. With
    z = H^-1 e_s the wanted element is z^T (v0 H + g C) z = v0 z_s + g sum canvas d^2,
    C = J^T diag(canvas) J and d = J z, whose value at a pixel is three 1D products: one
    pass of the window instead of twenty sums per pixel (the same numbers to rounding)."""
    ny, nx = canvas.shape
    m = 2 * MAX_HALF_WIDTH + 1
    gx, dgx, sgx, mx, ox = _profile_buffers(m)
    gy, dgy, sgy, my, oy = _profile_buffers(m)
    dx0 = np.empty(m)    # the 1D factors of d = J z along x, paired with gy, gy', gy_s
    dx1 = np.empty(m)
    dx2 = np.empty(m)
    for i in range(params.shape[0]):
        out[i] = np.nan
        x, y, a, s = params[i, 0], params[i, 1], params[i, 2], params[i, 3]
        if not (math.isfinite(x) and math.isfinite(y) and a > 0 and s > 0):
            continue
        w = _half_width(s, fit_k)
        cu = int(np.rint(x))
        cv = int(np.rint(y))
        ka, kb = max(0, w - cu), min(2 * w + 1, nx - cu + w)
        la, lb = max(0, w - cv), min(2 * w + 1, ny - cv + w)
        if kb - ka < 3 or lb - la < 3:
            continue
        _profile(cu, w, x, s, nx, gx, dgx, sgx, mx, ox)
        _profile(cv, w, y, s, ny, gy, dgy, sgy, my, oy)
        # 1D sums of products over the window (the profiles are 0 outside the frame)
        xgg, xdd, xss, xdg, xds, xgs = _products(gx, dgx, sgx, ka, kb)
        ygg, ydd, yss, ydg, yds, ygs = _products(gy, dgy, sgy, la, lb)
        a2 = a * a
        h00 = a2 * xdd * ygg
        h01 = a2 * xdg * ydg
        h02 = a * xdg * ygg
        h03 = a2 * (xds * ygg + xdg * ygs)
        h11 = a2 * xgg * ydd
        h12 = a * xgg * ydg
        h13 = a2 * (xgs * ydg + xgg * yds)
        h22 = xgg * ygg
        h23 = a * (xgs * ygg + xgg * ygs)
        h33 = a2 * (xss * ygg + 2.0 * xgs * ygs + xgg * yss)
        z0, z1, z2, z3, ok = _last_column_of_inverse(h00, h01, h02, h03, h11, h12, h13,
                                                     h22, h23, h33)
        if not ok:
            continue
        # d(u, v) = dx0(u) gy(v) + dx1(u) gy'(v) + dx2(u) gy_s(v)
        for k in range(ka, kb):
            dx0[k] = a * z0 * dgx[k] + z2 * gx[k] + a * z3 * sgx[k]
            dx1[k] = a * z1 * gx[k]
            dx2[k] = a * z3 * gx[k]
        cd = 0.0
        # (slices indexed from 0: no negative-index handling, vector loads)
        d0, d1, d2 = dx0[ka:kb], dx1[ka:kb], dx2[ka:kb]
        u0 = cu - w + ka
        for kv in range(la, lb):
            v = cv - w + kv
            g0, g1, g2 = gy[kv], dgy[kv], sgy[kv]
            cs = canvas[v, u0:u0 + kb - ka]
            for k in range(kb - ka):
                d = d0[k] * g0 + d1[k] * g1 + d2[k] * g2
                cd += max(cs[k], 0.0) * d * d
        c33 = v0 * z3 + g * cd
        if c33 > 0:
            out[i] = c33


@njit(cache=True, fastmath=SAFE_FASTMATH)
def _products(g, dg, sg, lo, hi):
    """Sums over entries lo..hi-1 of the six products of a 1D profile g, its position
    derivative dg and its width derivative sg: (g g, dg dg, sg sg, dg g, dg sg, g sg)."""
    gg = dd = ss = dgg = ds = gs = 0.0
    for k in range(lo, hi):
        gg += g[k] * g[k]
        dd += dg[k] * dg[k]
        ss += sg[k] * sg[k]
        dgg += dg[k] * g[k]
        ds += dg[k] * sg[k]
        gs += g[k] * sg[k]
    return gg, dd, ss, dgg, ds, gs


@njit(cache=True)
def _last_column_of_inverse(h00, h01, h02, h03, h11, h12, h13, h22, h23, h33):
    """The last column (z0..z3) of the inverse of the symmetric 4 x 4 matrix H (upper
    entries given), by its LDL^T factorisation; ok False unless H is positive definite
    (a fit window that does not determine all four parameters)."""
    if not (h00 > 0):
        return 0.0, 0.0, 0.0, 0.0, False
    l10 = h01 / h00
    l20 = h02 / h00
    l30 = h03 / h00
    d1 = h11 - l10 * h01
    if not (d1 > 0):
        return 0.0, 0.0, 0.0, 0.0, False
    l21 = (h12 - l20 * h01) / d1
    l31 = (h13 - l30 * h01) / d1
    d2 = h22 - l20 * h02 - l21 * l21 * d1
    if not (d2 > 0):
        return 0.0, 0.0, 0.0, 0.0, False
    l32 = (h23 - l30 * h02 - l31 * l21 * d1) / d2
    d3 = h33 - l30 * h03 - l31 * l31 * d1 - l32 * l32 * d2
    if not (d3 > 0):
        return 0.0, 0.0, 0.0, 0.0, False
    # solve L D L^T z = e_3: L y = e_3 gives y = e_3, D w = y gives w = e_3 / d3,
    # then back-substitute L^T z = w
    z3 = 1.0 / d3
    z2 = -l32 * z3
    z1 = -l21 * z2 - l31 * z3
    z0 = -l10 * z1 - l20 * z2 - l30 * z3
    return z0, z1, z2, z3, True


def shrink_widths(params: np.ndarray, canvas: np.ndarray, noise: tuple[float, float],
                  fit_k: float = FIT_HALF_WIDTH) -> np.ndarray:
    """Widths (N,) px with each spot's freely fitted width pulled towards its
    population's, by how much of its scatter is noise.

    Within a population (:func:`colloidcg.tracking.refine.width_populations`) the fitted
    width of spot i is s_i = t_i + e_i: its true width t_i, spread about the population's
    m with variance tau^2, plus the fit's noise e_i of variance se_i^2
    (:func:`_width_variances`). The estimate of t_i with least mean squared error is
    m + (1 - B_i) (s_i - m), B_i = se_i^2 / (se_i^2 + tau^2) (the empirical-Bayes, James-
    Stein shrinkage; B. Efron & C. Morris, JASA 70, 311 (1975)), with m the median and
    tau^2 = max(0, robust variance of s - median se^2). Where the widths scatter no more
    than their noise (dim spots of one size) every spot gets m; where they scatter for a
    reason (different sizes within a population, a model that fits ring-shaped spots
    unevenly) each keeps nearly its own. Widths already shared (one value per population),
    and those of a population whose median standard error is below SHRINK_MIN_NOISE of
    its median width (bright spots), are returned unchanged.

    ``params`` (N, >= 4): x, y (px), A (counts), s (px); ``canvas`` (Y, X) the fitted
    spots rendered; ``noise`` the pixel noise model (v0, g) of
    :func:`colloidcg.tracking.uncertainty.noise_model`.
    """
    s = np.asarray(params[:, 3], dtype=np.float64)
    out = s.copy()
    # (widths already shared, e.g. by refine's shared-width stage, have no within-
    # population scatter to measure and width_populations could not split them)
    if len(s) < SHRINK_MIN_SPOTS or len(np.unique(s)) <= MAX_POPULATIONS:
        return out
    _, labels = width_populations(s)
    canvas = np.ascontiguousarray(canvas, dtype=np.float64)
    rows = np.ascontiguousarray(params[:, :4], dtype=np.float64)
    se2 = np.full(len(s), np.nan)

    def variances(idx):
        out = np.empty(len(idx))
        _width_variances(canvas, rows[idx], float(noise[0]), float(noise[1]), float(fit_k), out)
        se2[idx] = out

    for q in np.unique(labels):
        idx = np.flatnonzero((labels == q) & np.isfinite(s) & (s > 0))
        # whether the widths are noisy enough to shrink is decided on an evenly spaced
        # sample of the population (all of it when small): most frames' spots are bright
        # and the rest of their variances would be computed for nothing
        sample = np.unique(idx[np.linspace(0, len(idx) - 1, min(len(idx), SHRINK_SAMPLE)
                                           ).astype(np.int64)]) if len(idx) else idx
        variances(sample)
        ok = sample[np.isfinite(se2[sample])]
        if len(ok) < SHRINK_MIN_SPOTS:
            continue
        if np.sqrt(float(np.median(se2[ok]))) < SHRINK_MIN_NOISE * float(np.median(s[ok])):
            continue      # widths measured well: what they differ by is not noise
        variances(np.setdiff1d(idx, sample))
        ok = idx[np.isfinite(se2[idx])]
        m = float(np.median(s[ok]))
        spread2 = (1.4826 * float(np.median(np.abs(s[ok] - m)))) ** 2
        tau2 = max(0.0, spread2 - float(np.median(se2[ok])))
        b = se2[ok] / (se2[ok] + tau2) if tau2 > 0 else np.ones(len(ok))
        # limited translation: no width moves by more than SHRINK_LIMIT of its own
        # standard error (a spot whose width is really different, e.g. one of another
        # size that the grouping put here, keeps most of its own)
        step = np.clip(b * (s[ok] - m), -SHRINK_LIMIT * np.sqrt(se2[ok]),
                       SHRINK_LIMIT * np.sqrt(se2[ok]))
        out[ok] = s[ok] - step
    return out


def weighted_polish(sub: np.ndarray, model, sigma: float, sweeps: int | None = None
                    ) -> tuple[float, float]:
    """Refit every spot's x, y and A by weighted least squares, the weights 1 / (pixel
    noise variance) with the variance measured from the unweighted fit's residual
    (:func:`colloidcg.tracking.uncertainty.noise_model`), ``sweeps`` Gauss-Seidel sweeps
    from the unweighted fit (``model``: :class:`_Model`, updated in place; its render
    caches are left stale), the widths first shrunk towards their populations'
    (:func:`shrink_widths`, with SHRINK_WIDTHS) and then held. ``sub`` (Y, X): the frame
    less its background map. Returns the noise model (v0, g)."""
    from .uncertainty import inverse_variance, noise_model

    params = model.params
    if len(params) == 0:
        return 1.0, 0.0
    peak = float(np.median(params[:, 2])) / (2 * np.pi * float(np.median(params[:, 3])) ** 2)
    v0, g = noise_model(np.subtract(sub, model.canvas), model.canvas, peak)
    if SHRINK_WIDTHS:
        widths = shrink_widths(params, model.canvas, (v0, g))
        if not np.array_equal(widths, params[:, 3]):
            params[:, 3] = widths
            model.canvas[...] = _Model(model.canvas.shape, params).canvas
    # the weights: 1 / the noise variance of the unweighted fit's model, held through
    # the sweeps (the variance is a property of the expected image, not of each step)
    ivar = inverse_variance(model.canvas, v0, g)
    order = np.arange(len(params))
    for _ in range(WEIGHTED_SWEEPS if sweeps is None else sweeps):
        _weighted_sweep(sub, model.canvas, ivar, params, order, WEIGHTED_NEWTON,
                        FIT_HALF_WIDTH, RENDER_HALF_WIDTH, WEIGHTED_MAX_SHIFT * float(sigma))
        order = order[::-1].copy()
    return v0, g
