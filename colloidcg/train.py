"""Fitting the metriplectic model to a :class:`~colloidcg.data.Trajectory`.

``fit(trajectory, TrainConfig(...))`` calibrates the model's scales to the data (friction
and temperature from the velocities' variance and lag-1 correlation read as frame averages
of a Langevin velocity; U's stiffness from a least-squares fit of the forces to the mean
velocity changes; the interaction range, when not given, by the held-out NLL of short fits),
then minimises the Gaussian transition NLL (:mod:`colloidcg.core.loss`) with Adam and a
cosine learning-rate schedule over mini-batches of frames. S is never observed: the structural
encoder predicts S_t from the configuration of every frame and is trained through the
likelihood (its S sets temperatures, pressures and friction). Optional auxiliary loss:
a logistic read-out of S predicts the detector's "rearranging" labels in the next frames.

Each epoch ends with two validation scores on the held-out (last) frames: their NLL and the
relative RMS error of the mean squared displacement of a stochastic rollout over them
(halo particles prescribed from the data) against the data's. The model is selected by
``select``: "val_nll" (default; the held-out likelihood, a proper score with little
sampling noise; an epoch whose rollout diverges is never selected) or "val_msd" (the
rollout's MSD error; noisy for short windows and few particles). Training stops early
when the score has not improved for ``patience`` epochs; the best model is kept. A non-finite loss stops training
with :class:`TrainingDiverged`, after restoring and saving the last good weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .core.graph import find_pairs, minimum_image
from .core.integrate import rollout
from .core.loss import multistep_nll, transition_nll
from .core.model import MetriplecticModel, ModelConfig, State
from .core.nets import inv_softplus
from .core.ou import coefficients as ou_coefficients, invert_rho1
from .core.persist import save_model
from .data import Trajectory, near_edge
from .errors import ColloidcgError, ParameterError


class TrainingDiverged(ColloidcgError):
    """The loss became NaN or infinite; the last good weights were kept."""


@dataclass
class TrainConfig:
    """Training options (lengths in the trajectory's units, um for video data).

    cutoff : interaction range h; None picks it among ``cutoff_factors`` x the median
        nearest-neighbour distance by the held-out NLL of short fits (:func:`select_cutoff`).
    cutoff_factors : candidate cutoffs in units of the median nearest-neighbour distance.
    edge : halo width at the field-of-view border; None uses the cutoff.
    loc_noise : localisation noise (standard deviation, length units) as a number,
        "estimate" (from the lag-1 anticorrelation of displacements) or "none".
    multistep : K > 1 adds the K-step likelihood (:func:`multistep_nll`).
    aux_weight : weight of the auxiliary rearrangement loss (needs labels).
    horizon : frames ahead in which a rearrangement counts as "next" (AUC and aux loss).
    frame_average : read velocities as frame averages with a latent instantaneous velocity
        and integrate the substrate friction exactly (:mod:`colloidcg.core.ou`); off gives
        the plain Euler-Maruyama model at the frame rate.
    n_pair : terms of the learned repulsive pair energy (soft-sphere contacts with learned
        contact distances, :class:`colloidcg.core.nets.PairPotential`); 0: none.
    select : "val_nll" or "val_msd", the validation score that picks the best epoch.
    size_column : tracks column with a per-particle size (``size`` from the tracker,
        ``diameter`` in the synthetic truth) that :func:`train_tracks` reads: each pair's
        interaction range then scales with its contact distance (bidisperse packings).
        "" (default): one range for all particles. :func:`fit` uses ``traj.size`` when set.
    """

    epochs: int = 30
    batch_frames: int = 4
    lr: float = 3e-3
    lr_final_fraction: float = 0.1
    val_fraction: float = 0.2
    patience: int = 8
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    cutoff: float | None = None
    edge: float | None = None
    loc_noise: str | float = "estimate"
    multistep: int = 1
    aux_weight: float = 0.0
    horizon: int = 3
    n_s: int = 1
    n_kernel: int = 4
    n_pair: int = 8
    width: int = 50
    depth: int = 2
    substrate: bool = True
    deviatoric: bool = False
    frame_average: bool = True
    select: str = "val_nll"
    cutoff_factors: tuple = (1.05, 1.15, 1.5, 2.5)
    covariance: str = "marginal"
    val_rollout_steps: int = 20
    max_frames_per_epoch: int | None = None
    progress: bool = True
    checkpoint_dir: str | None = None
    grad_clip: float = 10.0
    size_column: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, where: str = "") -> "TrainConfig":
        """Check every option before any work (or allocation); lists are accepted where
        tuples are. Raises :class:`ParameterError` naming the option (prefixed by
        ``where``, e.g. a configuration file's ``[train]`` table). Returns self."""
        from .core.persist import MODEL_LIMITS

        pre = f"{where}" if where else ""

        def bad(name, expected, value):
            return ParameterError(f"{pre}{name}: expected {expected}, got {value!r}")

        def integer(name, lo, hi=None, none=False):
            v = getattr(self, name)
            if none and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
                raise bad(name, f"an integer {rng}", v)

        def number(name, lo, strict=True, hi=None, none=False):
            v = getattr(self, name)
            if none and v is None:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
                (v > lo if strict else v >= lo) and (hi is None or v <= hi)
            if not ok:
                rng = f"{'>' if strict else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
                raise bad(name, f"a finite number {rng}", v)

        for name in ("epochs", "batch_frames", "patience", "multistep", "horizon", "val_rollout_steps"):
            integer(name, 1)
        integer("max_frames_per_epoch", 1, none=True)
        integer("seed", 0)
        for name in ("n_s", "n_kernel", "n_pair", "width", "depth"):
            lo, hi = MODEL_LIMITS[name]
            integer(name, lo, hi)
        number("lr", 0)
        number("lr_final_fraction", 0, hi=1)
        number("val_fraction", 0, strict=False, hi=0.9)
        number("aux_weight", 0, strict=False)
        number("grad_clip", 0)
        number("cutoff", 0, none=True)
        number("edge", 0, strict=False, none=True)
        for name in ("substrate", "deviatoric", "frame_average", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false", getattr(self, name))
        if not isinstance(self.device, str) or not (
                self.device == "cpu" or self.device == "cuda" or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise bad("device", "'cpu', 'cuda' or 'cuda:N'", self.device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ParameterError(f"{pre}device: {self.device!r} requested but CUDA is not available "
                                 "on this machine; use 'cpu'")
        if self.dtype not in ("float32", "float64"):
            raise bad("dtype", "'float32' or 'float64'", self.dtype)
        if self.select not in ("val_nll", "val_msd"):
            raise bad("select", "'val_nll' or 'val_msd'", self.select)
        if self.covariance not in ("marginal", "full"):
            raise bad("covariance", "'marginal' or 'full'", self.covariance)
        if not isinstance(self.size_column, str):
            raise bad("size_column", "a column name (text)", self.size_column)
        ln = self.loc_noise
        if not (ln in ("estimate", "none") or (isinstance(ln, (int, float)) and not isinstance(ln, bool)
                                              and math.isfinite(ln) and ln >= 0)):
            raise bad("loc_noise", "'estimate', 'none' or a length >= 0", ln)
        cf = self.cutoff_factors
        if isinstance(cf, list):
            cf = tuple(cf)
            object.__setattr__(self, "cutoff_factors", cf)
        if not (isinstance(cf, tuple) and cf and all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0
                for f in cf)):
            raise bad("cutoff_factors", "a non-empty list of positive numbers", self.cutoff_factors)
        if self.aux_weight > 0 and self.n_s < 1:
            raise bad("aux_weight", "0 without entropic variables", self.aux_weight)
        return self


@dataclass
class FitResult:
    model: MetriplecticModel
    report: dict
    history: list = field(default_factory=list)


# ---------------------------------------------------------------------------- helpers
def _size(traj: Trajectory, idx) -> torch.Tensor | None:
    """Per-particle sizes of the particles ``idx`` (index tensor or mask), None without sizes."""
    return None if traj.size is None else traj.size[idx]


def _reduced_sizes(traj: Trajectory) -> torch.Tensor | None:
    """(N,) a_i = min(s_i / s_ref, 1), s_ref the sizes' 95th percentile (the model's
    ``size_scale``), or None without sizes."""
    if traj.size is None:
        return None
    return (traj.size / float(torch.quantile(traj.size.double(), 0.95))).clamp(max=1.0)


def median_nn_distance(traj: Trajectory, max_frames: int = 5) -> float:
    """Median nearest-neighbour distance; with per-particle sizes the median over particles
    of min_j |r_ij| / sigma_ij (the distance in the units in which the model's pair ranges
    are h: sigma_ij = (a_i + a_j) / 2, among the 6 nearest neighbours)."""
    from scipy.spatial import cKDTree
    a = _reduced_sizes(traj)
    vals = []
    for t in np.linspace(0, traj.n_frames - 1, min(max_frames, traj.n_frames)).astype(int):
        r = traj.pos[t][traj.present[t]].cpu().numpy()
        if len(r) < 2:
            continue
        box = None if traj.box is None else traj.box.cpu().numpy()
        tree = cKDTree(np.mod(r, box) if box is not None else r, boxsize=box)
        if a is None:
            dd, _ = tree.query(np.mod(r, box) if box is not None else r, k=2)
            vals.append(dd[:, 1])
            continue
        k = min(7, len(r))
        dd, nb = tree.query(np.mod(r, box) if box is not None else r, k=k)
        at = a[traj.present[t]].cpu().numpy()
        vals.append((dd[:, 1:] / (0.5 * (at[:, None] + at[nb[:, 1:]]))).min(1))
    if not vals:
        raise ColloidcgError("trajectory: no frame has two or more particles; nothing to learn interactions from")
    return float(np.median(np.concatenate(vals)))


def _displacement_covariance(traj: Trajectory, lag: int) -> float | None:
    """<dr_t . dr_{t+lag}> / d over particles present in the four frames t-1, t, t+lag-1,
    t+lag (dr_t = r_t - r_{t-1}); None when no particle is."""
    T = traj.n_frames
    if T < lag + 2:
        return None
    ok = traj.present[:T - lag - 1] & traj.present[1:T - lag] & traj.present[lag:T - 1] & traj.present[lag + 1:]
    if not bool(ok.any()):
        return None
    d1 = traj.pos[1:T - lag] - traj.pos[:T - lag - 1]
    d2 = traj.pos[lag + 1:] - traj.pos[lag:T - 1]
    if traj.box is not None:
        d1, d2 = minimum_image(d1, traj.box), minimum_image(d2, traj.box)
    return float((d1[ok] * d2[ok]).sum(-1).mean()) / traj.dim


def estimate_localisation_noise(traj: Trajectory) -> float:
    """sigma_loc (length units) from the correlation of successive displacements.

    Independent position errors of variance sigma^2 per coordinate add -sigma^2 to the
    covariance C(1) = <dr_t . dr_{t+1}> / d of successive displacements and nothing to
    C(2) = <dr_t . dr_{t+2}> / d. The motion itself also correlates successive
    displacements: a caged particle's are anti-correlated, with C(1) close to C(2) (they
    decay slowly with the lag). So sigma^2 = C(2) - C(1). Taking all of -C(1) as noise, as
    for free Brownian particles, overestimated sigma by 30-50 % on tracked dense synthetic
    videos (true sigma from matching to the truth: 0.0064-0.0074 um; this estimate 0.0059-
    0.0081 um), and with it the share of the velocity variance that training attributes to
    noise: rollouts then moved 10-15 % too little.

    Returns 0 when C(1) >= C(2) (persistent, inertial motion dominates); with only three
    frames (no C(2)) the free-particle estimate sqrt(-C(1)).
    """
    c1, c2 = _displacement_covariance(traj, 1), _displacement_covariance(traj, 2)
    if c1 is None:
        return 0.0
    if c2 is None:  # three frames: the free-particle estimate
        c2 = 0.0
    return math.sqrt(max(0.0, c2 - c1))


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (NaN when only one class is present)."""
    from sklearn.metrics import roc_auc_score
    ok = np.isfinite(score) & np.isfinite(label)
    y = label[ok] > 0.5
    if y.all() or (~y).all():
        return float("nan")
    return float(roc_auc_score(y, score[ok]))


def _balanced_pos_weight(traj: Trajectory, tlist, horizon: int, dtype, device) -> torch.Tensor:
    """Weight of the rearranging rows in the auxiliary loss: (negatives / positives) over
    the training frames, so both classes weigh equally (as the softness baseline's
    class-balanced logistic regression). Rearrangements are rare (typically < 1 % of
    rows): unweighted, the loss is all but indifferent to them."""
    pos = neg = 0
    for t in tlist:
        lab = _future_labels(traj, t, horizon)
        if lab is None:
            continue
        lab = lab[traj.present[t]]
        pos += int((lab == 1).sum())
        neg += int((lab == 0).sum())
    if pos == 0 or neg == 0:
        raise ParameterError(f"aux_weight: the training frames hold {pos} rearranging and {neg} other "
                             "labelled rows; the auxiliary loss needs both (detect with a lower "
                             "threshold, train on more frames, or set aux_weight 0)")
    return torch.tensor(neg / pos, dtype=dtype, device=device)


def _future_labels(traj: Trajectory, t: int, horizon: int) -> torch.Tensor | None:
    if traj.rearranging is None:
        return None
    fut = traj.rearranging[t + 1: t + 1 + horizon]
    if fut.shape[0] == 0:
        return None
    known = torch.isfinite(fut).any(0)
    lab = torch.nan_to_num(fut, nan=0.0).amax(0)
    return torch.where(known, lab, torch.full_like(lab, float("nan")))


class _Frames:
    """Per-frame cached sub-systems: the particles present at t (and their pairs)."""

    def __init__(self, traj: Trajectory, cutoff: float):
        self.traj = traj
        self.cutoff = cutoff
        self.cache: dict[int, tuple] = {}

    def get(self, t: int):
        if t not in self.cache:
            tr = self.traj
            idx = torch.nonzero(tr.present[t] & tr.present[t + 1]).squeeze(-1)
            r = tr.pos[t, idx]
            pairs = find_pairs(r, self.cutoff, tr.box)
            valid = (tr.mask[t, idx] & tr.mask[t + 1, idx])
            self.cache[t] = (idx, r, tr.vel[t, idx], tr.vel[t + 1, idx], pairs, valid)
        return self.cache[t]


# ---------------------------------------------------------------------------- calibration
def build_model(traj: Trajectory, cfg: TrainConfig, cutoff: float) -> MetriplecticModel:
    vel = traj.vel[traj.mask]
    if vel.shape[0] < 2:
        raise ColloidcgError("trajectory: fewer than two usable velocities (particles must be tracked in consecutive frames)")
    v2 = float(vel.var(0).mean())
    if not math.isfinite(v2) or v2 <= 0:
        raise ColloidcgError("trajectory: velocities are all equal (particles do not move); nothing to learn")
    # lag-1 velocity correlation a; for the Euler-Maruyama AR(1) with FDT noise the
    # stationary variance is 2 theta / (m (1 + a)), so theta ~ m <v^2> (1 + a) / 2
    ok = traj.mask[1:] & traj.mask[:-1]
    a = float((traj.vel[1:][ok] * traj.vel[:-1][ok]).sum() / traj.vel[:-1][ok].square().sum()) \
        if bool(ok.any()) else 0.0
    a = min(max(a, -0.5), 0.95)
    frame_average = cfg.frame_average and cfg.substrate
    if frame_average:
        # frame-averaged velocities of a Langevin particle: lag-1 correlation rho1(x) and
        # variance 2 phi2(x) kT/m, x = gamma dt (colloidcg.core.ou)
        x0 = min(max(invert_rho1(max(a, 1e-3)), 0.05), 50.0)
        theta = v2 / (2.0 * float(ou_coefficients(torch.tensor(x0, dtype=torch.float64)).phi2))
    else:
        # Euler-Maruyama AR(1): v_t+1 = (1 - gamma dt) v_t + noise, a = 1 - gamma dt
        x0 = min(max(1.0 - a, 0.05), 1.5)
        theta = v2 * (1.0 + a) / 2.0
    mcfg = ModelConfig(dim=traj.dim, cutoff=cutoff, n_s=cfg.n_s, width=cfg.width, depth=cfg.depth,
                       n_kernel=cfg.n_kernel, n_pair=cfg.n_pair,
                       substrate=cfg.substrate, deviatoric=cfg.deviatoric, tau=traj.dt,
                       mass_scale=1.0, theta_ref=theta, frame_average=frame_average)
    if traj.size is not None:
        # reference size: the large particles' (a high quantile, robust to a tracker's
        # outliers), so that every pair range h (a_i + a_j) / 2 is at most the cutoff
        mcfg.size_scale = float(torch.quantile(traj.size.double(), 0.95))
        mcfg.size_column = cfg.size_column
    model = MetriplecticModel(mcfg)
    dtype = getattr(torch, cfg.dtype)
    model = model.to(dtype=dtype, device=cfg.device)
    # reference volume and encoder feature normalisation from a few frames
    vols, feats, nbr_weight = [], [], []
    with torch.no_grad():
        for t in np.linspace(0, traj.n_frames - 1, min(5, traj.n_frames)).astype(int):
            r = traj.pos[t][traj.present[t]]
            pairs = find_pairs(r, cutoff, traj.box)
            a = model.reduced_size(State(r, r, r, _size(traj, traj.present[t])))
            q = minimum_image(r[pairs[:, 0]] - r[pairs[:, 1]], traj.box).norm(dim=-1) / model.pair_range(a, pairs)
            W, _, _ = model.pair_functions(q)
            nbr = torch.zeros(r.shape[0], dtype=r.dtype, device=r.device) \
                .index_add(0, pairs[:, 0], W).index_add(0, pairs[:, 1], W)   # sum_j W(q_ij)
            vols.append(1.0 / (model.kernel.at_zero() + nbr))
            nbr_weight.append(nbr)
            feats.append(model.encoder.features(r, pairs, cutoff, traj.box))
    model.config.volume_ref = float(torch.cat(vols).mean())
    # the deviatoric energy's fabric in units of a typical particle's neighbour weight
    model.config.fabric_ref = max(float(torch.cat(nbr_weight).mean()), 1e-12)
    if cfg.substrate:
        # start the solvent friction gamma dt = x0 at the data's lag-1 velocity relaxation
        with torch.no_grad():
            model.raw_gamma0.fill_(inv_softplus(x0))
    f = torch.cat(feats)
    model.encoder.f_mean.copy_(f.mean(0))
    model.encoder.f_std.copy_(f.std(0).clamp_min(1e-6))
    model.config.stiffness = force_scale(model, traj)
    return model


@torch.no_grad()
def force_scale(model: MetriplecticModel, traj: Trajectory, max_frames: int = 8) -> float:
    """Least-squares factor lambda by which the model's conservative forces must be scaled
    to explain the data's mean velocity changes, y = lambda X:

    y = v_{t+1} - rho v_t (the velocity change the friction alone predicts removed),
    X = (F / m) dt F1 (frame-averaged models; Euler-Maruyama: F1 = 1), over a few frames.

    Used to set ``ModelConfig.stiffness``, U's bulk-modulus scale: dense colloids push on
    each other with forces of many kT per particle size, out of reach of a U initialised
    at the thermal scale. Returns a value clamped to [1e-2, 1e6] (1 when there is no signal).
    """
    model.config.stiffness = 1.0
    ts = [t for t in range(1, traj.n_frames - 1) if bool((traj.mask[t] & traj.mask[t + 1]).any())]
    if not ts:
        return 1.0
    ts = [ts[k] for k in np.linspace(0, int(0.8 * (len(ts) - 1)), min(max_frames, len(ts))).astype(int)]
    num = den = 0.0
    for t in ts:
        idx = torch.nonzero(traj.present[t] & traj.present[t + 1]).squeeze(-1)
        r, v = traj.pos[t, idx], traj.vel[t, idx]
        pairs = find_pairs(r, model.config.cutoff, traj.box)
        if pairs.shape[0] == 0:
            continue
        S = model.initial_S(r, pairs, traj.box)
        ns = model.compute(State(r, v, S, _size(traj, idx)), pairs, traj.box)
        x = ns.gamma0 * traj.dt if model.config.substrate else torch.zeros_like(ns.theta)
        if model.frame_averaged:
            co = ou_coefficients(x)
            rho, f1 = co.rho1, co.F1
        else:
            rho, f1 = 1.0 - x, torch.ones_like(x)
        ok = traj.mask[t, idx] & traj.mask[t + 1, idx]
        y = (traj.vel[t + 1, idx] - rho.unsqueeze(-1) * v)[ok]
        X = (ns.force / ns.m * traj.dt * f1.unsqueeze(-1))[ok]
        num += float((X * y).sum())
        den += float(X.square().sum())
    lam = num / den if den > 0 else float("nan")
    if not math.isfinite(lam) or lam <= 0:
        return 1.0
    return float(min(max(lam, 1e-2), 1e6))


# ---------------------------------------------------------------------------- validation
def _msd_curve(r: torch.Tensor) -> torch.Tensor:
    """MSD from the first frame, (T,) for r (T, N, d)."""
    return (r - r[0]).square().sum(-1).mean(-1)


def validation_rollout(model: MetriplecticModel, traj: Trajectory, start: int, steps: int,
                       seed: int = 0) -> dict:
    """Rollout over frames start..start+steps, halo prescribed; MSD relative RMS error."""
    steps = min(steps, traj.n_frames - 1 - start)
    if steps < 2:
        return {"msd_rel_rms": float("nan")}
    keep = traj.present[start: start + steps + 1].all(0) & traj.present[start]
    idx = torch.nonzero(keep).squeeze(-1)
    if idx.numel() < 2:
        return {"msd_rel_rms": float("nan")}
    interior = traj.mask[start, idx]
    r0, v0 = traj.pos[start, idx], traj.vel[start, idx]
    with torch.no_grad():
        S0 = model.initial_S(r0, None, traj.box)
        halo = ~interior

        def prescribed(k):
            t = start + k
            return State(traj.pos[t, idx], traj.vel[t, idx], S0, _size(traj, idx))

        out = rollout(model, State(r0, v0, S0, _size(traj, idx)), steps, traj.dt, box=traj.box, seed=seed,
                      boundary=halo if bool(halo.any()) else None, prescribed=prescribed)
    data_r = traj.pos[start: start + steps + 1, idx]
    if traj.box is not None:
        disp = minimum_image(data_r[1:] - data_r[:-1], traj.box)
        data_r = torch.cat([data_r[:1], data_r[:1] + torch.cumsum(disp, 0)])
    sel = interior if bool(interior.any()) else torch.ones_like(interior)
    m_sim = _msd_curve(out.r[:, sel])[1:]
    m_dat = _msd_curve(data_r[:, sel])[1:]
    err = float(torch.sqrt(((m_sim - m_dat) / m_dat.clamp_min(1e-300)).square().mean()))
    if not math.isfinite(err):
        err = float("inf")
    return {"msd_rel_rms": err, "msd_sim": m_sim.tolist(), "msd_data": m_dat.tolist()}


# ---------------------------------------------------------------------------- fit
def fit(traj: Trajectory, config: TrainConfig | None = None, out_dir=None,
        callback=None) -> FitResult:
    """Train a model on ``traj``; returns the best model and a report dict.

    ``out_dir`` (or ``config.checkpoint_dir``) receives ``checkpoint/`` (last good
    weights, each epoch) and ``best/`` (best validation score so far).

    ``callback(record)``, if given, is called after every epoch with that epoch's history
    record (``epoch``, ``train_nll``, ``val_nll``, ``val_msd_rel_rms``, ``lr``); if it
    returns True, training stops there (as on early stopping) and the best model so far is
    returned, with ``report["cancelled"] = True``. GUIs and batch runners use it for live
    loss curves and cancellation.
    """
    cfg = (config or TrainConfig()).validate()
    if cfg.epochs < 1 or cfg.batch_frames < 1 or cfg.lr <= 0:
        raise ParameterError("epochs and batch_frames must be >= 1 and lr > 0")
    if cfg.select not in ("val_nll", "val_msd"):
        raise ParameterError(f"select: expected 'val_nll' or 'val_msd', got {cfg.select!r}")
    if cfg.multistep < 1:
        raise ParameterError(f"multistep: must be >= 1, got {cfg.multistep}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device: {cfg.device!r} requested but CUDA is not available")
    if traj.n_frames < 3:
        raise ColloidcgError(f"trajectory: {traj.n_frames} frames; at least 3 are needed")
    if not (traj.dt > 0 and math.isfinite(traj.dt)):
        raise ParameterError(f"dt: must be positive, got {traj.dt}")
    if not bool(torch.isfinite(traj.pos[traj.present]).all()):
        raise ColloidcgError("trajectory: NaN or infinite positions")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    dtype = getattr(torch, cfg.dtype)
    traj = traj.to(device=cfg.device, dtype=dtype)
    selection = None
    if cfg.cutoff:
        cutoff = float(cfg.cutoff)
        if not (cutoff > 0 and math.isfinite(cutoff)):
            raise ParameterError(f"cutoff: must be a positive length, got {cfg.cutoff}")
        if traj.box is not None and cutoff * 1.3 >= 0.5 * float(traj.box.min()):
            raise ParameterError(f"cutoff: {cutoff:g} is too large for the periodic box "
                                 f"{[round(float(b), 4) for b in traj.box]} (needs 1.3 x cutoff < half the box)")
    else:
        cutoff, selection = select_cutoff(traj, cfg)
    if cfg.edge is not None and traj.box is None and cfg.edge > 0 and traj.fov is not None:
        _apply_edge(traj, cfg.edge)
    elif cfg.edge is None and traj.box is None and traj.fov is not None:
        _apply_edge(traj, cutoff)
    # the model's initial weights depend on the seed only, not on whether (or how many)
    # short fits of the cutoff selection ran before
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(traj, cfg, cutoff)
    if cfg.loc_noise == "estimate":
        loc_sigma = estimate_localisation_noise(traj)
    elif cfg.loc_noise in ("none", None):
        loc_sigma = 0.0
    else:
        loc_sigma = float(cfg.loc_noise)
        if loc_sigma < 0:
            raise ParameterError(f"loc_noise: must be >= 0, got {loc_sigma}")
    loc_var = loc_sigma ** 2

    # transitions t -> t+1 need v_t (t >= 1) and v_{t+1}
    ts = np.arange(1, traj.n_frames - 1)
    frames = _Frames(traj, cutoff)
    usable = [int(t) for t in ts if bool(frames.get(int(t))[5].any())]
    if not usable:
        raise ColloidcgError(
            "trajectory: no particle is usable for training (every particle is missing in consecutive "
            "frames or within the edge halo); lower --edge or check the tracks")
    n_pairs = sum(int(frames.get(t)[4].shape[0]) for t in usable[:5])
    if n_pairs == 0 and not cfg.substrate:
        raise ColloidcgError(f"trajectory: no particle has a neighbour within the cutoff h={cutoff:.3g}; "
                             "check um_per_px or pass a larger cutoff")
    n_val = max(1, int(round(cfg.val_fraction * len(usable)))) if len(usable) > 2 else 0
    train_t = usable[: len(usable) - n_val] if n_val else usable
    val_t = usable[len(usable) - n_val:] if n_val else []
    aux_head = pos_weight = None
    params = list(model.parameters())
    if cfg.aux_weight > 0:
        if traj.rearranging is None:
            raise ParameterError("aux_weight: > 0 needs rearrangement labels (rearranging column)")
        aux_head = torch.nn.Linear(cfg.n_s, 1).to(device=cfg.device, dtype=dtype)
        params += list(aux_head.parameters())
        pos_weight = _balanced_pos_weight(traj, train_t, cfg.horizon, dtype, cfg.device)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    per_epoch = len(train_t) if cfg.max_frames_per_epoch is None else min(len(train_t), cfg.max_frames_per_epoch)
    steps_per_epoch = max(1, math.ceil(per_epoch / cfg.batch_frames))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=cfg.epochs * steps_per_epoch, eta_min=cfg.lr * cfg.lr_final_fraction)
    ckdir = Path(out_dir or cfg.checkpoint_dir) if (out_dir or cfg.checkpoint_dir) else None
    gen = np.random.default_rng(cfg.seed)

    def batch_loss(tlist):
        total = 0.0
        aux_total = 0.0
        for t in tlist:
            idx, r, v, vn, pairs, valid = frames.get(t)
            S = model.initial_S(r, pairs, traj.box)
            nll, info = transition_nll(model, State(r, v, S, _size(traj, idx)), vn, valid, pairs, traj.dt, traj.box,
                                       loc_var=loc_var, covariance=cfg.covariance)
            total = total + nll
            if cfg.multistep > 1 and t + cfg.multistep < traj.n_frames:
                total = total + _multistep_term(model, traj, t, cfg.multistep, cutoff, loc_var)
            if aux_head is not None:
                lab = _future_labels(traj, t, cfg.horizon)
                if lab is not None:
                    lab = lab[idx]
                    ok = torch.isfinite(lab)
                    if bool(ok.any()):
                        logit = aux_head(S).squeeze(-1)[ok]
                        aux_total = aux_total + torch.nn.functional.binary_cross_entropy_with_logits(
                            logit, lab[ok], pos_weight=pos_weight)
        loss = total / len(tlist)
        if aux_head is not None:
            loss = loss + cfg.aux_weight * aux_total / len(tlist)
        return loss

    history = []
    best = (float("inf"), -1)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    last_good = best_state
    bad_epochs = 0
    best_rec = None
    t_start = time.perf_counter()
    n_particle_steps = 0
    try:
        from tqdm.auto import tqdm
        bar = tqdm(range(cfg.epochs), desc="train", disable=not cfg.progress, leave=False)
    except ImportError:  # pragma: no cover
        bar = range(cfg.epochs)
    stopped_early = False
    cancelled = False
    for epoch in bar:
        model.train()
        order = gen.permutation(train_t)[:per_epoch]
        losses = []
        for b in range(0, len(order), cfg.batch_frames):
            tl = [int(x) for x in order[b: b + cfg.batch_frames]]
            opt.zero_grad()
            loss = batch_loss(tl)
            if not torch.isfinite(loss):
                model.load_state_dict(last_good)
                where = ""
                if ckdir is not None:
                    save_model(model, ckdir / "checkpoint", {"epoch": epoch, "note": "last good weights before divergence"})
                    where = f"; the last good weights are in {ckdir / 'checkpoint'}"
                raise TrainingDiverged(f"training diverged (loss is {float(loss)}) at epoch {epoch + 1}, "
                                       f"frames {tl}{where}; try a smaller --lr or a larger cutoff")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            bad = any(not bool(torch.isfinite(p).all()) for p in params)
            if bad:
                model.load_state_dict(last_good)
                raise TrainingDiverged(f"training diverged (non-finite weights) at epoch {epoch + 1}; "
                                       "the last good weights were restored; try a smaller --lr")
            losses.append(float(loss.detach()))
            n_particle_steps += sum(int(frames.get(t)[0].shape[0]) for t in tl)
        last_good = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.eval()
        with torch.no_grad():
            val_nll = float(np.mean([float(batch_loss([t])) for t in val_t])) if val_t else float("nan")
            vstart = (val_t[0] - 1) if val_t else 0
            vr = validation_rollout(model, traj, vstart, cfg.val_rollout_steps, seed=cfg.seed)
        if cfg.select == "val_msd" or not math.isfinite(val_nll):
            score = vr["msd_rel_rms"]
            if not math.isfinite(score):
                score = val_nll if math.isfinite(val_nll) else float(np.mean(losses))
        else:
            score = val_nll if math.isfinite(vr["msd_rel_rms"]) or not val_t else float("inf")
        rec = {"epoch": epoch + 1, "train_nll": float(np.mean(losses)), "val_nll": val_nll,
               "val_msd_rel_rms": vr["msd_rel_rms"], "lr": sched.get_last_lr()[0]}
        history.append(rec)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(nll=f"{rec['train_nll']:.3f}", val_msd=f"{vr['msd_rel_rms']:.3f}")
        if ckdir is not None:
            save_model(model, ckdir / "checkpoint", {"epoch": epoch + 1})
        if callback is not None and callback(dict(rec)):
            cancelled = True
        if score < best[0]:
            best = (score, epoch + 1)
            best_rec = rec
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bad_epochs = 0
            if ckdir is not None:
                save_model(model, ckdir / "best", {"epoch": epoch + 1})
            if cancelled:
                break
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience or cancelled:
                stopped_early = not cancelled
                break
    elapsed = time.perf_counter() - t_start
    model.load_state_dict(best_state)
    model.eval()
    best_rec = best_rec or (history[-1] if history else {})
    report = {
        "epochs_run": len(history), "best_epoch": best[1],
        "best_val_score": best_rec.get("val_msd_rel_rms", float("nan")),
        "best_val_nll": best_rec.get("val_nll", float("nan")), "selected_by": cfg.select,
        "stopped_early": stopped_early, "cancelled": cancelled, "cutoff": cutoff, "dt": traj.dt,
        "localisation_noise": loc_sigma, "n_train_frames": len(train_t), "n_val_frames": len(val_t),
        "train_seconds": elapsed, "particle_steps_per_s": n_particle_steps / max(elapsed, 1e-9),
        "mass": float(model.mass.detach()), "stiffness": float(model.config.stiffness),
        "config": cfg.to_dict(),
    }
    if selection is not None:
        report["cutoff_selection"] = selection
    if model.config.n_pair > 0:
        # the learned soft-sphere terms: contact distance b_k h (length units) and strength
        # c_k theta_ref stiffness (energy units; the term's energy at full overlap)
        pot = model.pair_potential
        scale = model.config.theta_ref * model.config.stiffness
        report["pair_energy"] = {
            "contact_distance": [float(b) * cutoff for b in pot.ranges().detach().cpu()],
            "strength": [float(c) * scale for c in pot.coefficients().detach().cpu()]}
    if traj.rearranging is not None:
        report["rearrangement_auc"] = rearrangement_auc(model, traj, val_t or train_t, cfg.horizon,
                                                       frames, aux_head, sign_frames=train_t)
    return FitResult(model, report, history)


def select_cutoff(traj: Trajectory, cfg: TrainConfig) -> tuple[float, dict]:
    """The interaction range with the best held-out NLL after a short fit, among
    ``cfg.cutoff_factors`` x the median nearest-neighbour distance.

    Contact-like forces (colloids) want h near the first neighbour shell (a longer-ranged
    kernel softens the repulsion and shifts the first peak of g(r)); fluid-like, many-body
    interactions want a longer range. Each candidate gets 3 epochs of at most 8 frames.
    Returns (cutoff, {"nn_distance", "candidates": [[cutoff, val_nll], ...]}).
    """
    nn_d = median_nn_distance(traj)
    factors = sorted(set(float(f) for f in cfg.cutoff_factors))
    if not factors or min(factors) <= 0:
        raise ParameterError(f"cutoff_factors: expected positive numbers, got {cfg.cutoff_factors!r}")
    if len(factors) == 1:
        return factors[0] * nn_d, {"nn_distance": nn_d, "candidates": [[factors[0] * nn_d, None]]}
    rows = []
    for f in factors:
        c = f * nn_d
        if traj.box is not None and 1.3 * c >= 0.5 * float(traj.box.min()):
            continue
        quick = TrainConfig(**{**cfg.to_dict(), "cutoff": c, "epochs": 3, "max_frames_per_epoch": 8,
                               "val_rollout_steps": 2, "progress": False, "checkpoint_dir": None,
                               "patience": 3, "seed": cfg.seed})
        try:
            nll = fit(traj, quick).report["best_val_nll"]
        except ColloidcgError:
            nll = float("nan")
        rows.append([c, nll])
    ok = [r for r in rows if r[1] is not None and math.isfinite(r[1])]
    best = min(ok, key=lambda r: r[1])[0] if ok else 2.5 * nn_d
    return best, {"nn_distance": nn_d, "candidates": rows}


def _apply_edge(traj: Trajectory, edge: float) -> None:
    traj.mask = traj.mask & ~near_edge(traj.pos, traj.fov, edge)


def _multistep_term(model, traj: Trajectory, t: int, K: int, cutoff: float, loc_var: float):
    win = traj.present[t - 1: t + K + 1].all(0)
    idx = torch.nonzero(win).squeeze(-1)
    r_seq = traj.pos[t: t + K + 1, idx]
    v_seq = traj.vel[t: t + K + 1, idx]
    pairs = find_pairs(r_seq[0], cutoff * 1.3, traj.box)
    S0 = model.initial_S(r_seq[0], find_pairs(r_seq[0], cutoff, traj.box), traj.box)
    interior = traj.mask[t: t + K + 1, idx].all(0)
    valid = interior.unsqueeze(0).expand(K, -1)
    return multistep_nll(model, r_seq, v_seq, S0, valid, pairs, traj.dt, traj.box,
                         loc_var=loc_var, prescribed=~interior, size=_size(traj, idx))


@torch.no_grad()
def rearrangement_auc(model: MetriplecticModel, traj: Trajectory, tlist, horizon: int,
                      frames: _Frames | None = None, aux_head=None, sign_frames=None) -> dict:
    """ROC AUC with which S_t (first component, sign fixed on ``sign_frames``), the
    entropy production dS/dt, and the auxiliary read-out (if trained) predict that a
    particle rearranges within the next ``horizon`` frames."""
    frames = frames or _Frames(traj, model.config.cutoff)

    def collect(ts):
        out = {"S": [], "dSdt": [], "aux": [], "y": []}
        for t in ts:
            lab = _future_labels(traj, t, horizon)
            if lab is None:
                continue
            idx, r, v, _, pairs, _ = frames.get(t)
            S = model.initial_S(r, pairs, traj.box)
            _, _, dS = model.drift(State(r, v, S, _size(traj, idx)), pairs, traj.box)
            out["S"].append(S[:, 0].cpu().numpy())
            out["dSdt"].append(dS.sum(-1).cpu().numpy())
            out["aux"].append(aux_head(S).squeeze(-1).cpu().numpy() if aux_head is not None
                              else np.full(len(idx), np.nan))
            out["y"].append(lab[idx].cpu().numpy())
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}

    ev = collect(tlist)
    res = {"n": int(np.isfinite(ev["y"]).sum()) if len(ev["y"]) else 0, "horizon": horizon}
    if res["n"] == 0:
        return res
    sign = 1.0
    if sign_frames is not None:
        tr = collect(sign_frames)
        if len(tr["y"]):
            a = roc_auc(tr["S"], tr["y"])
            sign = -1.0 if (math.isfinite(a) and a < 0.5) else 1.0
    res["S"] = roc_auc(sign * ev["S"], ev["y"])
    res["S_sign"] = sign
    res["dSdt"] = roc_auc(ev["dSdt"], ev["y"])
    if aux_head is not None:
        res["aux"] = roc_auc(ev["aux"], ev["y"])
    return res


# ---------------------------------------------------------------------- tracks -> model folder
#: Files a trained model folder holds (see :func:`train_tracks`).
MODEL_FILES = ("model.pt", "config.json", "report.json")


def train_tracks(tracks, meta: dict | None = None, config: TrainConfig | None = None, out_dir=None, *,
                 labels=None, fps: float | None = None, um_per_px: float | None = None,
                 box_px=None, source: str | None = None, callback=None,
                 final_dir=None) -> FitResult:
    """Train on a tracks table (trackpy schema, px and frames) and, with ``out_dir``, write
    the model folder: ``model.pt``, ``config.json`` (architecture, calibration, training
    options), ``report.json`` (metrics and history), ``loss.png`` and ``validation.png``.

    ``meta`` is the tracks' sidecar (calibration is read from it unless ``fps`` /
    ``um_per_px`` are given); ``labels`` a rearrangement table (frame, particle,
    rearranging) for the AUC and auxiliary loss; ``source`` the tracks' path, recorded as
    provenance. The CLI, the batch runner and the napari widget all train through here.
    ``final_dir``: where ``out_dir`` will be moved when it is a transaction's staging
    folder (:class:`colloidcg.outputs.Commit`); recorded as the checkpoint folder.
    """
    from .core.persist import save_model
    from .data import from_tracks, meta_box
    from .outputs import atomic_write_json
    from .plots import plot_training_history

    cfg = (config or TrainConfig()).validate()
    if box_px is None:      # a periodic box recorded with the tracks (MD tracks, simulations)
        box_px = meta_box(meta)
    traj = from_tracks(tracks, meta, fps=fps, um_per_px=um_per_px, box_px=box_px, labels=labels,
                       size_column=cfg.size_column or None)
    if out_dir is not None and cfg.checkpoint_dir is None:
        cfg = TrainConfig(**{**cfg.to_dict(), "checkpoint_dir": str(out_dir)})
    result = fit(traj, cfg, callback=callback)
    result.report["calibration"] = {"um_per_px": traj.um_per_px, "fps": traj.fps,
                                    "box_px": list(box_px) if box_px is not None else None,
                                    "tracks": str(Path(source).resolve()) if source else None}
    if out_dir is not None:
        out = Path(out_dir)
        train_rec = cfg.to_dict()
        if final_dir is not None:
            train_rec["checkpoint_dir"] = str(final_dir)
        save_model(result.model, out, {"calibration": result.report["calibration"], "train": train_rec})
        report = dict(result.report)
        report["history"] = result.history
        report["plots"] = [p.name for p in plot_training_history(result.history, out)]
        atomic_write_json(out / "report.json", report)
    return result
