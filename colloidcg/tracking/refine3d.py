"""Sub-voxel positions in 3D stacks: every spot fitted as an anisotropic Gaussian or as a
blurred dyed sphere, jointly with its neighbours.

A confocal stack's spots are elongated along the optical axis (z): the point-spread
function is 2-4 times longer there, and the z step is often larger than the pixel. The
centroid of a spot's mask (trackpy's 3D ``locate``) is biased towards the voxel it starts
on when the mask is small against the spot, and pulled towards neighbours whose light
falls inside it; it gives no standard error per axis that could be trusted.

Here each spot is the voxel-integrated Gaussian

    A gz(k; z, sz) gy(j; y, sxy) gx(i; x, sxy) + b,
    g(k; c, s) = (erf((k + 1/2 - c) / (sqrt 2 s)) - erf((k - 1/2 - c) / (sqrt 2 s))) / 2,

over a box of ``WINDOW`` widths around it, with the light of every other spot (as
currently fitted) taken out of the box first: sweeps of per-spot Gauss-Newton fits over
all spots (a block Gauss-Seidel iteration of the joint least-squares fit, as
:mod:`colloidcg.tracking.refine` does in 2D). The widths are one per axis pair (sz, sxy),
first fitted per spot, then fixed at their medians over the frame's spots (free widths
scatter with the noise and the neighbours; one microscope has one PSF). ``b`` is a local
background per spot.

A uniformly dyed sphere larger than the resolution images as a flat-topped ball, which a
Gaussian misfits; the second model is that ball, of radius R, blurred by an isotropic
Gaussian of width s, with z voxels scaled by k to the plane's (:func:`_ball`, closed form).
Its shape (R, s, k) is shared in the same way. :func:`fit_spots_3d` ("auto") keeps the balls
where they fit the spots clearly better (:data:`BALL_GAIN`).

The standard error of each coordinate is the sandwich estimate (J^T J)^-1 (J^T diag(r^2)
J) (J^T J)^-1 x n / (n - p) over the spot's box, each voxel's variance its own squared
residual (noise and misfit alike, no noise model needed), as the 2D template fit does.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Half-width of a spot's fit box, in its Gaussian widths per axis.
WINDOW = 2.5
#: Gauss-Newton iterations per spot and sweep, and the step (voxels) at which a spot stops.
ITERATIONS = 8
TOLERANCE = 1e-3
#: Sweeps over all spots: with free widths, then with the median widths.
SWEEPS_FREE = 2
SWEEPS_FIXED = 3
#: The shared shape (widths, or ball radius, blur and z scale) and the model are measured
#: on at most this many spots of a frame, spread over it.
SHAPE_SPOTS = 150
#: A fit that ends farther than this many widths from its start, or with a non-positive
#: amplitude, keeps its start and gets no standard error.
MAX_MOVE = 1.0


@njit(cache=True)
def _axis(lo, n, c, s, g, dg, ds):
    """Voxel-integrated unit Gaussian along one axis on voxels lo .. lo + n - 1: values g,
    derivatives dg (by the centre c) and ds (by the width s)."""
    sq = math.sqrt(2.0) * s
    for k in range(n):
        a1 = (lo + k + 0.5 - c) / sq
        a0 = (lo + k - 0.5 - c) / sq
        e1, e0 = math.exp(-a1 * a1), math.exp(-a0 * a0)
        g[k] = 0.5 * (math.erf(a1) - math.erf(a0))
        dg[k] = -(e1 - e0) / (math.sqrt(math.pi) * sq)
        ds[k] = -(a1 * e1 - a0 * e0) / (math.sqrt(math.pi) * s)


@njit(cache=True)
def _box(c, s, n):
    lo = max(0, int(math.floor(c - WINDOW * s)))
    hi = min(n - 1, int(math.ceil(c + WINDOW * s)))
    return lo, hi - lo + 1


@njit(cache=True)
def _paint(canvas, z, y, x, a, sz, sxy, sign):
    """canvas += sign x A gz gy gx over the spot's box."""
    nz, ny, nx = canvas.shape
    z0, mz = _box(z, sz, nz)
    y0, my = _box(y, sxy, ny)
    x0, mx = _box(x, sxy, nx)
    if mz <= 0 or my <= 0 or mx <= 0:
        return
    gz, dz, sz_ = np.empty(mz), np.empty(mz), np.empty(mz)
    gy, dy, sy_ = np.empty(my), np.empty(my), np.empty(my)
    gx, dx, sx_ = np.empty(mx), np.empty(mx), np.empty(mx)
    _axis(z0, mz, z, sz, gz, dz, sz_)
    _axis(y0, my, y, sxy, gy, dy, sy_)
    _axis(x0, mx, x, sxy, gx, dx, sx_)
    for k in range(mz):
        for j in range(my):
            for i in range(mx):
                canvas[z0 + k, y0 + j, x0 + i] += sign * a * gz[k] * gy[j] * gx[i]


@njit(cache=True)
def _solve(m, v, p):
    """Solve the p x p system m u = v in place by Gaussian elimination with partial
    pivoting; returns False when it is singular."""
    for c in range(p):
        piv = c
        for r in range(c + 1, p):
            if abs(m[r, c]) > abs(m[piv, c]):
                piv = r
        if abs(m[piv, c]) < 1e-300:
            return False
        if piv != c:
            for q in range(p):
                t = m[c, q]
                m[c, q] = m[piv, q]
                m[piv, q] = t
            t = v[c]
            v[c] = v[piv]
            v[piv] = t
        for r in range(c + 1, p):
            f = m[r, c] / m[c, c]
            for q in range(c, p):
                m[r, q] -= f * m[c, q]
            v[r] -= f * v[c]
    for c in range(p - 1, -1, -1):
        acc = v[c]
        for q in range(c + 1, p):
            acc -= m[c, q] * v[q]
        v[c] = acc / m[c, c]
    return True


@njit(cache=True)
def _add_normal(jtj, jtr, jac, res, p):
    """Add one voxel's row (Jacobian ``jac``, residual ``res``) to the upper triangle of
    the normal equations of the first ``p`` parameters."""
    for u in range(p):
        jtr[u] += jac[u] * res
        for v in range(u, p):
            jtj[u, v] += jac[u] * jac[v]


@njit(cache=True)
def _gauss_newton_step(jtj, jtr, p):
    """(solved, step): the Gauss-Newton step of the normal equations (upper triangle)."""
    for u in range(p):
        for v in range(u):
            jtj[u, v] = jtj[v, u]
        jtj[u, u] *= 1.0 + 1e-9
    step = jtr.copy()
    return _solve(jtj, step, p), step


@njit(cache=True)
def _add_sandwich(bread, meat, jac, res):
    """Add one voxel to J^T J and J^T diag(r^2) J of the five fitted parameters."""
    for u in range(5):
        for v in range(5):
            bread[u, v] += jac[u] * jac[v]
            meat[u, v] += res * res * jac[u] * jac[v]


