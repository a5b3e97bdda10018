"""Cramér-Rao lower bounds on spot localisation, from the Fisher information of the image.

For a pixelated image whose pixel ``k`` holds Poisson(mu_k) photo-electrons plus Gaussian
read noise of standard deviation ``r`` (electrons), the Fisher information about
parameters theta is, in the usual Gaussian approximation of the Poisson-Gaussian
likelihood (exact for r = 0 and for large mu),

    I_ab = sum_k (d mu_k / d theta_a) (d mu_k / d theta_b) / (mu_k + r^2 [+ q^2]),

with ``q^2 = 1 / (12 gain^2)`` the rounding (quantisation) variance in electrons when
asked. The bound on an unbiased estimate of x is ``sqrt((I^-1)_xx)``. Here mu is the
*actual rendered* expected image (:func:`colloidcg.synthetic.scenes.expected_image`), and the
derivatives are taken numerically, so the bound holds for any PSF and pixel sampling.
``nuisance=True`` adds the spot's photon count (or amplitude) and a local background level
as unknown parameters (they cost nothing when the spot is symmetric about the pixel grid).

Pixels at or above a ``saturation`` grey level carry no information and are left out
(8-bit clipping). JPEG compression is not modelled: its bound is that of the image
before compression, an optimistic bound.

Reference: K. I. Mortensen, L. S. Churchman, J. A. Spudich, H. Flyvbjerg, "Optimized
localization analysis for single-molecule tracking and super-resolution microscopy",
Nat. Methods 7, 377 (2010); :func:`mortensen_sigma` is their eq. (6) for a
pixel-integrated Gaussian.
"""

from __future__ import annotations

import numpy as np
from scipy import integrate

__all__ = ["fisher_information", "crb_spot", "crb_particles", "mortensen_sigma"]


def fisher_information(mu, dmu, read_noise: float = 0.0, gain: float = 1.0,
                       quantisation: bool = False, use=None, poisson: bool = True) -> np.ndarray:
    """Fisher matrix (P, P) from the expected image ``mu`` (..., electrons) and its
    derivatives ``dmu`` (P, ...) for Poisson + Gaussian read noise (electrons).

    ``use``: optional boolean mask of the pixels that count (e.g. not saturated).
    ``poisson=False``: Gaussian read noise alone (images rendered without shot noise).
    """
    mu = np.asarray(mu, float)
    dmu = np.asarray(dmu, float).reshape(len(dmu), -1)
    var = (np.maximum(mu, 0.0).ravel() if poisson else np.zeros(mu.size)) + read_noise ** 2
    if quantisation:
        var = var + 1.0 / (12.0 * gain ** 2)
    var = np.maximum(var, 1e-12)
    w = 1.0 / var
    if use is not None:
        w = w * np.asarray(use, bool).ravel()
    return (dmu * w) @ dmu.T


def _bound(fisher, nuisance):
    f = fisher if nuisance else fisher[:2, :2]
    try:
        inv = np.linalg.inv(f)
    except np.linalg.LinAlgError:
        return np.array([np.inf, np.inf])
    d = np.diag(inv)[:2]
    return np.sqrt(np.where(d > 0, d, np.inf))


