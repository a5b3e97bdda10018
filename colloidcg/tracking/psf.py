"""The part of the spots' shape that a Gaussian does not describe, measured from the frame.

The joint fit (:mod:`colloidcg.tracking.refine`) models every spot as a Gaussian. Real
spots are often not: a bright-field particle has a bright centre inside a dark ring, an
Airy spot has bright rings, a defocused spot a flat top. Fitted alone, a symmetric
spot's mismatch leaves its centre unbiased; in a crowd, what the Gaussian leaves of each
neighbour (its ring, its lobes) is light the model gives to no one, and it pulls the
spot being fitted towards or away from that neighbour. On ring-shaped spots at
sigma/d = 0.35 this gave 0.2 px RMS where the Cramér-Rao bound is 0.11 px.

Here the mismatch is measured from the frame itself: the residual of the Gaussian fit
(image minus background minus every fitted spot) is modelled as the sum, over spots, of
one radial profile R(r) scaled by each spot's amplitude,

    residual(p) = sum_j (A_j / median A) R(|p - r_j|),

with R piecewise linear on knots every ``knot_px`` px out to ``r_max`` (a linear least
squares problem in the knot values; every pixel counts, so neighbours' overlapping
profiles are separated rather than averaged in). R is the mean non-Gaussian part of the
spots, the same for all of them (as the PSF of one microscope is). The rendered
correction is subtracted from the frame and the spots are fitted again: then a Gaussian
does describe what is left. Where R explains little of the residual (Gaussian spots),
nothing is changed (:data:`MIN_GAIN`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Knot spacing of the radial profile (px).
KNOT_PX = 0.5
#: The profile is used when it removes at least this share of the residual's variance
#: over the pixels it covers: on Gaussian spots (both sampled and pixel-integrated) it
#: removes under 1 %, on ring-shaped and Airy spots 10-60 %.
MIN_GAIN = 0.05
#: Side (px) of the central square the profile is measured on.
MAX_SIDE = 128


@njit(cache=True)
def _window(h, w, x, y, reach):
    """Pixel columns u0..u1 and rows v0..v1 (inclusive) within ``reach`` px of (x, y),
    clipped to an h x w image."""
    return (max(0, int(math.floor(x - reach))), min(w - 1, int(math.ceil(x + reach))),
            max(0, int(math.floor(y - reach))), min(h - 1, int(math.ceil(y + reach))))


@njit(cache=True)
def _dense_design(h, w, x, y, weight, scale, r_max, knot_px, n_knots, out):
    """out (h*w, n_knots) += the profile's tent functions around every spot (as
    :func:`radial_profile`), over an h x w region whose origin is at (0, 0)."""
    for i in range(x.shape[0]):
        u0, u1, v0, v1 = _window(h, w, x[i], y[i], r_max * scale[i])
        for v in range(v0, v1 + 1):
            for u in range(u0, u1 + 1):
                r = math.sqrt((u - x[i]) ** 2 + (v - y[i]) ** 2) / scale[i]
                if r >= r_max:
                    continue
                rr = r / knot_px
                k = int(rr)
                f = rr - k
                row = v * w + u
                out[row, k] += weight[i] * (1.0 - f)
                if k + 1 < n_knots:
                    out[row, k + 1] += weight[i] * f


@njit(cache=True)
def _render(h, w, x, y, weight, scale, knots, knot_px, out):
    """out (h, w) += the profile ``knots`` around every spot."""
    n_knots = knots.shape[0]
    r_max = (n_knots - 1) * knot_px
    for i in range(x.shape[0]):
        u0, u1, v0, v1 = _window(h, w, x[i], y[i], r_max * scale[i])
        for v in range(v0, v1 + 1):
            for u in range(u0, u1 + 1):
                rr = math.sqrt((u - x[i]) ** 2 + (v - y[i]) ** 2) / (scale[i] * knot_px)
                k = int(rr)
                if k >= n_knots - 1:
                    continue
                f = rr - k
                out[v, u] += weight[i] * (knots[k] * (1.0 - f) + knots[k + 1] * f)


def _f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def radial_profile(residual: np.ndarray, x: np.ndarray, y: np.ndarray, weight: np.ndarray,
                   scale: np.ndarray, r_max: float, knot_px: float = KNOT_PX,
                   max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """The radial profile common to all spots that best explains ``residual``.

    Parameters
    ----------
    residual : ndarray (Y, X)
        Frame minus background minus the fitted spots (image units).
    x, y : ndarray (N,)
        Spot centres (px).
    weight : ndarray (N,)
        Height of each spot's profile (its amplitude over the median amplitude).
    scale : ndarray (N,)
        Size of each spot's profile: spot i's profile at distance r is R(r / scale_i).
    r_max : float
        Extent of the profile (px, for scale 1); it is zero beyond.
    max_side : int
        The profile is fitted on a central square of at most this side (px; the spots
        reaching into it count): it is an average, a few hundred spots measure it.

    Returns
    -------
    knots : ndarray (K,)
        The profile's values (image units for weight 1) at r = 0, knot_px, 2 knot_px, ...
        (K = ceil(r_max / knot_px) + 1; the last is 0).
    gain : float
        Share of the residual's variance, over the pixels the profile covers, that the
        fitted profile removes (0..1).
    """
    n_knots = int(math.ceil(r_max / knot_px)) + 1
    h, w = residual.shape
    y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    ch, cw = min(h, max_side), min(w, max_side)
    x, y = _f64(x) - x0, _f64(y) - y0
    reach = r_max * np.asarray(scale)
    near = (x > -reach) & (x < cw - 1 + reach) & (y > -reach) & (y < ch - 1 + reach)
    a = np.zeros((ch * cw, n_knots))
    _dense_design(ch, cw, x[near], y[near], _f64(weight)[near], _f64(scale)[near],
                  float(r_max), float(knot_px), n_knots, a)
    b = np.asarray(residual[y0:y0 + ch, x0:x0 + cw], dtype=np.float64).ravel()
    covered = np.flatnonzero(a.any(axis=1))
    if len(covered) == 0:
        return np.zeros(n_knots), 0.0
    a, b = a[covered], b[covered]
    ata = a.T @ a
    ridge = 1e-9 * float(np.trace(ata)) / len(ata) + 1e-12
    knots = np.linalg.solve(ata + ridge * np.eye(len(ata)), a.T @ b)
    knots[-1] = 0.0        # the profile ends at r_max
    before = float(b @ b)
    after = float(np.sum((b - a @ knots) ** 2))
    gain = (before - after) / before if before > 0 else 0.0
    return knots, gain


def render_profile(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, weight: np.ndarray,
                   scale: np.ndarray, knots: np.ndarray, knot_px: float = KNOT_PX) -> np.ndarray:
    """Image (Y, X) of the profile ``knots`` around every spot (as :func:`radial_profile`)."""
    out = np.zeros(shape)
    _render(shape[0], shape[1], _f64(x), _f64(y), _f64(weight), _f64(scale), _f64(knots),
            float(knot_px), out)
    return out


def own_light_centroids(residual: np.ndarray, x: np.ndarray, y: np.ndarray, amplitude: np.ndarray,
                        sigma: np.ndarray, weight: np.ndarray, scale: np.ndarray,
                        knots: np.ndarray, radius: float,
                        knot_px: float = KNOT_PX, n_iter: int = 5, noise_gain: float = 1.0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid of each spot's own light: the fit's residual plus the spot's own model
    (Gaussian and profile), i.e. the frame less the background and every *other* spot,
    over a disc of ``radius`` x scale px moved to the centroid until it settles (at most
    ``n_iter`` times). Negative pixels count as zero.

    A symmetric spot's centroid is unbiased whatever its shape, and with its neighbours'
    modelled light removed they no longer pull it.

    Returns x, y, ep (N,) px. ``ep`` is the centroid's standard error per axis from the
    residual's variance over the disc (s^2, what no model explains: the noise and any
    misfit): ep^2 = s^2 sum (u - x)^2 / (sum I)^2, averaged over the two axes, divided
    by (1 - b)^2 since the disc moves with the centroid (b = pi R^2 I(R) / sum I, I(R)
    the light on the disc's rim: 0.31 for a Gaussian spot and R = 2 sigma) and multiplied
    by sqrt(``noise_gain``) (:func:`correlated_noise_gain`: the residual is not white). A spot
    whose centroid cannot be taken keeps its position and gets ep = NaN.
    """
    ox, oy = np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)
    ep = np.full(len(ox), np.nan)
    _own_light(np.ascontiguousarray(residual, dtype=np.float64), _f64(x), _f64(y), _f64(amplitude),
               _f64(sigma), _f64(weight), _f64(scale), _f64(knots), float(radius), float(knot_px),
               int(n_iter), float(noise_gain), ox, oy, ep)
    return ox, oy, ep