@njit(cache=True)
def _sandwich_ep(bread, meat, n, ep, i):
    """ep[i] (z, y, x): the sandwich standard errors over n voxels (5 parameters)."""
    inv = np.linalg.inv(bread)
    cov = inv @ meat @ inv * (n / max(n - 5, 1))
    for u in range(3):
        ep[i, u] = math.sqrt(max(cov[u, u], 0.0))


@njit(cache=True)
def _fit_one(img, canvas, par, i, free_width, final, start, ep):
    """Gauss-Newton fit of spot i (row par[i] = z, y, x, A, b, sz, sxy) to the image less
    every other spot (canvas holds all spots, spot i included). Updates par[i], the
    canvas, and with ``final`` the standard errors ep[i] (z, y, x). Returns whether it
    converged."""
    nz, ny, nx = img.shape
    z, y, x, a, b, sz, sxy = par[i, 0], par[i, 1], par[i, 2], par[i, 3], par[i, 4], par[i, 5], par[i, 6]
    # the box is fixed for the whole fit (around the spot's place when the fit starts)
    z0, mz = _box(z, sz * 1.2, nz)
    y0, my = _box(y, sxy * 1.2, ny)
    x0, mx = _box(x, sxy * 1.2, nx)
    if mz < 2 or my < 3 or mx < 3:
        return False
    own = np.empty((mz, my, mx))
    gz, dz, wz = np.empty(mz), np.empty(mz), np.empty(mz)
    gy, dy, wy = np.empty(my), np.empty(my), np.empty(my)
    gx, dx, wx = np.empty(mx), np.empty(mx), np.empty(mx)
    _axis(z0, mz, z, sz, gz, dz, wz)
    _axis(y0, my, y, sxy, gy, dy, wy)
    _axis(x0, mx, x, sxy, gx, dx, wx)
    for k in range(mz):
        for j in range(my):
            for l in range(mx):
                # the image less the other spots: canvas minus this spot's current model
                own[k, j, l] = img[z0 + k, y0 + j, x0 + l] - (canvas[z0 + k, y0 + j, x0 + l]
                                                             - a * gz[k] * gy[j] * gx[l])
    p = 7 if free_width else 5
    jtj = np.zeros((7, 7))
    jtr = np.zeros(7)
    jac = np.zeros(7)
    old = (z, y, x, a, sz, sxy)
    ok = False
    for it in range(ITERATIONS):
        _axis(z0, mz, z, sz, gz, dz, wz)
        _axis(y0, my, y, sxy, gy, dy, wy)
        _axis(x0, mx, x, sxy, gx, dx, wx)
        jtj[:, :] = 0.0
        jtr[:] = 0.0
        for k in range(mz):
            for j in range(my):
                gzy = gz[k] * gy[j]
                for l in range(mx):
                    m = gzy * gx[l]
                    r = own[k, j, l] - (a * m + b)
                    jac[0] = a * dz[k] * gy[j] * gx[l]
                    jac[1] = a * gz[k] * dy[j] * gx[l]
                    jac[2] = a * gzy * dx[l]
                    jac[3] = m
                    jac[4] = 1.0
                    if free_width:
                        jac[5] = a * wz[k] * gy[j] * gx[l]
                        jac[6] = a * gz[k] * (wy[j] * gx[l] + gy[j] * wx[l])
                    _add_normal(jtj, jtr, jac, r, p)
        solved, step = _gauss_newton_step(jtj, jtr, p)
        if not solved:
            break
        z += step[0]
        y += step[1]
        x += step[2]
        a += step[3]
        b += step[4]
        if free_width:
            sz = min(max(sz + step[5], 0.3), 3.0 * par[i, 5] + 1.0)
            sxy = min(max(sxy + step[6], 0.3), 3.0 * par[i, 6] + 1.0)
        if a <= 0.0:
            break
        if math.sqrt(step[0] ** 2 + step[1] ** 2 + step[2] ** 2) < TOLERANCE:
            ok = True
            break
    moved = math.sqrt(((z - start[i, 0]) / sz) ** 2 + ((y - start[i, 1]) / sxy) ** 2
                      + ((x - start[i, 2]) / sxy) ** 2)
    if not ok or a <= 0.0 or moved > MAX_MOVE or not (z0 - 1 <= z <= z0 + mz) \
            or not (y0 - 1 <= y <= y0 + my) or not (x0 - 1 <= x <= x0 + mx):
        return False
    # accept: move this spot's light on the canvas
    _paint(canvas, old[0], old[1], old[2], old[3], old[4], old[5], -1.0)
    _paint(canvas, z, y, x, a, sz, sxy, 1.0)
    par[i, 0], par[i, 1], par[i, 2], par[i, 3], par[i, 4], par[i, 5], par[i, 6] = z, y, x, a, b, sz, sxy
    if final:
        _axis(z0, mz, z, sz, gz, dz, wz)
        _axis(y0, my, y, sxy, gy, dy, wy)
        _axis(x0, mx, x, sxy, gx, dx, wx)
        bread = np.zeros((5, 5))
        meat = np.zeros((5, 5))
        n = mz * my * mx
        for k in range(mz):
            for j in range(my):
                gzy = gz[k] * gy[j]
                for l in range(mx):
                    m = gzy * gx[l]
                    r = own[k, j, l] - (a * m + b)
                    jac[0] = a * dz[k] * gy[j] * gx[l]
                    jac[1] = a * gz[k] * dy[j] * gx[l]
                    jac[2] = a * gzy * dx[l]
                    jac[3] = m
                    jac[4] = 1.0
                    _add_sandwich(bread, meat, jac, r)
        _sandwich_ep(bread, meat, n, ep, i)
    return True


@njit(cache=True)
def _sweeps(img, canvas, par, start, n_sweeps, free, final, ep, ok, idx, ball):
    """``n_sweeps`` sweeps over the spots ``idx`` (in that order) of :func:`_fit_one`, or
    of :func:`_fit_one_ball` with ``ball``; ``final``: standard errors in the last one."""
    for sw in range(n_sweeps):
        last = final and sw == n_sweeps - 1
        for i in idx:
            if ball:
                ok[i] = _fit_one_ball(img, canvas, par, i, free, last, start, ep)
            else:
                ok[i] = _fit_one(img, canvas, par, i, free, last, start, ep)


#: "auto" fits blurred balls as well as Gaussians where the spots are at least this wide
#: (Gaussian width in the plane, voxels), and keeps the balls where they leave at least
#: BALL_GAIN less squared residual over the spots' boxes.
BALL_MIN_SIGMA = 1.5
BALL_GAIN = 0.1
#: ... or where they are resolved spheres, radius at least this many blur widths, and
#: leave less than 1 + BALL_GAIN times the Gaussians' residual (dyed spheres of radius
#: 3-8 px fit with R / s 3.1-4.3; on a crowded first frame, a mixture or a PSF 4.5 px long
#: along z the start list merges neighbours, every fit is rough and the residuals came
#: within 10 % of each other either way; the Gaussians then merged touching partners; the
#: ball model holds the Gaussian as R -> 0, so R / s is the data's own verdict).
BALL_RESOLVED = 2.5
_SQ2PI = math.sqrt(2.0 * math.pi)


