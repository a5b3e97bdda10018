"""Rendering particle positions into microscope-like images.

Pixel convention (trackpy's): x = column, y = row, pixel (row r, column c) covers
[c - 1/2, c + 1/2) x [r - 1/2, r + 1/2), so pixel centres sit at integer coordinates.

Fluorescence: each particle is a 2D Gaussian spot integrated exactly over every pixel's
area, which for an isotropic Gaussian factorises into x and y erf differences:

    I(c, r) = A * Gx(c) * Gy(r),   Gx(c) = [erf((c + 1/2 - x)/(sqrt2 s)) - erf((c - 1/2 - x)/(sqrt2 s))]/2

Bright-field: a radial profile on a grey background (bright centre, dark edge ring, faint
outer halo), averaged over 2 x 2 sub-pixel samples, multiplied into the illumination.

Noise: expected photon image -> Poisson (shot noise) -> + Gaussian read noise -> gain ->
rounded and clipped to the bit depth.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

_SQRT2 = np.sqrt(2.0)


def background_field(height: int, width: int, unevenness: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Smooth illumination/background pattern of mean 1, shape (H, W).

    A linear gradient in a random direction, a radial vignette and three broad Gaussian
    bumps, scaled so that the peak-to-mean deviation is about ``unevenness``.
    """
    if unevenness == 0:
        return np.ones((height, width))
    y, x = np.mgrid[0:height, 0:width].astype(float)
    u = (x - (width - 1) / 2) / max(width, height)
    v = (y - (height - 1) / 2) / max(width, height)
    ang = rng.uniform(0, 2 * np.pi)
    field = np.cos(ang) * u + np.sin(ang) * v  # gradient, range ~ +-0.5
    field = field - 1.0 * (u * u + v * v)  # vignette
    for _ in range(3):
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        w = rng.uniform(0.15, 0.35)
        field = field + rng.uniform(-0.4, 0.4) * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * w * w))
    field = field - field.mean()
    span = np.max(np.abs(field))
    if span > 0:
        field = field * (unevenness / span)
    return np.clip(1.0 + field, 0.05, None)


def _splat(img: np.ndarray, border: int, cx: np.ndarray, cy: np.ndarray,
           wx: np.ndarray, wy: np.ndarray, amp: np.ndarray) -> None:
    """Add separable patches amp * wy[:, :, None] * wx[:, None, :] into ``img``.

    img: (H + 2 border, W + 2 border) buffer, so every patch lies inside it; cx, cy: (N,)
    image column/row of each patch's first pixel; wx, wy: (N, P) weights.
    """
    hb, wb = img.shape
    p = wx.shape[1]
    base = (cy + border) * wb + (cx + border)  # (N,)
    off = (np.arange(p)[:, None] * wb + np.arange(p)[None, :]).ravel()  # (P*P,)
    idx = (base[:, None] + off[None, :]).ravel()
    vals = ((amp[:, None] * wy)[:, :, None] * wx[:, None, :]).ravel()
    img.ravel()[:] += np.bincount(idx, weights=vals, minlength=hb * wb)


def fluorescence_spots(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, peak: np.ndarray,
                       height: int, width: int, chunk: int = 4096) -> np.ndarray:
    """Sum of pixel-integrated Gaussian spots, (H, W) float64.

    Parameters
    ----------
    x, y : (N,) spot centres, px (x = column, y = row).
    sigma : (N,) spot standard deviations, px.
    peak : (N,) value of the continuous Gaussian at its centre times the pixel area
        (so total integrated signal = peak * 2 pi sigma^2).
    """
    if len(x) == 0:
        return np.zeros((height, width))
    half = int(np.ceil(4.0 * float(np.max(sigma))))
    off = np.arange(-half, half + 1, dtype=float)
    # spots are clipped to a border around the image so that each patch fits the buffer
    reach = half + 2
    keep = (x > -reach) & (x < width - 1 + reach) & (y > -reach) & (y < height - 1 + reach)
    x, y, sigma, peak = x[keep], y[keep], sigma[keep], peak[keep]
    border = 2 * half + 3
    img = np.zeros((height + 2 * border, width + 2 * border))
    for s in range(0, len(x), chunk):
        xs, ys, sg, pk = x[s:s + chunk], y[s:s + chunk], sigma[s:s + chunk], peak[s:s + chunk]
        ix = np.round(xs).astype(np.int64)
        iy = np.round(ys).astype(np.int64)
        k = _SQRT2 * sg[:, None]
        ex = ix[:, None] + off[None, :] - xs[:, None]  # pixel centre - x
        ey = iy[:, None] + off[None, :] - ys[:, None]
        wx = 0.5 * (erf((ex + 0.5) / k) - erf((ex - 0.5) / k))
        wy = 0.5 * (erf((ey + 0.5) / k) - erf((ey - 0.5) / k))
        amp = pk * 2.0 * np.pi * sg * sg
        _splat(img, border, ix - half, iy - half, wx, wy, amp)
    return img[border:border + height, border:border + width].copy()