@njit(cache=True)
def _own_light(residual, x, y, amplitude, sigma, weight, scale, knots, radius, knot_px, n_iter,
               noise_gain, ox, oy, ep):
    """:func:`own_light_centroids` (a compiled loop over the spots: a bright-field frame
    has thousands, and per spot numpy spent most of a frame's time in small calls).
    Writes ox, oy, ep in place."""
    h, w = residual.shape
    nk = knots.shape[0]
    s2 = math.sqrt(2.0)
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        rad = radius * scale[i]
        half = int(math.ceil(rad)) + 2
        cu, cv = int(np.rint(xi)), int(np.rint(yi))
        u0, u1 = max(0, cu - 2 * half), min(w, cu + 2 * half + 1)
        v0, v1 = max(0, cv - 2 * half), min(h, cv + 2 * half + 1)
        if u1 - u0 < 3 or v1 - v0 < 3:
            continue
        nu, nv = u1 - u0, v1 - v0
        sg = s2 * sigma[i]
        gx = np.empty(nu)
        for a in range(nu):
            uu = u0 + a
            gx[a] = 0.5 * (math.erf((uu + 0.5 - xi) / sg) - math.erf((uu - 0.5 - xi) / sg))
        gy = np.empty(nv)
        for b in range(nv):
            vv = v0 + b
            gy[b] = 0.5 * (math.erf((vv + 0.5 - yi) / sg) - math.erf((vv - 0.5 - yi) / sg))
        own = np.empty((nv, nu))
        ks = knot_px * scale[i]
        for b in range(nv):
            for a in range(nu):
                r = math.hypot(u0 + a - xi, v0 + b - yi) / ks
                k = min(int(r), nk - 1)
                prof = 0.0
                if k < nk - 1:
                    f = r - k
                    prof = knots[k] * (1 - f) + knots[k + 1] * f
                val = residual[v0 + b, u0 + a] + amplitude[i] * gy[b] * gx[a] + weight[i] * prof
                own[b, a] = val if val > 0.0 else 0.0
        cx, cy = xi, yi
        r2 = rad * rad
        for _ in range(n_iter):
            tot = 0.0
            sx = 0.0
            sy = 0.0
            # (only the rows and columns the disc can reach: the same pixels in the same order)
            for b in range(max(0, int(math.floor(cy - rad)) - v0), min(nv, int(math.ceil(cy + rad)) - v0 + 1)):
                dv = (v0 + b - cy) ** 2
                for a in range(max(0, int(math.floor(cx - rad)) - u0), min(nu, int(math.ceil(cx + rad)) - u0 + 1)):
                    if (u0 + a - cx) ** 2 + dv <= r2:
                        q = own[b, a]
                        tot += q
                        sx += q * (u0 + a)
                        sy += q * (v0 + b)
            if tot <= 0:
                break
            nx_, ny_ = sx / tot, sy / tot
            moved = math.hypot(nx_ - cx, ny_ - cy)
            cx, cy = nx_, ny_
            if moved < 1e-3:
                break
        if math.hypot(cx - xi, cy - yi) >= half:
            continue
        tot = 0.0
        res2 = 0.0
        m2 = 0.0
        n_disc = 0
        rim = 0.0
        n_rim = 0
        reach = rad + 0.5          # the disc and its rim
        for b in range(max(0, int(math.floor(cy - reach)) - v0), min(nv, int(math.ceil(cy + reach)) - v0 + 1)):
            for a in range(max(0, int(math.floor(cx - reach)) - u0), min(nu, int(math.ceil(cx + reach)) - u0 + 1)):
                d2 = (u0 + a - cx) ** 2 + (v0 + b - cy) ** 2
                if d2 <= r2:
                    tot += own[b, a]
                    res2 += residual[v0 + b, u0 + a] ** 2
                    m2 += d2
                    n_disc += 1
                if abs(math.sqrt(d2) - rad) < 0.5:
                    rim += own[b, a]
                    n_rim += 1
        if tot <= 0:
            continue
        ox[i], oy[i] = cx, cy
        # the disc follows the centroid, which amplifies its noise by 1 / (1 - b),
        # b = pi R^2 I(R) / sum I (I(R): the light on the disc's rim)
        bb = math.pi * r2 * (rim / n_rim) / tot if n_rim > 0 else 0.0
        ep[i] = (math.sqrt(res2 / n_disc * 0.5 * m2 * noise_gain) / tot
                 / (1.0 - min(max(bb, 0.0), 0.8)))