@njit(cache=True)
def _ball(r, R, s):
    """A uniform ball of radius R blurred by an isotropic Gaussian of width s, at distance
    r from its centre: the value (1 at the centre of a ball much wider than s) and its
    derivative by r. The value is the probability that a Gaussian of width s centred r
    from the ball's centre lies inside it:
    (erf((R - r) a) + erf((R + r) a)) / 2 + s (e+ - e-) / (r sqrt(2 pi)), a = 1 / (sqrt 2 s),
    e+- = exp(-((R +- r) a)^2)."""
    a = 1.0 / (math.sqrt(2.0) * s)
    if r < 1e-6 * s:
        u = R / s
        return math.erf(u / math.sqrt(2.0)) - math.sqrt(2.0 / math.pi) * u * math.exp(-0.5 * u * u), 0.0
    ep = math.exp(-((R + r) * a) ** 2)
    em = math.exp(-((R - r) * a) ** 2)
    v = 0.5 * (math.erf((R - r) * a) + math.erf((R + r) * a)) + s / (r * _SQ2PI) * (ep - em)
    dv = -R / (r * s * _SQ2PI) * (ep + em) - s / (r * r * _SQ2PI) * (ep - em)
    return v, dv


@njit(cache=True)
def _ball_box(c, half, n):
    lo = max(0, int(math.floor(c - half)))
    hi = min(n - 1, int(math.ceil(c + half)))
    return lo, hi - lo + 1


#: The ball profile is tabulated (:func:`_ball_table`) at this many nodes per blur width
#: and read by cubic Hermite interpolation: within about 1e-7 of the exact profile (for
#: unit amplitude), at a quarter of its cost per voxel (an erf and two exps per call; the
#: fits evaluate it on every voxel of a spot's box in every iteration).
TABLE_NODES_PER_BLUR = 16


@njit(cache=True)
def _ball_dR(r, R, s):
    """d ball / d R at distance r (the radial density of a 3D Gaussian of width s centred
    r from the ball's centre, at radius R: R (e- - e+) / (r s sqrt(2 pi))) and its
    derivative by r."""
    c = R / (s * _SQ2PI)
    s2 = s * s
    em = math.exp(-(R - r) ** 2 / (2.0 * s2))
    ep = math.exp(-(R + r) ** 2 / (2.0 * s2))
    if r < 1e-3 * s:    # even in r: the limit r -> 0, and a zero slope
        return 2.0 * c * R / s2 * math.exp(-R * R / (2.0 * s2)), 0.0
    f = c * (em - ep) / r
    df = c * (em * (R - r) + ep * (R + r)) / (s2 * r) - f / r
    return f, df


@njit(cache=True)
def _box_diagonal(mz, my, mx, k):
    """The farthest a voxel of a (mz, my, mx) box lies from a centre within a box length
    of it (plane units, z scaled by k): the reach a fit's profile table needs."""
    return 2.0 * math.sqrt((k * mz) ** 2 + my * my + mx * mx)


@njit(cache=True)
def _ball_table(R, s, rmax):
    """The profile of :func:`_ball` on nodes 0, h, 2h, ... past ``rmax`` and past R + 10 s,
    where it is 0 to double precision (h = s / TABLE_NODES_PER_BLUR): rows (value, d/dr,
    d/dR, d^2/dR dr), and 1 / h."""
    h = s / TABLE_NODES_PER_BLUR
    n = int(max(rmax, R + 10.0 * s) / h) + 3
    tab = np.empty((n, 4))
    for m in range(n):
        v, dv = _ball(m * h, R, s)
        f, df = _ball_dR(m * h, R, s)
        tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3] = v, dv, f, df
    return tab, 1.0 / h


@njit(cache=True)
def _hermite(tab, col, inv_h, r):
    """Cubic Hermite interpolation of column ``col`` of ``tab`` (its r-derivative in the
    next column) at r: (value, derivative by r); the exact derivative of the interpolant,
    so that a fit's Jacobian matches its model. Beyond the last node: its value, slope 0."""
    t = r * inv_h
    m = int(t)
    if m >= tab.shape[0] - 1:
        return tab[tab.shape[0] - 1, col], 0.0
    t -= m
    h = 1.0 / inv_h
    f0, f1 = tab[m, col], tab[m + 1, col]
    d0, d1 = tab[m, col + 1] * h, tab[m + 1, col + 1] * h
    t2 = t * t
    t3 = t2 * t
    v = (2 * t3 - 3 * t2 + 1) * f0 + (t3 - 2 * t2 + t) * d0 + (-2 * t3 + 3 * t2) * f1 + (t3 - t2) * d1
    dv = ((6 * t2 - 6 * t) * f0 + (3 * t2 - 4 * t + 1) * d0 + (-6 * t2 + 6 * t) * f1 + (3 * t2 - 2 * t) * d1) * inv_h
    return v, dv


@njit(cache=True)
def _ball_reach(R, s, k):
    """Half-widths (along z in voxels, in the plane) of a ball's box, and the farthest
    distance (plane units) a voxel of it lies from the centre."""
    h = R + WINDOW * s
    hz = h / k
    return hz, h, math.sqrt((k * (hz + 1.0)) ** 2 + 2.0 * (h + 1.0) ** 2)


@njit(cache=True)
def _paint_ball(canvas, z, y, x, a, R, s, k, sign):
    """canvas += sign x A ball(|(k dz, dy, dx)|; R, s) over the ball's box (z voxels
    scaled by k to the plane's)."""
    nz, ny, nx = canvas.shape
    hz, h, rmax = _ball_reach(R, s, k)
    tab, inv_h = _ball_table(R, s, rmax)
    z0, mz = _ball_box(z, hz, nz)
    y0, my = _ball_box(y, h, ny)
    x0, mx = _ball_box(x, h, nx)
    for q in range(mz):
        dz = k * (z0 + q - z)
        for j in range(my):
            dy = y0 + j - y
            for l in range(mx):
                dx = x0 + l - x
                v, _ = _hermite(tab, 0, inv_h, math.sqrt(dz * dz + dy * dy + dx * dx))
                canvas[z0 + q, y0 + j, x0 + l] += sign * a * v