def crb_spot(psf: str = "gauss_pixel", diameter: float = 10.0, sigma_over_d: float = 0.25,
             photons: float | None = None, amplitude: float | None = None,
             background: float = 0.0, read_noise: float = 0.0, x: float = 0.0, y: float = 0.0,
             nuisance: bool = True, gain: float = 1.0, offset: float = 0.0,
             quantisation: bool = False, saturation: float | None = None, h: float = 1e-4,
             poisson: bool = True, **psf_kw) -> tuple[float, float]:
    """Per-axis CRB (px) of one isolated spot, rendered as :mod:`colloidcg.synthetic.scenes` does.

    ``x, y``: the spot's offset from a pixel centre (px). ``photons``/``amplitude``,
    ``background`` and ``read_noise`` in electrons; ``gain`` (grey per electron),
    ``offset`` and ``saturation`` (grey level, e.g. 255) decide which pixels are clipped.
    Returns ``(crb_x, crb_y)``.
    """
    from ..synthetic.scenes import _window, psf_patch

    if photons is None and amplitude is None:
        raise ValueError("give photons or amplitude")
    sigma = sigma_over_d * diameter
    half = _window(psf, sigma, diameter, psf_kw.get("ring_radius", 0.45),
                   psf_kw.get("ring_width", 0.1)) + 2
    level = photons if photons is not None else amplitude

    def spot(dx, dy, lv=level):
        return psf_patch(psf, dx, dy, sigma, diameter, half,
                         photons=lv if photons is not None else None,
                         amplitude=lv if amplitude is not None else None, **psf_kw)

    s0 = spot(x, y)
    mu = s0 + background
    dmu = np.stack([(spot(x + h, y) - spot(x - h, y)) / (2 * h),
                    (spot(x, y + h) - spot(x, y - h)) / (2 * h),
                    s0 / level, np.ones_like(s0)])
    use = None if saturation is None else gain * mu + offset < saturation
    f = fisher_information(mu, dmu, read_noise, gain, quantisation, use, poisson)
    cx, cy = _bound(f, nuisance)
    return float(cx), float(cy)