def correlated_noise_gain(residual: np.ndarray, radius: float, kernel: np.ndarray | None = None) -> float:
    """How much more a centroid over a disc of ``radius`` px varies with the residual's
    actual spatial correlation than with white noise of the same variance.

    A centroid's error is sum_u a_u e_u with a_u = (u - c) / sum I over the disc; its
    variance is sum_u sum_v a_u a_v C(u - v), C the residual's autocovariance (measured
    over the whole frame by FFT). For white noise only C(0) counts. Returns the ratio
    (>= 0; 1 for white noise): the misfit that no model removes (neighbours' shapes,
    background) is smooth, and moves a centroid more than its variance suggests.
    ``kernel`` ((2n + 1, 2n + 1), n = ceil(radius)): other pixel weights a_u of a linear
    estimate instead of the centroid's (a template fit's: :func:`template_kernel`).
    """
    res = np.asarray(residual, dtype=np.float64)
    res = res - res.mean()
    n = int(math.ceil(radius))
    h, w = res.shape
    if h < 4 * n + 2 or w < 4 * n + 2:
        return 1.0
    # zero-padded by at least the largest lag used (2n), so that no lag wraps around; to a
    # size FFT is fast at (h + 2n + 1 itself is often prime: 5x slower)
    from scipy.fft import next_fast_len

    size = (next_fast_len(h + 2 * n + 1, real=True), next_fast_len(w + 2 * n + 1, real=True))
    f = np.fft.rfft2(res, s=size)
    acov = np.fft.irfft2(f * np.conj(f), s=size) / res.size
    lag = np.arange(-2 * n, 2 * n + 1)
    c = acov[np.ix_(lag % acov.shape[0], lag % acov.shape[1])]      # C at lags -2n..2n
    if c[2 * n, 2 * n] <= 0:
        return 1.0
    k = np.arange(-n, n + 1)
    disc = (k[None, :] ** 2 + k[:, None] ** 2) <= radius * radius
    a = k[None, :] * disc if kernel is None else np.asarray(kernel, dtype=np.float64)   # x-weights
    if a.shape != (2 * n + 1, 2 * n + 1):
        raise ValueError(f"kernel: expected shape {(2 * n + 1,) * 2}, got {a.shape}")
    from scipy.signal import correlate

    aa = correlate(a, a, mode="full")                                 # lags -2n..2n
    white = float((a * a).sum()) * c[2 * n, 2 * n]
    return max(float((aa * c).sum()) / white, 0.0)