@njit(cache=True)
def _ball_row(value, rr, dz, dy, dx, a, b, k, tab, inv_h, jac):
    """One voxel of a ball fit, at offset (dz, dy, dx) from the centre (z already scaled by
    k; rr its length), the profile from ``tab``: fills jac[0:5] (by z, y, x, A, b) and
    returns (residual, A ball'(rr) / rr)."""
    v, dv = _hermite(tab, 0, inv_h, rr)
    g = a * dv / rr if rr > 1e-9 else 0.0
    jac[0] = -g * dz * k
    jac[1] = -g * dy
    jac[2] = -g * dx
    jac[3] = v
    jac[4] = 1.0
    return value - (a * v + b), g


@njit(cache=True)
def _fit_one_ball(img, canvas, par, i, free, final, start, ep):
    """As :func:`_fit_one` for a blurred ball, par[i] = z, y, x, A, b, R, s, k (k: the
    scale from z voxels to the plane's); ``free`` 1: R, s and k are fitted too, 2: R alone
    (a mixture's sizes), 0: none. The profile is read from a table (:func:`_ball_table`),
    made again whenever R or s changes; d/ds follows from the profile's scaling,
    s d/ds = -(r d/dr + R d/dR)."""
    nz, ny, nx = img.shape
    z, y, x, a, b, R, s, k = par[i, 0], par[i, 1], par[i, 2], par[i, 3], par[i, 4], par[i, 5], par[i, 6], par[i, 7]
    hz, h, _ = _ball_reach(R, s, k)
    z0, mz = _ball_box(z, 1.2 * hz, nz)
    y0, my = _ball_box(y, 1.2 * h, ny)
    x0, mx = _ball_box(x, 1.2 * h, nx)
    if mz < 2 or my < 3 or mx < 3:
        return False
    tab, inv_h = _ball_table(R, s, _box_diagonal(mz, my, mx, k))
    own = np.empty((mz, my, mx))
    for q in range(mz):
        dz = k * (z0 + q - z)
        for j in range(my):
            dy = y0 + j - y
            for l in range(mx):
                dx = x0 + l - x
                v, _ = _hermite(tab, 0, inv_h, math.sqrt(dz * dz + dy * dy + dx * dx))
                own[q, j, l] = img[z0 + q, y0 + j, x0 + l] - (canvas[z0 + q, y0 + j, x0 + l] - a * v)
    p = 8 if free == 1 else (6 if free == 2 else 5)
    jtj = np.zeros((8, 8))
    jtr = np.zeros(8)
    jac = np.zeros(8)
    old = (z, y, x, a, R, s, k)
    ok = False
    for it in range(ITERATIONS):
        if free and it > 0:
            tab, inv_h = _ball_table(R, s, _box_diagonal(mz, my, mx, k))
        jtj[:, :] = 0.0
        jtr[:] = 0.0
        for q in range(mz):
            dz = k * (z0 + q - z)
            for j in range(my):
                dy = y0 + j - y
                for l in range(mx):
                    dx = x0 + l - x
                    rr = math.sqrt(dz * dz + dy * dy + dx * dx)
                    res, g = _ball_row(own[q, j, l], rr, dz, dy, dx, a, b, k, tab, inv_h, jac)
                    if free:
                        fR, _ = _hermite(tab, 2, inv_h, rr)
                        jac[5] = a * fR
                    if free == 1:
                        # s d/ds = -(r d/dr + R d/dR): g rr^2 = A r d/dr
                        jac[6] = -(g * rr * rr + R * jac[5]) / s
                        jac[7] = g * dz * dz / k          # d rr / dk = dz^2 / (k rr)
                    _add_normal(jtj, jtr, jac, res, p)
        solved, step = _gauss_newton_step(jtj, jtr, p)
        if not solved:
            break
        z += step[0]
        y += step[1]
        x += step[2]
        a += step[3]
        b += step[4]
        if free:
            R = min(max(R + step[5], 0.1), 3.0 * par[i, 5] + 2.0)
        if free == 1:
            s = min(max(s + step[6], 0.3), 3.0 * par[i, 6] + 1.0)
            k = min(max(k + step[7], 0.1), 10.0)
        if not a > 0.0 or not math.isfinite(z + y + x + b + R + s + k):
            break
        if math.sqrt(step[0] ** 2 + step[1] ** 2 + step[2] ** 2) < TOLERANCE:
            ok = True
            break
    w = R + s
    moved = math.sqrt(((z - start[i, 0]) * k / w) ** 2 + ((y - start[i, 1]) / w) ** 2
                      + ((x - start[i, 2]) / w) ** 2)
    if not ok or a <= 0.0 or moved > MAX_MOVE:
        return False
    _paint_ball(canvas, old[0], old[1], old[2], old[3], old[4], old[5], old[6], -1.0)
    _paint_ball(canvas, z, y, x, a, R, s, k, 1.0)
    par[i, 0], par[i, 1], par[i, 2], par[i, 3], par[i, 4], par[i, 5], par[i, 6], par[i, 7] = z, y, x, a, b, R, s, k
    if final:
        if free:
            tab, inv_h = _ball_table(R, s, _box_diagonal(mz, my, mx, k))
        bread = np.zeros((5, 5))
        meat = np.zeros((5, 5))
        n = mz * my * mx
        for q in range(mz):
            dz = k * (z0 + q - z)
            for j in range(my):
                dy = y0 + j - y
                for l in range(mx):
                    dx = x0 + l - x
                    rr = math.sqrt(dz * dz + dy * dy + dx * dx)
                    res, g = _ball_row(own[q, j, l], rr, dz, dy, dx, a, b, k, tab, inv_h, jac)
                    _add_sandwich(bread, meat, jac, res)
        _sandwich_ep(bread, meat, n, ep, i)
    return True


@njit(cache=True)
def _residual_ss(img, canvas, par, hz, hxy):
    """Sum of squared residuals (image less canvas less each spot's background) over the
    union of the boxes of half-widths (hz, hxy, hxy) voxels around the spots (each voxel
    once; its background that of the spot whose box marked it first)."""
    nz, ny, nx = img.shape
    seen = np.zeros(img.shape, np.bool_)
    ss = 0.0
    for i in range(par.shape[0]):
        z0, mz = _ball_box(par[i, 0], hz, nz)
        y0, my = _ball_box(par[i, 1], hxy, ny)
        x0, mx = _ball_box(par[i, 2], hxy, nx)
        for q in range(mz):
            for j in range(my):
                for l in range(mx):
                    if seen[z0 + q, y0 + j, x0 + l]:
                        continue
                    seen[z0 + q, y0 + j, x0 + l] = True
                    r = img[z0 + q, y0 + j, x0 + l] - canvas[z0 + q, y0 + j, x0 + l] - par[i, 4]
                    ss += r * r
    return ss


