"""The multi-step drift's horizon chosen from the small systems alone (``horizon="auto"``).

:func:`~.macro.refine_drift` refits the drift so that its integrated path follows the block
states' own trajectories over H macro steps; H = 0 keeps the one-step likelihood's drift.
Which H is right depends on how far the process seen through z is from Markov, which only
the data can say. :func:`choose_horizon` picks H by K-fold cross-validation over the small
systems (the training quenches or experiments), never looking at a large system:

1. The n small systems are split into ``folds`` groups (a seeded permutation).
2. For each fold, block states are drawn from the other systems only
   (:func:`~.macro.block_draw`, one draw per fold, the same for every H), one SDE is
   fitted by the one-step likelihood (lambda = K) and, for each candidate H >= 1, a copy of
   it is refitted with the multi-step drift over H steps.
3. Each candidate's SDE is run from the held-out systems' mean z at the first time for the
   whole duration, for a system of K small boxes (``runs`` runs, a fixed seed), and its
   ensemble mean is scored against the held-out systems' own mean trajectory: the mean
   over times and variables of ((prediction - held-out mean) / s)^2, s the spread of each
   variable over all systems and times. The held-out trajectory is what the large system's
   ensemble mean is an estimate of: a block state of K small systems is the large system
   that the SDE describes.
4. Per candidate the scores are averaged over the folds. The smallest H whose mean score
   is within one standard error of the best one's (the standard error of the per-fold
   paired difference) is chosen: the one-standard-error rule (Breiman et al. 1984,
   *Classification and Regression Trees*, section 3.4.3; Hastie, Tibshirani & Friedman,
   *The Elements of Statistical Learning*, 2nd ed., section 7.10), so that H > 0 is taken
   only when the data show the one-step drift missing its own held-out paths.

Every random choice (the folds, the block draws, the fits, the runs) is seeded by ``seed``:
the same data and seed give the same H.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..errors import ParameterError

__all__ = ["AUTO_HORIZONS", "choose_horizon"]

#: Horizons (macro steps) tried by ``horizon="auto"`` (:func:`choose_horizon`).
AUTO_HORIZONS = (0, 2, 4, 8, 16)

#: Folds of the cross-validation over the small systems.
AUTO_FOLDS = 4


def choose_horizon(z, weights=None, *, blocks: int, dt: float, candidates=AUTO_HORIZONS, folds: int = AUTO_FOLDS,
                   sets_per_step: int = 8, runs: int = 200, seed: int = 0, iterations: int = 300,
                   path_iterations: int = 200, path_lr: float = 1e-3, names=None,
                   progress: bool = False) -> tuple[int, dict]:
    """The multi-step drift's horizon H, chosen by cross-validation over the small systems.

    z : (n, steps, d) the small systems' z along their trajectories, one macro step
        (``dt`` frames) apart, all systems at the same times. weights : (n, steps) their
        particle counts (None: equal). blocks : K, small systems per block state (the
        SDE describes K small boxes, lambda = K).
    candidates : horizons tried, macro steps (0: the one-step drift); those longer than
        the trajectories (> steps - 1) are left out. folds : groups the systems are split
        into (2 <= folds <= n). sets_per_step, iterations : as :func:`~.macro.block_draw`
        and :func:`~.macro.fit_sde`; path_iterations, path_lr : as
        :func:`~.macro.refine_drift`. runs : SDE runs per score.
    Returns (H, report): the report has the candidates, the per-fold scores
    ((folds, candidates), dimensionless), their means and the standard errors of their
    differences to the best, the best H and the chosen one.
    Costs ``folds`` one-step fits and ``folds x (candidates - 1)`` drift refits.
    """
    from .macro import block_draw, fit_sde, refine_drift, systems_and_weights

    z, w = systems_and_weights(z, weights, min_steps=3)
    n, steps, d = z.shape
    if isinstance(folds, bool) or int(folds) != folds or not 2 <= folds <= n:
        raise ParameterError(f"folds: expected an integer from 2 to the number of systems ({n}), got {folds!r}")
    cands = sorted({int(h) for h in candidates})
    if not cands or cands[0] < 0 or any(int(h) != h or isinstance(h, bool) for h in candidates):
        raise ParameterError(f"candidates: expected horizons >= 0 macro steps, got {list(candidates)!r}")
    cands = [h for h in cands if h <= steps - 1] or [0]
    K = int(blocks)
    names = [f"z{i}" for i in range(d)] if names is None else list(names)
    scale = np.maximum(z.reshape(-1, d).std(0), 1e-12)
    perm = np.random.default_rng([int(seed), 7]).permutation(n)
    groups = np.array_split(perm, int(folds))
    Hmax = max(max(cands), 1)
    scores = np.zeros((int(folds), len(cands)))
    it = enumerate(groups)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, total=len(groups), desc="horizon: folds")
    for f, held in it:
        train = np.setdiff1d(np.arange(n), held)
        draw = block_draw(z[train], w[train], blocks=K, sets_per_step=sets_per_step, seed=int(seed) + f,
                          horizon=Hmax)
        one, _ = fit_sde(draw.z0, draw.z1, dt=float(dt), names=names, lam=float(K), area_px2=float(K),
                         tile_area_px2=1.0, seed=int(seed) + f, iterations=iterations)
        target = (w[held, :, None] * z[held]).sum(0) / w[held, :, None].sum(0)        # (steps, d)
        for c, H in enumerate(cands):
            sde = one
            if H:
                sde = copy.deepcopy(one)
                refine_drift(sde, draw.paths[:, :H + 1], iterations=path_iterations, lr=path_lr,
                             seed=int(seed) + f)
            pred = sde.simulate(steps=steps - 1, runs=runs, z0=target[0], seed=int(seed) + f).mean(0)
            scores[f, c] = float(np.mean(((pred[1:] - target[1:]) / scale) ** 2))
    mean = scores.mean(0)
    best = int(np.argmin(mean))
    diff = scores - scores[:, [best]]
    se = diff.std(0, ddof=1) / math.sqrt(len(groups))
    chosen = next(c for c in range(len(cands)) if mean[c] - mean[best] <= se[c])
    report = {"candidates": cands, "folds": int(folds), "scores": scores.tolist(), "mean_score": mean.tolist(),
              "se_of_difference_to_best": se.tolist(), "best": cands[best], "chosen": cands[chosen],
              "rule": "smallest horizon within one standard error of the best held-out score"}
    return cands[chosen], report