# ----------------------------------------------------------------------------- template fit
#: Radius of the disc each spot's template is fitted over, in median fitted sigmas
#: (:func:`template_positions`). On ring-shaped spots the dark ring and the light beyond it
#: carry position; 2.5 sigmas left the RMS at the centroid's (bright-field rings, area
#: fraction 0.1: 0.096 against 0.097 px), 3.5 and 5 gave 0.084 and 0.085.
TEMPLATE_RADIUS = 3.5
#: Gauss-Newton iterations of the template fit at most, and the step (px) at which it stops.
TEMPLATE_ITER = 20
TEMPLATE_TOL = 1e-3
#: A template fit that ends farther than this (px) from its start keeps the centroid.
TEMPLATE_MAX_MOVE = 1.0


def template_positions(residual: np.ndarray, x: np.ndarray, y: np.ndarray, amplitude: np.ndarray,
                       sigma: np.ndarray, weight: np.ndarray, scale: np.ndarray, knots: np.ndarray,
                       start_x: np.ndarray, start_y: np.ndarray, radius: float,
                       knot_px: float = KNOT_PX, noise_gain: float = 1.0,
                       variance: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each spot's position from a least-squares fit of its measured template to its own
    light.

    The own light is the residual plus the spot's own model (as in
    :func:`own_light_centroids`, negative pixels kept); the template is the spot's model
    moved as a whole, A [G(u - c; sigma_i) + rho_i R(|u - c| / scale_i)] + b, with G the
    pixel-integrated unit Gaussian, R the profile ``knots`` and rho_i = weight_i /
    amplitude_i fixed (the spot's shape); c (2), A and b are fitted by Gauss-Newton with
    the template's exact derivatives (R piecewise linear), over a disc of ``radius`` x
    scale_i px around the start (``start_x``, ``start_y``: the own-light centroids),
    held fixed, every pixel weighted by 1 / ``variance`` ((Y, X) expected pixel noise
    variance, image units squared; None: uniform). The centroid weights every pixel of
    the disc by its light; the fit weights it by how much the spot's light there changes
    when the spot moves, so the dark ring and the flanks, which a centroid weights little
    or wrongly, carry the position.

    ``ep`` is the fit's standard error per axis from the sandwich (J^T W J)^-1 (J^T W
    diag(r^2) W J) (J^T W J)^-1 x n / (n - 4), r^2 each pixel's variance from its residual
    (its noise and the template's misfit; no noise model enters): twice the square of the
    residual's part that is odd about the centre (half the pixel less its mirror through
    the point nearest 2c on the pixel grid, where the mirror is in the disc; else the
    residual itself), since an even misfit moves no position (counted, ep was 1.4-2 times
    the error on isolated rings), averaged over the two axes, times
    sqrt(``noise_gain``) (:func:`correlated_noise_gain` with :func:`template_kernel`: the
    residual is not white). With W from a noise model alone, 8-bit clipped spots got ep
    / error 0.07 (their clipped pixels have no variance); with the residual's variance over
    the disc alone, Airy spots 0.56.

    Returns x, y, ep (N,) px and ok (N,) bool: False where the fit failed (fewer than 8
    pixels, a singular system, A <= 0, no convergence) or ended more than
    :data:`TEMPLATE_MAX_MOVE` px from its start; there x, y are the start and ep NaN.
    """
    ox, oy = np.array(start_x, dtype=np.float64), np.array(start_y, dtype=np.float64)
    ep = np.full(len(ox), np.nan)
    ok = np.zeros(len(ox), np.bool_)
    res = np.ascontiguousarray(residual, dtype=np.float64)
    if variance is None:
        inv_var, weighted = np.ones((1, 1)), False
    else:
        var = np.asarray(variance, dtype=np.float64)
        if var.shape != res.shape:
            raise ValueError(f"variance: expected shape {res.shape}, got {var.shape}")
        inv_var, weighted = np.ascontiguousarray(1.0 / np.maximum(var, 1e-12)), True
    _template_fit(res, _f64(x), _f64(y), _f64(amplitude), _f64(sigma), _f64(weight), _f64(scale), _f64(knots),
                  float(radius), float(knot_px), TEMPLATE_ITER, TEMPLATE_TOL, TEMPLATE_MAX_MOVE,
                  float(noise_gain), inv_var, weighted, ox, oy, ep, ok)
    return ox, oy, ep, ok


def template_kernel(sigma: float, rho: float, knots: np.ndarray, radius: float,
                    knot_px: float = KNOT_PX) -> np.ndarray:
    """The pixel weights of a template fit's x position for a spot centred on a pixel:
    dM/dx of the template G(u; sigma) + rho R(|u|) (as :func:`template_positions`) over
    the disc of ``radius`` px, on the (2n + 1, 2n + 1) grid, n = ceil(radius). By the
    template's symmetry the x estimate's weights are proportional to these."""
    n = int(math.ceil(radius))
    k = np.arange(-n, n + 1, dtype=np.float64)
    sg = math.sqrt(2.0) * sigma
    from scipy.special import erf
    gx = 0.5 * (erf((k + 0.5) / sg) - erf((k - 0.5) / sg))
    dgx = -(np.exp(-((k + 0.5) / sg) ** 2) - np.exp(-((k - 0.5) / sg) ** 2)) / (math.sqrt(2.0 * math.pi) * sigma)
    uu, vv = np.meshgrid(k, k)
    r = np.hypot(uu, vv)
    slope = np.diff(np.asarray(knots, dtype=np.float64)) / knot_px
    idx = np.minimum((r / knot_px).astype(int), len(knots) - 1)
    dr = np.where(idx < len(slope), slope[np.minimum(idx, len(slope) - 1)], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        drdx = np.where(r > 1e-12, -uu / r, 0.0)
    kern = dgx[None, :] * gx[:, None] + rho * dr * drdx
    return np.where(r <= radius, kern, 0.0)


@njit(cache=True)
def _gauss_axis(lo, c, sigma, g, dg):
    """The pixel-integrated unit Gaussian's 1D factor g[k] on pixels lo + k of a window
    (centre ``c`` px, width ``sigma`` px) and its derivative dg[k] with respect to c."""
    sg = math.sqrt(2.0) * sigma
    norm = 1.0 / (math.sqrt(2.0 * math.pi) * sigma)
    for k in range(g.shape[0]):
        a1 = (lo + k + 0.5 - c) / sg
        a0 = (lo + k - 0.5 - c) / sg
        g[k] = 0.5 * (math.erf(a1) - math.erf(a0))
        dg[k] = -(math.exp(-a1 * a1) - math.exp(-a0 * a0)) * norm


@njit(cache=True)
def _template_at(du, dv, gxa, gyb, dgxa, dgyb, knots, ks, rho):
    """The template G + rho R at a pixel (du, dv) px from its centre, and its derivatives
    with respect to the centre's x and y: (t, dt/dcx, dt/dcy). ``gxa`` ... ``dgyb``: the
    Gaussian's axis factors there (:func:`_gauss_axis`); R the piecewise linear profile
    ``knots`` every ``ks`` px."""
    nk = knots.shape[0]
    rr = math.hypot(du, dv)
    r = rr / ks
    k = min(int(r), nk - 1)
    prof = 0.0
    slope = 0.0
    if k < nk - 1:
        f = r - k
        prof = knots[k] * (1 - f) + knots[k + 1] * f
        slope = (knots[k + 1] - knots[k]) / ks
    jx = dgxa * gyb
    jy = gxa * dgyb
    if rr > 1e-12:
        jx -= rho * slope * du / rr
        jy -= rho * slope * dv / rr
    return gxa * gyb + rho * prof, jx, jy


@njit(cache=True)
def _template_fit(residual, x, y, amplitude, sigma, weight, scale, knots, radius, knot_px, n_iter, tol,
                  max_move, noise_gain, inv_var, weighted, ox, oy, ep, ok):
    """:func:`template_positions` (compiled loop over the spots). Writes ox, oy, ep, ok."""
    h, w = residual.shape
    nk = knots.shape[0]
    jtj = np.empty((4, 4))
    jtr = np.empty(4)
    for i in range(x.shape[0]):
        if amplitude[i] <= 0.0:
            continue
        rad = radius * scale[i]
        sx, sy = ox[i], oy[i]
        cu, cv = int(np.rint(sx)), int(np.rint(sy))
        half = int(math.ceil(rad)) + 1
        u0, u1 = max(0, cu - half), min(w, cu + half + 1)
        v0, v1 = max(0, cv - half), min(h, cv + half + 1)
        nu, nv = u1 - u0, v1 - v0
        if nu < 3 or nv < 3:
            continue
        ks = knot_px * scale[i]
        rho = weight[i] / amplitude[i]
        # the own light on the window and the disc (fixed around the start)
        own = np.empty((nv, nu))
        use = np.zeros((nv, nu), np.bool_)
        n_use = 0
        gx = np.empty(nu)
        dgx = np.empty(nu)
        gy = np.empty(nv)
        dgy = np.empty(nv)
        _gauss_axis(u0, x[i], sigma[i], gx, dgx)        # the own model, at the joint fit's place
        _gauss_axis(v0, y[i], sigma[i], gy, dgy)
        for b in range(nv):
            gyb = gy[b]
            for a in range(nu):
                gxa = gx[a]
                r = math.hypot(u0 + a - x[i], v0 + b - y[i]) / ks
                k = min(int(r), nk - 1)
                prof = 0.0
                if k < nk - 1:
                    f = r - k
                    prof = knots[k] * (1 - f) + knots[k + 1] * f
                own[b, a] = residual[v0 + b, u0 + a] + amplitude[i] * gyb * gxa + weight[i] * prof
                if (u0 + a - sx) ** 2 + (v0 + b - sy) ** 2 <= rad * rad:
                    use[b, a] = True
                    n_use += 1
        if n_use < 8:
            continue
        cx, cy, A, bg = sx, sy, amplitude[i], 0.0
        converged = False
        prev_ss = np.inf
        last = np.zeros(4)
        for it in range(n_iter):
            _gauss_axis(u0, cx, sigma[i], gx, dgx)
            _gauss_axis(v0, cy, sigma[i], gy, dgy)
            jtj[:, :] = 0.0
            jtr[:] = 0.0
            ss = 0.0
            for b in range(nv):
                for a in range(nu):
                    if not use[b, a]:
                        continue
                    t, jx, jy = _template_at(u0 + a - cx, v0 + b - cy, gx[a], gy[b], dgx[a], dgy[b],
                                             knots, ks, rho)
                    wt = inv_var[v0 + b, u0 + a] if weighted else 1.0
                    j0, j1, j2, j3 = A * jx, A * jy, t, 1.0
                    res = own[b, a] - (A * t + bg)
                    ss += wt * res * res
                    j0w, j1w, j2w, j3w = wt * j0, wt * j1, wt * j2, wt * j3
                    jtj[0, 0] += j0w * j0
                    jtj[0, 1] += j0w * j1
                    jtj[0, 2] += j0w * j2
                    jtj[0, 3] += j0w * j3
                    jtj[1, 1] += j1w * j1
                    jtj[1, 2] += j1w * j2
                    jtj[1, 3] += j1w * j3
                    jtj[2, 2] += j2w * j2
                    jtj[2, 3] += j2w * j3
                    jtj[3, 3] += j3w * j3
                    jtr[0] += j0w * res
                    jtr[1] += j1w * res
                    jtr[2] += j2w * res
                    jtr[3] += j3w * res
            if ss > prev_ss:
                # the last step overshot (the profile's slope is piecewise constant):
                # go back half of it; once that is under the tolerance, the point before
                # it is the minimum along the step
                for p in range(4):
                    last[p] *= 0.5
                cx -= last[0]
                cy -= last[1]
                A -= last[2]
                bg -= last[3]
                if math.hypot(last[0], last[1]) < tol:
                    cx -= last[0]
                    cy -= last[1]
                    A -= last[2]
                    bg -= last[3]
                    converged = True
                    break
                continue
            prev_ss = ss
            for p in range(4):
                for q in range(p):
                    jtj[p, q] = jtj[q, p]
            if np.linalg.det(jtj) <= 0.0:
                break
            step = np.linalg.solve(jtj, jtr)
            for p in range(4):
                last[p] = step[p]
            cx += step[0]
            cy += step[1]
            A += step[2]
            bg += step[3]
            if A <= 0.0 or math.hypot(cx - sx, cy - sy) > max_move:
                break
            if math.hypot(step[0], step[1]) < tol:
                converged = True
                break
        if not converged or A <= 0.0 or math.hypot(cx - sx, cy - sy) > max_move:
            continue
        # covariance at the solution
        jtj[:, :] = 0.0
        meat = np.zeros((4, 4))
        _gauss_axis(u0, cx, sigma[i], gx, dgx)
        _gauss_axis(v0, cy, sigma[i], gy, dgy)
        resid = np.zeros((nv, nu))
        jac = np.zeros((nv, nu, 3))          # the template and its x, y derivatives
        for b in range(nv):
            for a in range(nu):
                if use[b, a]:
                    t, jx, jy = _template_at(u0 + a - cx, v0 + b - cy, gx[a], gy[b], dgx[a], dgy[b], knots, ks,
                                             rho)
                    jac[b, a, 0], jac[b, a, 1], jac[b, a, 2] = t, jx, jy
                    resid[b, a] = own[b, a] - (A * t + bg)
        # each pixel's variance from the part of the residual that is odd about the spot's
        # centre (the pixel less its mirror image through the centre pixel nearest 2c, /2,
        # squared and doubled): the even part (a symmetric misfit of the template) moves
        # no position, and counted it made ep 1.4-2 times the error on isolated rings
        mu, mv = int(np.rint(2.0 * cx)) - 2 * u0, int(np.rint(2.0 * cy)) - 2 * v0   # a + mirror's a
        for b in range(nv):
            for a in range(nu):
                if not use[b, a]:
                    continue
                jv = (A * jac[b, a, 1], A * jac[b, a, 2], jac[b, a, 0], 1.0)
                wt = inv_var[v0 + b, u0 + a] if weighted else 1.0
                am, bm = mu - a, mv - b
                if 0 <= am < nu and 0 <= bm < nv and use[bm, am]:
                    odd = 0.5 * (resid[b, a] - resid[bm, am])
                    r2 = 2.0 * odd * odd
                else:
                    r2 = resid[b, a] * resid[b, a]
                for p in range(4):
                    for q in range(4):
                        jtj[p, q] += wt * jv[p] * jv[q]
                        meat[p, q] += wt * wt * r2 * jv[p] * jv[q]
        if np.linalg.det(jtj) <= 0.0:
            continue
        # the sandwich (J^T W J)^-1 (J^T W diag(r^2) W J) (J^T W J)^-1: each pixel's own
        # squared residual stands for its variance (noise and misfit), no noise model needed
        bread = np.linalg.inv(jtj)
        cov = bread @ meat @ bread * (n_use / max(n_use - 4, 1))
        ox[i], oy[i] = cx, cy
        ep[i] = math.sqrt(max(0.5 * (cov[0, 0] + cov[1, 1]) * noise_gain, 0.0))
        ok[i] = True