def _start(im, z, y, x, n_par, unit_peak):
    """Parameter rows (N, n_par) with the start positions, amplitude from the voxel at the
    start over ``unit_peak`` (the model's peak for amplitude 1), background the image's
    20th percentile."""
    par = np.zeros((len(x), n_par))
    par[:, 0], par[:, 1], par[:, 2] = z, y, x
    zi, yi, xi = (np.clip(np.rint(c).astype(int), 0, m - 1) for c, m in zip((z, y, x), im.shape))
    base = float(np.percentile(im, 20))
    par[:, 3] = np.maximum(im[zi, yi, xi] - base, 1e-3) / unit_peak
    par[:, 4] = base
    return par


def _paint_all(canvas, par, ball):
    canvas[:] = 0.0
    for i in range(par.shape[0]):
        _paint_one(canvas, par[i], ball, 1.0)


def _fix_shared(par, ok, cols, canvas, ball, idx):
    """Set the shared shape columns to their medians over the spots ``idx`` whose fit
    converged (all of ``idx`` if fewer than 3 did) and paint the canvas again."""
    good = idx[ok[idx]] if ok[idx].sum() >= 3 else idx
    for c in cols:
        par[:, c] = float(np.median(par[good, c]))
    _paint_all(canvas, par, ball)


def fit_spots_3d(img: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray,
                 sigma: tuple[float, float], fit_width: bool = True,
                 model: str = "auto", add_missed: bool = True) -> dict[str, np.ndarray]:
    """Refine 3D spot positions by joint fits of every spot with its neighbours.

    Parameters
    ----------
    img : ndarray (Z, Y, X)
        The stack, bright spots on a dark background (invert dark ones first).
    z, y, x : ndarray (N,)
        Start positions (voxels), e.g. centroids.
    sigma : (sz, sxy)
        Start Gaussian widths (voxels along z, and in the plane).
    fit_width : bool
        Fit the shape per spot first and then fix it at the medians (else keep ``sigma``,
        Gaussians only).
    model : {"auto", "gauss", "ball"}
        The spot: an anisotropic Gaussian, or a uniformly dyed ball blurred by a Gaussian
        (radius R, blur s, z scaled by k: :func:`_ball`), the image of a dyed sphere
        larger than the resolution. "auto": balls where the Gaussians are at least
        :data:`BALL_MIN_SIGMA` wide and the balls leave :data:`BALL_GAIN` less squared
        residual over the spots' boxes.
    add_missed : bool
        Search the fit's residual for spots the starts missed (centred near or beyond a
        face of the stack, partners merged into one maximum) and fit them too
        (:func:`_add_missed`); they come after the given spots in the output.

    Returns
    -------
    dict
        z, y, x (voxels; the last accepted fit's, or the start) (N,), amplitude (N,),
        background (N,), sigma_z, sigma_xy (N,: the Gaussian widths, or the ball's
        Gaussian-equivalent widths sqrt(R^2 / 5 + s^2) / k and sqrt(R^2 / 5 + s^2)),
        ep_z, ep_y, ep_x (N,: voxels; NaN where the last fit failed), ok (N,: bool),
        peak (N,: the spot's light at its centre above the background), model ("gauss"
        or "ball") and for balls radius (N,: its population's, :func:`_radius_populations`),
        blur, z_scale; added (bool:
        found in the residual; their positions may lie outside the stack). The arrays have
        one row per given start, then one per spot found.
    """
    if model not in ("auto", "gauss", "ball"):
        raise ValueError(f"model: expected 'auto', 'gauss' or 'ball', got {model!r}")
    im = np.ascontiguousarray(img, dtype=np.float64)
    n = len(x)
    start = np.ascontiguousarray(np.c_[z, y, x], dtype=np.float64)
    sz, sxy = float(sigma[0]), float(sigma[1])
    ep = np.full((n, 3), np.nan)
    ok = np.zeros(n, np.bool_)
    canvas = np.zeros_like(im)
    par = _start(im, z, y, x, 7, 1.0 / ((math.sqrt(2 * math.pi)) ** 3 * sz * sxy * sxy))
    par[:, 5], par[:, 6] = sz, sxy
    _paint_all(canvas, par, False)
    use_ball = model == "ball"
    every = np.arange(n)
    # the shape is one microscope's: measured on up to SHAPE_SPOTS spots spread over the list
    sub = every if n <= SHAPE_SPOTS else np.unique(np.linspace(0, n - 1, SHAPE_SPOTS).astype(np.int64))
    if n and (fit_width or model != "gauss"):
        _sweeps(im, canvas, par, start, SWEEPS_FREE, True, False, ep, ok, sub, False)
        _fix_shared(par, ok, (5, 6), canvas, False, sub)
        sz, sxy = float(par[0, 5]), float(par[0, 6])
        if model == "auto" and sxy >= BALL_MIN_SIGMA:
            hz, hxy = WINDOW * sz, WINDOW * sxy
            ss_gauss = _residual_ss(im, canvas, par[sub], hz, hxy)
            bpar, bcanvas, bok = _ball_free(im, start, sz, sxy, ep, sub)
            ss_ball = _residual_ss(im, bcanvas, bpar[sub], hz, hxy)
            resolved = float(bpar[0, 5]) >= BALL_RESOLVED * float(bpar[0, 6])
            use_ball = ss_ball < (1.0 - BALL_GAIN) * ss_gauss or \
                (resolved and ss_ball < (1.0 + BALL_GAIN) * ss_gauss)
    out: dict = {}
    if use_ball and n:
        if model == "ball":
            bpar, canvas, ok = _ball_free(im, start, sz, sxy, ep, sub)
        else:
            canvas, ok = bcanvas, bok
        par = bpar
    added = np.zeros(n, np.bool_)
    if n:
        if add_missed:
            if use_ball and EARLY_POPULATIONS:
                _radius_populations(im, canvas, par, start, ep, ok)
            par, canvas, start, ep, ok, added = _add_missed(im, canvas, par, start, ep, ok, use_ball)
        if use_ball and _radius_populations(im, canvas, par, start, ep, ok):
            par, start, ep, ok, added = _split_along_z(im, canvas, par, start, ep, ok, added)
        _sweeps(im, canvas, par, start, SWEEPS_FIXED, False, True, ep, ok, np.arange(len(par)), use_ball)
        if added.any():
            par, start, ep, ok, added = _drop_failed_added(canvas, par, start, ep, ok, added, use_ball)
    if use_ball and n:
        R, s, k = par[:, 5], float(par[0, 6]), float(par[0, 7])
        w = np.sqrt(R * R / 5.0 + s * s)
        sig_z, sig_xy = w / k, w
        out.update(model="ball", radius=R, blur=s, z_scale=k,
                   peak=par[:, 3] * np.array([_ball(0.0, r, s)[0] for r in R]))
    else:
        sig_z, sig_xy = par[:, 5], par[:, 6]
        out.update(model="gauss", peak=par[:, 3] / ((2 * math.pi) ** 1.5 * sig_z * sig_xy ** 2))
    ep[~ok] = np.nan
    out.update(z=par[:, 0], y=par[:, 1], x=par[:, 2], amplitude=par[:, 3], background=par[:, 4],
               sigma_z=sig_z, sigma_xy=sig_xy, ep_z=ep[:, 0], ep_y=ep[:, 1], ep_x=ep[:, 2], ok=ok,
               added=added)
    return out