def crb_particles(positions, diameters, shape, psf: str = "gauss_pixel",
                  sigma_over_d: float = 0.25, photons=None, amplitude=None, contrast=1.0,
                  background=0.0, read_noise: float = 0.0, gain: float = 1.0,
                  offset: float = 0.0, quantisation: bool = False,
                  saturation: float | None = None, indices=None, nuisance: bool = True,
                  h: float = 1e-4, poisson: bool = True, floor: float | None = 0.0,
                  neighbours: str = "known", reach: float = 1.5, **psf_kw) -> np.ndarray:
    """Per-particle, per-axis CRB (px) in a crowded frame, shape (len(indices), 2).

    ``neighbours="known"``: each particle's position (and, with ``nuisance``, its
    brightness and the local background) is unknown, its neighbours' contributions to the
    expected image are known: the bound for a perfect neighbour-aware fit, where their
    photons add noise but their overlap costs nothing.

    ``neighbours="fitted"``: the particle and every neighbour closer than ``reach`` x the
    contact distance are estimated jointly (positions and brightnesses, and one local
    background), over the union of their windows; the neighbours' own neighbours are known.
    This is the honest bound in crowding: overlapping spots share information, so it is
    larger than the "known" one (much larger when spots overlap strongly).

    Other arguments as :func:`colloidcg.synthetic.scenes.render`; ``floor`` as in
    :func:`colloidcg.synthetic.scenes.expected_image`.
    """
    from ..neighbours import Tree
    from ..synthetic.scenes import _psf_kw, _window, expected_image, psf_patch

    if neighbours not in ("known", "fitted"):
        raise ValueError(f"neighbours must be 'known' or 'fitted', got {neighbours!r}")
    pos = np.asarray(positions, float).reshape(-1, 2)
    n = len(pos)
    d = np.broadcast_to(np.asarray(diameters, float), (n,))
    if (photons is None) == (amplitude is None):
        raise ValueError("give exactly one of photons or amplitude")
    mu = expected_image(pos, d, shape, psf=psf, sigma_over_d=sigma_over_d, photons=photons,
                        amplitude=amplitude, contrast=contrast, background=background,
                        floor=floor, **psf_kw)
    kw = _psf_kw(n, contrast=contrast, level=photons if photons is not None else amplitude,
                 ring_radius=psf_kw.get("ring_radius", 0.45),
                 ring_width=psf_kw.get("ring_width", 0.1),
                 ring_depth=psf_kw.get("ring_depth", 0.6))
    hh, ww = shape
    halves = np.array([_window(psf, sigma_over_d * d[j], d[j], kw["ring_radius"][j],
                               kw["ring_width"][j]) for j in range(n)])
    tree = Tree(pos) if neighbours == "fitted" and n > 1 else None

    def derivs(j, box):
        """dmu/dx_j, dmu/dy_j, dmu/dlevel_j of particle j on the box (x0, y0, x1, y1)."""
        x, y = pos[j]
        cx, cy = int(np.round(x)), int(np.round(y))
        half = halves[j]
        lv = kw["level"][j]
        sig = sigma_over_d * d[j]

        def spot(dx, dy):
            return kw["contrast"][j] * psf_patch(
                psf, dx, dy, sig, d[j], half,
                photons=lv if photons is not None else None,
                amplitude=lv if amplitude is not None else None,
                ring_radius=kw["ring_radius"][j], ring_width=kw["ring_width"][j],
                ring_depth=kw["ring_depth"][j])

        bx0, by0, bx1, by1 = box
        out = np.zeros((3, by1 - by0, bx1 - bx0))
        px0, py0 = cx - half, cy - half
        xs, ys = max(px0, bx0), max(py0, by0)
        xe, ye = min(cx + half + 1, bx1), min(cy + half + 1, by1)
        if xe <= xs or ye <= ys:
            return out
        src = (slice(ys - py0, ye - py0), slice(xs - px0, xe - px0))
        dst = (slice(ys - by0, ye - by0), slice(xs - bx0, xe - bx0))
        ddx, ddy = x - cx, y - cy
        out[0][dst] = ((spot(ddx + h, ddy) - spot(ddx - h, ddy)) / (2 * h))[src]
        out[1][dst] = ((spot(ddx, ddy + h) - spot(ddx, ddy - h)) / (2 * h))[src]
        out[2][dst] = (spot(ddx, ddy) / lv)[src]
        return out

    idx = np.arange(n) if indices is None else np.asarray(indices)
    res = np.full((len(idx), 2), np.inf)
    for row, i in enumerate(idx):
        group = [int(i)]
        if tree is not None:
            near = tree.within(reach * 0.5 * (d[i] + d.max()), query=pos[i])
            group += [int(j) for j in near if j != i
                      and np.hypot(*(pos[j] - pos[i])) < reach * 0.5 * (d[i] + d[j])]
        cx, cy = int(np.round(pos[i, 0])), int(np.round(pos[i, 1]))
        box = [cx - halves[i], cy - halves[i], cx + halves[i] + 1, cy + halves[i] + 1]
        for j in group[1:]:
            jx, jy = int(np.round(pos[j, 0])), int(np.round(pos[j, 1]))
            box = [min(box[0], jx - halves[j]), min(box[1], jy - halves[j]),
                   max(box[2], jx + halves[j] + 1), max(box[3], jy + halves[j] + 1)]
        box = [max(box[0], 0), max(box[1], 0), min(box[2], ww), min(box[3], hh)]
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        blocks = [derivs(j, box) for j in group]
        dmu = np.concatenate(blocks + [np.ones((1, box[3] - box[1], box[2] - box[0]))])
        if not nuisance:
            dmu = np.concatenate([b[:2] for b in blocks])
        m = mu[box[1]:box[3], box[0]:box[2]]
        use = None if saturation is None else gain * m + offset < saturation
        f = fisher_information(m, dmu, read_noise, gain, quantisation, use, poisson)
        try:
            inv = np.linalg.inv(f)
        except np.linalg.LinAlgError:
            continue
        v = np.diag(inv)[:2]
        res[row] = np.sqrt(np.where(v > 0, v, np.inf))
    return res


def mortensen_sigma(sigma: float, photons: float, background: float = 0.0,
                    pixel: float = 1.0) -> float:
    """Per-axis localisation precision of the maximum-likelihood fit of a pixel-integrated
    Gaussian (Mortensen et al. 2010, eq. 6; no EMCCD excess noise).

    ``sigma`` and ``pixel`` in the same length unit; ``photons`` the spot's total;
    ``background`` photons per pixel.
    """
    sa2 = sigma ** 2 + pixel ** 2 / 12.0
    if background <= 0:
        return float(np.sqrt(sa2 / photons))
    tau = 2 * np.pi * sa2 * background / (photons * pixel ** 2)
    val, _ = integrate.quad(lambda t: np.log(t) / (1 + t / tau), 0.0, 1.0, limit=200)
    return float(np.sqrt(sa2 / photons / (1.0 + val)))