def brightfield_profile(r: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Relative intensity change at distance r (px) from a particle of given radius.

    Bright centre (+0.45), dark ring just inside the edge (-0.7 at 0.85 a), faint bright
    halo outside (+0.12 at 1.15 a): the look of in-focus colloids in bright field.
    """
    q = r / radius
    return (0.45 * np.exp(-q * q / (2 * 0.3 ** 2))
            - 0.7 * np.exp(-((q - 0.85) ** 2) / (2 * 0.12 ** 2))
            + 0.12 * np.exp(-((q - 1.15) ** 2) / (2 * 0.1 ** 2)))


# the profile tabulated in q = r/a (its value beyond q = 1.6 is < 1e-4)
_Q_TABLE = np.linspace(0.0, 1.6, 3201)
_P_TABLE = brightfield_profile(_Q_TABLE, 1.0)
_P_TABLE[-1] = 0.0
_DQ = _Q_TABLE[1] - _Q_TABLE[0]
_DP_TABLE = np.append(np.diff(_P_TABLE), 0.0)


def brightfield_rings(x: np.ndarray, y: np.ndarray, diam: np.ndarray, contrast: np.ndarray,
                      height: int, width: int, chunk: int = 2048) -> np.ndarray:
    """Sum of bright-field particle profiles, (H, W) float64 (relative to background 1)."""
    img = np.zeros(height * width)
    if len(x) == 0:
        return img.reshape(height, width)
    half = int(np.ceil(0.5 * float(np.max(diam)) * 1.5))
    p = 2 * half + 1
    off = np.arange(-half, half + 1, dtype=float)
    sub = np.array([-0.25, 0.25])
    for s in range(0, len(x), chunk):
        xs, ys, dd, cc = x[s:s + chunk], y[s:s + chunk], diam[s:s + chunk], contrast[s:s + chunk]
        ix = np.round(xs).astype(np.int64)
        iy = np.round(ys).astype(np.int64)
        ex = ix[:, None] + off[None, :] - xs[:, None]
        ey = iy[:, None] + off[None, :] - ys[:, None]
        vals = np.zeros((len(xs), p, p))
        for sx in sub:
            for sy in sub:
                r = np.sqrt((ey[:, :, None] + sy) ** 2 + (ex[:, None, :] + sx) ** 2)
                u = np.minimum(r * (2.0 / (dd * _DQ))[:, None, None], len(_Q_TABLE) - 1.0)
                i0 = u.astype(np.intp)  # linear interpolation on the uniform table
                vals += _P_TABLE[i0] + (u - i0) * _DP_TABLE[i0]
        vals *= 0.25 * cc[:, None, None]
        rows = (iy - half)[:, None] + np.arange(p)[None, :]
        cols = (ix - half)[:, None] + np.arange(p)[None, :]
        idx = rows[:, :, None] * width + cols[:, None, :]
        ok = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        img += np.bincount(idx[ok], weights=vals[ok], minlength=height * width)
    return img.reshape(height, width)


def digitise(expected: np.ndarray, gain: float, read_noise: float, bit_depth: int,
             rng: np.random.Generator) -> np.ndarray:
    """Photon image -> camera counts: Poisson, + read noise, x gain, round, clip."""
    counts = rng.poisson(np.clip(expected, 0, None)).astype(np.float64)
    if read_noise > 0:
        counts += rng.normal(0.0, read_noise, size=counts.shape)
    top = 2 ** bit_depth - 1
    out = np.clip(np.rint(counts * gain), 0, top)
    return out.astype(np.uint8 if bit_depth == 8 else np.uint16)