#: Rounds of the search for spots the start list missed (:func:`_add_missed`).
MISSED_ROUNDS = 2
#: A peak of the smoothed residual is a missed spot when it exceeds this fraction of the
#: median spot's peak in the same smoothing, and MISSED_SIGMAS robust standard deviations
#: of the smoothed residual, further than MISSED_DISTANCE Gaussian-equivalent widths
#: (z scaled to the plane) from every spot.
MISSED_THRESHOLD = 0.3
MISSED_SIGMAS = 5.0
MISSED_DISTANCE = 1.5
#: After each round the new spots and every spot within MISSED_REACH widths of them are
#: refitted in MISSED_SWEEPS sweeps.
MISSED_REACH = 6.0
MISSED_SWEEPS = 6


def _equivalent_widths(par, ball):
    """(sz, sxy): the spots' Gaussian widths (medians), or a ball's Gaussian-equivalent
    widths sqrt(R^2 / 5 + s^2) / k and sqrt(R^2 / 5 + s^2) (voxels)."""
    if ball:
        w = math.sqrt(float(np.median(par[:, 5])) ** 2 / 5.0 + float(par[0, 6]) ** 2)
        return w / float(par[0, 7]), w
    return float(np.median(par[:, 5])), float(np.median(par[:, 6]))


def _axis_scale(par, ball):
    """((3,) scale taking (z, y, x) voxels to the plane's units, the spots' Gaussian(-
    equivalent) width in the plane): distances between spots are measured in the scaled
    coordinates."""
    sz, sxy = _equivalent_widths(par, ball)
    return np.array([sxy / sz, 1.0, 1.0]), sxy


def _add_missed(im, canvas, par, start, ep, ok, ball):
    """Spots that no start accounted for, found in the fit's residual and fitted too.

    Trackpy's 3D centroids leave out spots centred within a radius of a face of the stack
    (and beyond it) and partners merged into one maximum; their light, left out of the
    joint fit, pulled the neighbours' fits (dense dyed spheres: 0.26 / 0.18 / 0.20 voxel
    z / y / x with 177 of 565 spots missing from the fit, 0.06-0.07 with them in it).
    Each round fits the current spots (fixed shape), smooths the residual (image less
    every spot and the median background) by a Gaussian of half the spots' widths, and
    adds its local maxima that pass MISSED_THRESHOLD, MISSED_SIGMAS and MISSED_DISTANCE
    (a maximum on a face of the stack may be a spot centred beyond it: the fit may move it
    out). Returns par, canvas, start, ep, ok and ``added`` (bool per spot), extended.
    """
    from scipy.ndimage import gaussian_filter, maximum_filter
    from scipy.spatial import cKDTree

    added = np.zeros(len(par), np.bool_)
    for _ in range(MISSED_ROUNDS):
        _sweeps(im, canvas, par, start, 1, False, False, ep, ok, np.arange(len(par)), ball)
        sz, sxy = _equivalent_widths(par, ball)
        bg = float(np.median(par[ok, 4])) if ok.any() else float(np.median(par[:, 4]))
        smooth = (0.5 * sz, 0.5 * sxy, 0.5 * sxy)
        res = gaussian_filter(im - canvas - bg, smooth, mode="nearest")
        model = gaussian_filter(canvas, smooth, mode="nearest")
        shape = np.array(im.shape)
        idx = np.clip(np.rint(par[ok, :3]).astype(np.int64), 0, shape - 1)
        if len(idx) < 3:
            break
        peak = float(np.median(model[idx[:, 0], idx[:, 1], idx[:, 2]]))
        spread = 1.4826 * float(np.median(np.abs(res - np.median(res))))
        thr = max(MISSED_THRESHOLD * peak, MISSED_SIGMAS * spread)
        hz, hxy = max(1, int(round(sz))), max(1, int(round(sxy)))
        top = (res == maximum_filter(res, size=(2 * hz + 1, 2 * hxy + 1, 2 * hxy + 1),
                                     mode="nearest")) & (res > thr)
        cand = np.argwhere(top).astype(np.float64)
        if len(cand) == 0:
            break
        scale, _ = _axis_scale(par, ball)
        d, _ = cKDTree(par[:, :3] * scale).query(cand * scale)
        cand = cand[d > MISSED_DISTANCE * sxy]
        if len(cand) == 0:
            break
        # one start per cluster of maxima closer than the same distance, the highest first
        vals = res[tuple(cand.astype(np.int64).T)]
        cand, vals = cand[np.argsort(-vals)], np.sort(vals)[::-1]
        keep = []
        for i, c in enumerate(cand * scale):
            if all(np.sum((c - cand[j] * scale) ** 2) > (MISSED_DISTANCE * sxy) ** 2 for j in keep):
                keep.append(i)
        cand, vals = cand[keep], vals[keep]
        extra = np.zeros((len(cand), par.shape[1]))
        extra[:, :3] = cand
        extra[:, 3] = vals / max(peak, 1e-12) * float(np.median(par[ok, 3]))
        extra[:, 4] = bg
        extra[:, 5:] = par[0, 5:]
        for e in extra:
            _paint_one(canvas, e, ball, 1.0)
        m = len(extra)
        par = np.vstack([par, extra])
        start = np.vstack([start, cand])
        ep = np.vstack([ep, np.full((m, 3), np.nan)])
        ok = np.r_[ok, np.zeros(m, np.bool_)]
        added = np.r_[added, np.ones(m, np.bool_)]
        # the new spots and their neighbours (a partner found beside a merged start and
        # that start share the light between them: block Gauss-Seidel needs several
        # sweeps to part them)
        near = cKDTree(par[:, :3] * scale).query_ball_point(cand * scale, MISSED_REACH * sxy)
        block = np.unique(np.r_[np.arange(len(par) - m, len(par)), np.concatenate(near)]).astype(np.int64)
        _sweeps(im, canvas, par, start, MISSED_SWEEPS, False, False, ep, ok, block, ball)
        alive = _prune(im, canvas, par, start, ep, ok, added, bg, scale, PRUNE_REACH * sxy, ball)
        if not alive.all():
            par, start, ep, ok, added = par[alive], start[alive], ep[alive], ok[alive], added[alive]
    return par, canvas, start, ep, ok, added


#: Every spot closer than PRUNE_REACH Gaussian-equivalent widths (z scaled) to another,
#: one of the two found in the residual, is tested for redundancy, the faintest first:
#: taken out, its neighbours refitted (PRUNE_SWEEPS sweeps), and left out when the squared
#: residual over their boxes grows by less than PRUNE_FRACTION of a median spot's own
#: squared light. (Two touching partners merged into one start: the search finds both
#: ends, and the start, left between them at half a spot's amplitude, is the redundant
#: third. Touching spheres lie about 3.4 widths apart.)
PRUNE_REACH = 2.2
PRUNE_SWEEPS = 3
PRUNE_FRACTION = 0.1


