"""Default lag, cutoff and threshold, measured from the data.

The rules (also in docs/rearrangements.md):

- **cutoff** (px): the first minimum of g(r) after its first peak
  (:func:`colloidcg.structure.cutoff_from_gr`): g(r) from up to 50 evenly spaced frames,
  bins of a/40 smoothed over 2 bins, the peak and the minimum required to differ by 4
  Poisson standard errors; 1.5 mean spacings when g(r) has no such minimum (a gas).
- **lag** (frames): the onset of the cage-rattling plateau, kept well below the cutoff.
  The typical displacement u(tau) = sqrt(median |dr(tau) - <dr(tau)>|^2) (drift-corrected:
  the mean displacement of each frame pair is removed; the median keeps rare
  rearrangements out) is measured at up to 25 lags between 1 and max(1, n_frames // 10).
  Lags with u <= ``RATTLE_FRACTION`` = 0.1 x cutoff are admissible; with L the longest
  admissible one, the lag is the shortest admissible tau with u(tau) >= ``PLATEAU`` = 0.9
  u(L). In a caged system (u levels off) this is where the cage has been explored, so a
  longer lag adds no rattling but blurs events in time; where u keeps growing
  (diffusion) it is close to L. tau = 1 when no lag is admissible.
- **threshold** (on ``d2min_norm``, dimensionless): the tail beyond the cage-rattling
  bulk. On log10(d2min_norm) of the finite, non-edge rows, the bulk's centre is the
  median m and its width the robust standard deviation s = 1.4826 x MAD; the threshold
  is 10^(m + ``N_SIGMA`` s) with N_SIGMA = 3. For pure thermal rattling (a log-chi^2
  bulk) this flags about 1e-4 of the rows.
"""

from __future__ import annotations

import numpy as np

from ..errors import ColloidcgError, ParameterError
from ..structure.frames import Frames
from ..structure.rdf import cutoff_from_gr

RATTLE_FRACTION = 0.1
PLATEAU = 0.9
N_SIGMA = 3.0

__all__ = ["cutoff_from_gr", "choose_lag", "choose_threshold", "typical_displacement",
           "RATTLE_FRACTION", "PLATEAU", "N_SIGMA"]


def typical_displacement(fr: Frames, lag: int, max_starts: int = 100) -> float:
    """Drift-corrected median displacement (px) over ``lag`` frames.

    Uses up to ``max_starts`` evenly spaced start frames; NaN if no particle is present
    ``lag`` frames apart.
    """
    fidx = fr.frame_index()
    n_f = len(fr.frames)
    sel = np.zeros(n_f, bool)
    sel[np.unique(np.linspace(0, n_f - 1, min(max_starts, n_f)).round().astype(int))] = True
    rows = np.flatnonzero(sel[fidx])
    nxt = fr.shifted_rows(lag, rows)
    rows, nxt = rows[nxt >= 0], nxt[nxt >= 0]
    if len(rows) == 0:
        return float("nan")
    dr = fr.pos[nxt] - fr.pos[rows]
    f = fidx[rows]
    cnt = np.bincount(f, minlength=n_f)
    drift = np.stack([np.bincount(f, dr[:, k], n_f) for k in range(fr.dim)], axis=1)
    drift /= np.maximum(cnt, 1)[:, None]
    return float(np.sqrt(np.median(np.square(dr - drift[f]).sum(1))))


def choose_lag(fr: Frames, cutoff: float, fraction: float = RATTLE_FRACTION,
               plateau: float = PLATEAU) -> tuple[int, dict]:
    """The default lag (frames) for D2min; see the module docstring for the rule.

    Returns
    -------
    lag : int
    info : dict
        ``{"lags": [...], "displacement_px": [...]}``, the measured curve u(tau).
    """
    span = int(fr.frames[-1] - fr.frames[0]) + 1
    if span < 2:
        raise ParameterError("lag: the tracks hold a single frame; D2min needs at least two")
    tau_max = max(1, span // 10)
    lags = np.unique(np.round(np.geomspace(1, tau_max, min(tau_max, 25))).astype(int))
    disp = np.array([typical_displacement(fr, int(t)) for t in lags])
    ok = disp <= fraction * cutoff
    if not ok.any():
        lag = 1
    else:
        u_max = disp[np.flatnonzero(ok)[-1]]  # at L, the longest admissible lag
        lag = int(lags[ok & (disp >= plateau * u_max)].min())
    return lag, {"lags": lags.tolist(), "displacement_px": disp.tolist()}


def choose_threshold(d2min_norm: np.ndarray, edge: np.ndarray | None = None,
                     n_sigma: float = N_SIGMA) -> float:
    """The default ``rearranging`` threshold on ``d2min_norm``; see the module docstring.

    Parameters
    ----------
    d2min_norm : (R,) float64
    edge : (R,) bool, optional  rows to leave out (cutoff disc leaves the field of view)
    n_sigma : float
    """
    v = np.asarray(d2min_norm, float)
    keep = np.isfinite(v) & (v > 0)
    if edge is not None:
        keep &= ~np.asarray(edge, bool)
    if keep.sum() < 10:
        raise ColloidcgError(f"threshold: only {int(keep.sum())} finite D2min value(s) away from the "
                             f"edges; too few to set a threshold from the data (pass threshold)")
    lv = np.log10(v[keep])
    m = np.median(lv)
    s = 1.4826 * np.median(np.abs(lv - m))
    return float(10.0 ** (m + n_sigma * s))
