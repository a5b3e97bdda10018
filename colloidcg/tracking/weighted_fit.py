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
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .refine import (FIT_HALF_WIDTH, MAX_HALF_WIDTH, OUTSIDE_LIMIT, RENDER_HALF_WIDTH,
                     _add_outer, _gauss1d, _half_width, _profile)

#: After the unweighted joint fit, positions and amplitudes are refitted by least squares
#: weighted by each pixel's noise variance (Poisson + read noise, measured from the fit's
#: residual): this many Gauss-Seidel sweeps of WEIGHTED_NEWTON Gauss-Newton steps (more
#: change nothing: photons / 3 0.151 px with 1, 2 or 4 sweeps, 2 or 4 steps). Where
#: the spots are bright above a faint background an unweighted fit is not efficient.
WEIGHTED_SWEEPS = 1
WEIGHTED_NEWTON = 2
#: The weighted fit refines the unweighted one: a spot it would move further than this
#: many sigmas keeps its unweighted position (at a dish's wall and black frame borders,
#: with 1 sigma allowed, precision fell 0.97+ -> 0.968 on tests/test_tracking_robust.py's
#: dish analogue; with 0.25 six conditions of the benchmark checked (base, photons / 3,
#: photons / 10, dark, gauss_pixel s/d 0.20, soft bidisperse) moved by at most 0.001 px).
WEIGHTED_MAX_SHIFT = 0.25


@njit(cache=True)
def _weighted_sweep(sub, canvas, params, order, v0, g, n_newton, fit_k, render_k, max_shift):
    """One Gauss-Seidel sweep of weighted least squares: each spot's x, y and A refitted
    (``n_newton`` Gauss-Newton steps, width and background held) against ``sub`` less the
    other spots, every pixel weighted by 1 / (v0 + g * model), its noise variance
    (:func:`colloidcg.tracking.uncertainty.noise_model`). ``canvas`` (the model of all
    spots) is updated after each spot. A spot whose step fails or moves it more than
    ``max_shift`` px keeps its parameters. Returns the number of spots refitted."""
    ny, nx = sub.shape
    m = 2 * MAX_HALF_WIDTH + 1
    gx = np.empty(m)
    dgx = np.empty(m)
    sgx = np.empty(m)
    mx = np.empty(m)
    ox = np.empty(m)
    gy = np.empty(m)
    dgy = np.empty(m)
    sgy = np.empty(m)
    my = np.empty(m)
    oy = np.empty(m)
    rx = np.empty(m)
    ry = np.empty(m)
    hx = np.empty(m)
    hy = np.empty(m)
    jac = np.empty(3)
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
        _gauss1d(cu, wr, x0, s, nx, rx)
        _gauss1d(cv, wr, y0, s, ny, ry)
        x, y, a = x0, y0, a0
        ok = True
        for it in range(n_newton):
            _profile(cu, w, x, s, nx, gx, dgx, sgx, mx, ox)
            _profile(cv, w, y, s, ny, gy, dgy, sgy, my, oy)
            h = np.zeros((3, 3))
            b = np.zeros(3)
            for kv in range(2 * w + 1):
                v = cv - w + kv
                if v < 0 or v >= ny:
                    continue
                for ku in range(2 * w + 1):
                    u = cu - w + ku
                    if u < 0 or u >= nx:
                        continue
                    mod = canvas[v, u]
                    own0 = a0 * rx[ku + wr - w] * ry[kv + wr - w]
                    t = sub[v, u] - mod + own0
                    var = v0 + g * max(mod, 0.0)
                    if var <= 0:
                        continue
                    wt = 1.0 / var
                    r = t - a * gx[ku] * gy[kv]
                    jac[0] = a * dgx[ku] * gy[kv]
                    jac[1] = a * gx[ku] * dgy[kv]
                    jac[2] = gx[ku] * gy[kv]
                    for p in range(3):
                        b[p] += wt * jac[p] * r
                        for q in range(3):
                            h[p, q] += wt * jac[p] * jac[q]
            finite = True
            for v_ in h.ravel():
                finite = finite and math.isfinite(v_)
            for v_ in b:
                finite = finite and math.isfinite(v_)
            if not finite or np.linalg.det(h) <= 0:
                ok = False
                break
            step = np.linalg.solve(h, b)
            shift = math.sqrt(step[0] ** 2 + step[1] ** 2)
            if shift > 1.0:
                step /= shift
            x += step[0]
            y += step[1]
            a += step[2]
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
        _add_outer(canvas, cu, cv, wr, -a0, rx, ry, 0.0, rx, ry)
        _add_outer(canvas, nu, nv, wr, a, hx, hy, 0.0, hx, hy)
        params[i, 0] = x
        params[i, 1] = y
        params[i, 2] = a
        done += 1
    return done


def weighted_polish(sub: np.ndarray, model, sigma: float, sweeps: int | None = None
                    ) -> tuple[float, float]:
    """Refit every spot's x, y and A by weighted least squares, the weights 1 / (pixel
    noise variance) with the variance measured from the current fit's residual
    (:func:`colloidcg.tracking.uncertainty.noise_model`), ``sweeps`` Gauss-Seidel sweeps
    from the unweighted fit (``model``: :class:`_Model`, updated in place; its render
    caches are left stale). Returns the noise model (v0, g)."""
    from .uncertainty import noise_model

    params = model.params
    if len(params) == 0:
        return 1.0, 0.0
    peak = float(np.median(params[:, 2])) / (2 * np.pi * float(np.median(params[:, 3])) ** 2)
    v0, g = noise_model(np.subtract(sub, model.canvas), model.canvas, peak)
    order = np.arange(len(params))
    for _ in range(WEIGHTED_SWEEPS if sweeps is None else sweeps):
        _weighted_sweep(sub, model.canvas, params, order, v0, g, WEIGHTED_NEWTON,
                        FIT_HALF_WIDTH, RENDER_HALF_WIDTH, WEIGHTED_MAX_SHIFT * float(sigma))
        order = order[::-1].copy()
    return v0, g
