"""Transport calibration: one scale on every friction coefficient, chosen so that
rollouts reproduce the training data's mean squared displacement.

Why. The likelihood fits the friction to one-frame transitions. Where the data's velocity
relaxation has memory on the scale of a frame (a coarse-grained particle whose surroundings
do not relax instantly: a star polymer's arms), a Markovian model that matches the
one-frame correlation relaxes too slowly afterwards and diffuses too fast (the star melt's
known answer: lag-1 velocity correlation matched exactly, D 20-25 % high). The Markovian
closure of a memory kernel that keeps the long-time transport is its time integral
(Green-Kubo: D = kT / (m gamma_eff), gamma_eff the integral of the memory kernel; Mori-
Zwanzig, see Li, Bian, Li, Karniadakis, J. Chem. Phys. 143, 243128 (2015) for star polymer
melts). Scaling the friction by one factor f moves the model toward that closure; its noise
follows from the friction (fluctuation-dissipation), so the model keeps every structural
guarantee.

How. Stochastic rollouts from the training data's own state (its second frame, the first
with a velocity), positions
of the data's particles with every particle present throughout, the MSD averaged over all
time origins of the window, model against data; f solves mean_lag log(MSD_model / MSD_data)
= 0 (every lag weighed alike, as the known answers score MSD): the root of a straight line
in log f fitted to every evaluation, since a rollout's MSD is noisy. Nothing outside the
training frames is used.

Where it stops working: it fixes one number (the long-time mobility); the shape of the
velocity correlation within the memory time stays that of a Markovian model, and with
few frames (a window shorter than a few velocity relaxation times) the data's MSD does not
reach the diffusive regime and f is poorly determined (reported as ``converged`` False).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.model import MetriplecticModel
from ..data import Trajectory
from .validation import data_window, stability_at, window_rollout

#: integration steps per frame of the calibration rollouts, at least (more where linear
#: stability asks for more, :mod:`colloidcg.core.stability`); recorded in the model's
#: ``transport_substeps``, which ``simulate --substeps auto`` then takes
SUBSTEPS = 4


def msd_all_origins(r: torch.Tensor, max_lag: int) -> np.ndarray:
    """(max_lag,) MSD at lags 1..max_lag, averaged over every time origin and particle of
    unwrapped positions ``r`` (T, N, d) [length^2]."""
    return np.array([float((r[k:] - r[:-k]).square().sum(-1).mean()) for k in range(1, max_lag + 1)])


def _line_root(xs: list, gs: list) -> tuple[float, float, float]:
    """Least-squares line g = a + b x through the evaluations; returns (root -a / b, b,
    standard error of the root) with b held <= -0.1 (MSD falls as the friction grows; a
    flatter or rising fit, from noise, steps as the diffusive limit's b = -1 would)."""
    x, g = np.asarray(xs, float), np.asarray(gs, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float(x[-1] + g[-1]), -1.0, float("nan")
    b, a = np.polyfit(x, g, 1)
    if not b <= -0.1:
        b, a = -1.0, float(np.mean(g + x))
    root = -a / b
    if len(x) < 3:
        return float(root), float(b), float("nan")
    resid = g - (a + b * x)
    s = math.sqrt(float(resid @ resid) / (len(x) - 2))
    sxx = float(((x - x.mean()) ** 2).sum())
    se = s / abs(b) * math.sqrt(1.0 / len(x) + (root - x.mean()) ** 2 / sxx)
    return float(root), float(b), float(se)


def calibrate_transport(model: MetriplecticModel, traj: Trajectory, frames: int = 100, seeds: int = 3,
                        evaluations: int = 6, tol: float = 0.01, seed: int = 0) -> dict:
    """Set ``model``'s ``friction_scale`` so that its rollouts reproduce the MSD of ``traj``
    over lags 1..frames // 2 (see the module docstring); returns the report: ``factor``
    (the scale applied, relative to the fitted friction) and ``factor_rel_se`` (its
    relative standard error from the rollouts' noise), ``log_msd_ratio_before`` (mean over
    lags of log(MSD_model / MSD_data) at the fitted friction), ``slope`` (of that mean log
    ratio against log factor), ``converged``, ``frames``, ``max_lag``, ``particles``, and
    every evaluation's (factor, log ratio).

    A rollout's MSD is noisy (a many-body rollout does not follow its random numbers
    smoothly as the friction changes), so the factor is the root of a straight line fitted
    to every evaluation of the mean log ratio against log factor, refined by evaluating
    there until the root moves by less than ``tol`` (relative).

    ``frames``: rollout length (the trajectory's frames at most); ``seeds``: rollouts per
    evaluation (their MSDs are pooled); ``evaluations``: at most, after the first.
    """
    start = 1                     # the first frame with a velocity (a backward difference)
    steps = min(int(frames), traj.n_frames - 1 - start)
    max_lag = steps // 2
    if max_lag < 2:
        return {"factor": 1.0, "converged": False, "reason": f"{traj.n_frames} frames: too few for an MSD"}
    idx, data_r, interior = data_window(traj, start, steps)
    if int(interior.sum()) < 2:
        return {"factor": 1.0, "converged": False, "reason": "fewer than 2 particles present in every frame"}
    msd_data = msd_all_origins(data_r[:, interior], max_lag)
    base = float(model.friction_scale)
    st = stability_at(model, traj, start)      # with the fitted friction
    substeps = max(SUBSTEPS, st.substeps if st is not None else 1)

    def log_ratio(x: float) -> float:
        model.update_config(friction_scale=base * math.exp(x))
        m = np.mean([msd_all_origins(window_rollout(model, traj, start, steps, idx, interior, seed + k, substeps)
                                     [:, interior], max_lag) for k in range(seeds)], axis=0)
        if not np.all(np.isfinite(m)) or np.any(m <= 0):
            return float("inf")
        return float(np.mean(np.log(m / msd_data)))

    xs, gs = [0.0], [log_ratio(0.0)]
    converged = False
    root, slope, se = 0.0, float("nan"), float("nan")
    if math.isfinite(gs[0]):
        root, slope, se = _line_root(xs, gs)
        for _ in range(evaluations):
            x = float(np.clip(root, xs[-1] - 1.0, xs[-1] + 1.0))
            g = log_ratio(x)
            if not math.isfinite(g):          # a diverging rollout: step back halfway
                root = 0.5 * (x + xs[-1])
                continue
            xs.append(x)
            gs.append(g)
            new_root, slope, se = _line_root(xs, gs)
            moved = abs(new_root - root)
            root = new_root
            if moved <= tol and len(xs) >= 3:
                converged = True
                break
    factor = math.exp(root)
    model.update_config(friction_scale=base * factor, transport_substeps=substeps)
    return {"factor": factor, "factor_rel_se": se, "friction_scale": base * factor,
            "log_msd_ratio_before": gs[0], "slope": slope, "converged": converged, "frames": steps,
            "max_lag": max_lag, "particles": int(interior.sum()), "seeds": seeds, "substeps": substeps,
            "evaluations": [{"factor": math.exp(x), "log_msd_ratio": g} for x, g in zip(xs, gs)]}