def _prune(im, canvas, par, start, ep, ok, added, bg, scale, reach, ball):
    """Mask (N,) of the spots to keep (see PRUNE_REACH); the canvas loses the others'
    light and the neighbours keep their refits."""
    from scipy.spatial import cKDTree

    n = len(par)
    alive = np.ones(n, bool)
    tree = cKDTree(par[:, :3] * scale)
    pairs = np.array(sorted(tree.query_pairs(reach)), dtype=np.int64).reshape(-1, 2)
    pairs = pairs[added[pairs[:, 0]] | added[pairs[:, 1]]]
    if len(pairs) == 0:
        return alive
    unit = _unit_light(par, ok, ball)
    cand = np.unique(pairs)
    cand = cand[np.argsort(par[cand, 3])]
    shape = np.array(im.shape)
    margin = 2 * _light_reach(par, ball) + 2
    for i in cand:
        if not alive[i]:
            continue
        nb = np.asarray(tree.query_ball_point(par[i, :3] * scale, 3 * reach), dtype=np.int64)
        nb = nb[(nb != i) & alive[nb]]
        if not np.any(np.sum(((par[nb, :3] - par[i, :3]) * scale) ** 2, axis=1) < reach ** 2):
            continue
        rows = np.r_[i, nb]
        box = _box_around(par[rows, :3], margin, shape)
        saved = canvas[box].copy(), par[rows].copy(), ok[rows].copy()
        rss0 = float(np.sum((im[box] - canvas[box] - bg) ** 2))
        _paint_one(canvas, par[i], ball, -1.0)
        _sweeps(im, canvas, par, start, PRUNE_SWEEPS, False, False, ep, ok, nb, ball)
        rss1 = float(np.sum((im[box] - canvas[box] - bg) ** 2))
        if (rss1 - rss0) < PRUNE_FRACTION * unit:
            alive[i] = False
        else:
            canvas[box], par[rows], ok[rows] = saved
    return alive


def _box_around(centres: np.ndarray, margin, shape) -> tuple[slice, ...]:
    """Slices (z, y, x) of the stack around the spot centres (3,) or (M, 3) voxels, ``margin``
    voxels (int or (3,) ints) beyond the outermost, clipped to ``shape``."""
    c = np.atleast_2d(centres)
    lo = np.clip(np.floor(c.min(0)).astype(int) - margin, 0, shape)
    hi = np.clip(np.ceil(c.max(0)).astype(int) + margin + 1, 0, shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _light_reach(par, ball) -> np.ndarray:
    """(3,) int: how far (voxels along z, y, x) a spot's fit box reaches from its centre
    (a fit box: 1.2 x the painted extent, :func:`_fit_one`, :func:`_fit_one_ball`)."""
    if ball:
        R, s, k = float(np.max(par[:, 5])), float(par[0, 6]), float(par[0, 7])
        h = 1.2 * (R + WINDOW * s) * np.array([1.0 / k, 1.0, 1.0])
    else:
        h = 1.2 * WINDOW * np.array([np.max(par[:, 5]), np.max(par[:, 6]), np.max(par[:, 6])])
    return np.ceil(h).astype(int) + 1


def _unit_light(par, ok, ball):
    """The sum of squared voxel values of a spot of the median amplitude."""
    h = _light_reach(par, ball)
    row = par[0].copy()
    row[:3] = h
    row[3] = float(np.median(par[ok, 3])) if ok.any() else float(np.median(par[:, 3]))
    canvas = np.zeros(tuple(2 * h + 1))
    _paint_one(canvas, row, ball, 1.0)
    return float(np.sum(canvas ** 2))


#: Sweeps with each ball's radius free, whose radii are then grouped into populations.
RADIUS_SWEEPS = 2
EARLY_POPULATIONS = True


def _radius_populations(im, canvas, par, start, ep, ok):
    """Balls of a mixture: each spot's radius fitted (RADIUS_SWEEPS sweeps, blur and z
    scale held), the radii grouped into populations as the 2D widths are
    (:func:`colloidcg.tracking.refine.width_populations`: up to three, clearly separate),
    and each spot given its population's radius (par and canvas updated in place; the
    radius-free fits' positions and amplitudes kept). One population: every spot keeps
    the shared radius. (A binary mixture of dyed spheres of radius 4 and 5.5 px fitted
    with one shared radius: 0.17-0.18 voxel.) Returns whether there are several."""
    from .refine import width_populations

    trial = par.copy()
    tok = ok.copy()
    _sweeps(im, canvas.copy(), trial, start, RADIUS_SWEEPS, 2, False, ep, tok, np.arange(len(par)), True)
    radii, labels = width_populations(np.where(tok, trial[:, 5], np.nan))
    if len(radii) < 2:
        return False
    par[:, 5] = radii[labels]
    par[tok, :4] = trial[tok, :4]
    _paint_all(canvas, par, True)
    for i in np.flatnonzero(~tok):
        _choose_radius(im, canvas, par, start, ep, ok, i, radii)
    return True


#: Sweeps of a ball whose radius fit failed, tried with each population's radius
#: (_choose_radius).
CHOICE_SWEEPS = 2


def _choose_radius(im, canvas, par, start, ep, ok, i, radii):
    """Ball i, whose radius-free fit failed, gets the population radius among ``radii``
    whose fit (CHOICE_SWEEPS sweeps of ball i alone, its neighbours held) leaves the least
    squared residual over its box (par, canvas, ep and ok updated in place). Before, such
    a ball joined the most common population: a large sphere of a mixture imaged through
    a computed confocal PSF then got the small radius, and its centre was off by 0.3-0.6
    voxel."""
    shape = np.array(im.shape)
    reach = _light_reach(par, True)
    box = _box_around(par[i, :3], reach, shape)
    saved_canvas, saved_row = canvas[box].copy(), par[i].copy()
    saved_ep, saved_ok = ep[i].copy(), ok[i]
    best = None
    for R in radii:
        canvas[box] = saved_canvas
        _paint_one(canvas, saved_row, True, -1.0)
        par[i] = saved_row
        par[i, 5] = R
        _paint_one(canvas, par[i], True, 1.0)
        _sweeps(im, canvas, par, start, CHOICE_SWEEPS, False, False, ep, ok, np.array([i], np.int64), True)
        rss = float(np.sum((im[box] - canvas[box] - par[i, 4]) ** 2))
        if best is None or rss < best[0]:
            best = (rss, par[i].copy(), canvas[box].copy(), ep[i].copy(), ok[i])
        ep[i], ok[i] = saved_ep, saved_ok
    _, par[i], canvas[box], ep[i], ok[i] = best


#: Sweeps of the two small balls and their neighbours in a split test (_split_along_z).
SPLIT_SWEEPS = 3


#: A large ball is tested for a split only where the residual beyond both of its ends
#: along z (where two small balls touching would still shine) exceeds this fraction of
#: its own peak.
SPLIT_END_LIGHT = 0.15


def _split_candidates(im, canvas, par, ok, small, large):
    """The large balls (radius ``large``) with unexplained light beyond both ends along z:
    the residual (image less every spot and its background), averaged over the 3 x 3
    voxels about the axis at (large + 2 small) / 2 px from the centre, above
    SPLIT_END_LIGHT of the ball's peak on both sides."""
    k, blur = float(par[0, 7]), float(par[0, 6])
    off = 0.5 * (large + 2 * small) / k
    peak = _ball(0.0, large, blur)[0]
    nz, ny, nx = im.shape
    out = []
    for i in np.flatnonzero(ok & (par[:, 5] == large)):
        z, y, x = par[i, 0], int(round(par[i, 1])), int(round(par[i, 2]))
        ys, xs = slice(max(y - 1, 0), min(y + 2, ny)), slice(max(x - 1, 0), min(x + 2, nx))
        ends = []
        for zz in (int(round(z - off)), int(round(z + off))):
            if 0 <= zz < nz:
                ends.append(float(np.mean(im[zz, ys, xs] - canvas[zz, ys, xs] - par[i, 4])))
        if len(ends) == 2 and min(ends) > SPLIT_END_LIGHT * par[i, 3] * peak:
            out.append(i)
    return np.array(out, dtype=np.int64)


def _split_along_z(im, canvas, par, start, ep, ok, added):
    """Balls of the largest population tested as two balls of the smallest touching
    along z (the optical axis, where the PSF is longest and trackpy's starts merge such
    pairs: in a mixture a large ball between them explains their light about as well).
    Each is replaced by the pair, the pair and its neighbours refitted (SPLIT_SWEEPS
    sweeps), and the pair kept when the squared residual over their boxes falls by more
    than PRUNE_FRACTION of a median spot's own squared light; otherwise everything is
    restored. Returns par, start, ep, ok, added (the second ball of each kept pair
    appended, flagged as found)."""
    from scipy.spatial import cKDTree

    small, large = float(par[:, 5].min()), float(par[:, 5].max())
    k = float(par[0, 7])
    scale, _ = _axis_scale(par, True)
    unit = _unit_light(par, ok, True)
    shape = np.array(im.shape)
    margin = 2 * _light_reach(par, True) + 2
    tree = cKDTree(par[:, :3] * scale)
    new_rows = []
    for i in _split_candidates(im, canvas, par, ok, small, large):
        nb = np.asarray(tree.query_ball_point(par[i, :3] * scale, 2 * (large + small) + 2), dtype=np.int64)
        nb = nb[nb != i]
        box = _box_around(par[i, :3], margin, shape)
        saved = canvas[box].copy(), par[np.r_[i, nb]].copy()
        rss0 = float(np.sum((im[box] - canvas[box] - par[i, 4]) ** 2))
        _paint_one(canvas, par[i], True, -1.0)
        twin = par[i].copy()
        par[i, 5] = twin[5] = small
        par[i, 0] -= small / k
        twin[0] += small / k
        _paint_one(canvas, par[i], True, 1.0)
        _paint_one(canvas, twin, True, 1.0)
        both = np.vstack([par, twin[None]])
        st = np.vstack([start, twin[None, :3]])
        st[i] = par[i, :3]
        e2 = np.vstack([ep, np.full((1, 3), np.nan)])
        ok2 = np.r_[ok, False]
        rows = np.r_[i, len(par), nb].astype(np.int64)
        _sweeps(im, canvas, both, st, SPLIT_SWEEPS, False, False, e2, ok2, rows, True)
        rss1 = float(np.sum((im[box] - canvas[box] - par[i, 4]) ** 2))
        if ok2[i] and ok2[len(par)] and rss1 < rss0 - PRUNE_FRACTION * unit:
            par[:] = both[:-1]
            start[i] = par[i, :3]
            ok[i] = True
            new_rows.append(both[-1].copy())
        else:
            canvas[box] = saved[0]
            par[np.r_[i, nb]] = saved[1]
    if not new_rows:
        return par, start, ep, ok, added
    m = len(new_rows)
    extra = np.array(new_rows)
    return (np.vstack([par, extra]), np.vstack([start, extra[:, :3]]), np.vstack([ep, np.full((m, 3), np.nan)]),
            np.r_[ok, np.ones(m, np.bool_)], np.r_[added, np.ones(m, np.bool_)])


def _paint_one(canvas, row, ball, sign):
    if ball:
        _paint_ball(canvas, row[0], row[1], row[2], row[3], row[5], row[6], row[7], sign)
    else:
        _paint(canvas, row[0], row[1], row[2], row[3], row[5], row[6], sign)


def _drop_failed_added(canvas, par, start, ep, ok, added, ball):
    """Spots found by :func:`_add_missed` whose final fit failed, or that ended within
    MISSED_DISTANCE widths of another spot, are taken out (their light from the canvas,
    in place). Returns par, start, ep, ok, added without them."""
    from scipy.spatial import cKDTree

    scale, sxy = _axis_scale(par, ball)
    drop = added & ~ok
    for i, j in cKDTree(par[:, :3] * scale).query_pairs(MISSED_DISTANCE * sxy):
        if drop[i] or drop[j]:
            continue
        if added[i]:
            drop[i] = True
        elif added[j]:
            drop[j] = True
    for i in np.flatnonzero(drop):
        _paint_one(canvas, par[i], ball, -1.0)
    keep = ~drop
    return par[keep], start[keep], ep[keep], ok[keep], added[keep]


def _ball_free(im, start, sz, sxy, ep, sub):
    """Blurred balls fitted with free shapes from the Gaussian widths (sz, sxy) on the
    spots ``sub``, then the shape fixed at their medians: (par (N, 8), canvas, ok)."""
    n = len(start)
    # a ball whose Gaussian-equivalent width is the Gaussians': R^2 / 5 + s^2 = sxy^2
    s0 = max(0.5, 0.5 * sxy)
    R0 = math.sqrt(max(5.0 * (sxy * sxy - s0 * s0), 0.25))
    par = _start(im, start[:, 0], start[:, 1], start[:, 2], 8, 1.0)
    par[:, 5], par[:, 6], par[:, 7] = R0, s0, sxy / sz
    canvas = np.zeros_like(im)
    _paint_all(canvas, par, True)
    ok = np.zeros(n, np.bool_)
    _sweeps(im, canvas, par, start, SWEEPS_FREE, True, False, ep, ok, sub, True)
    _fix_shared(par, ok, (5, 6, 7), canvas, True, sub)
    return par, canvas, ok
