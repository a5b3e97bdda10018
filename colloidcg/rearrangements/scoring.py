"""Score any per-row value as a predictor of rearrangements, on the softness baseline's rows.

The yardstick every structural variable (softness, learned S, dS/dt, particle size, a
neighbour count, ...) is measured with:

- **target**: the ``rearranging`` label of a row of a rearrangements table (frame t,
  particle i): D2min of i over [t, t + lag] above threshold, i.e. "rearranges within the
  next lag frames";
- **rows**: exactly the softness baseline's test rows (:func:`softness_baseline`; frames
  from its split + lag on, D2min known, not ``edge``, structure functions finite); a value
  that is NaN on some of them is scored on the rest, and the softness baseline is then
  also scored on that same subset, so every comparison is on common rows;
- **score**: ROC AUC (0.5 chance, 1 perfect; Mann-Whitney, ties counted one half);
- **sign**: optionally fixed on the baseline's training rows (a learned S is defined only
  up to sign): the value is negated when its AUC there is below 0.5;
- **standard error**: a block bootstrap over test frames (non-overlapping blocks of
  ``block_frames`` consecutive frames, drawn with replacement; Carlstein, Ann. Stat. 14,
  1171, 1986). Rows are not independent: all rows of a frame share its state (a shear's
  phase, which events are under way), one rearrangement labels several particles in
  several consecutive frames, and label windows of consecutive frames overlap. Whole
  frames are therefore resampled, in blocks long enough to keep the rows of one event
  mostly together: default 2 x lag (at least 2), since an event's rows span about lag
  frames (every window [t, t + lag] that contains it). An event cut by a block boundary
  counts as two independent pieces, which understates the error: on constructed data
  with 3-frame events of correlated rows, blocks of 6 frames gave 0.68-0.76 of the true spread
  over resampled systems, blocks of 12 frames 0.93 (tests/test_rearrangement_scoring.py);
  with few blocks (under about 10) the SE is itself uncertain by 1/sqrt(2 x blocks). Where
  the test frames fit in one block (a short film), single frames are resampled instead
  (the report's ``block_frames`` is then 1); with a single test frame the SE is NaN.
  Resampling events instead would leave out the negatives' correlation and needs an
  event for every positive row, which a value table need not carry. The row-wise
  Hanley-McNeil error is reported beside it (``se_rows``); with clustered positives it is
  smaller, several-fold where events hold many rows. The same resamples score every
  value, so the difference from softness comes with a paired standard error
  (``diff_se``), much smaller than either SE alone when the two are correlated.

What the SE does not include: the variation between independently prepared samples that
differ in ways one long recording does not explore (e.g. a fixed lattice of vacancies);
it is the sampling error over the time windows of this one recording.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ParameterError
from .softness import SoftnessResult, softness_baseline

KEYS = ("frame", "particle")


def softness_train_rows(table: pd.DataFrame, soft: SoftnessResult) -> np.ndarray:
    """(len(table),) bool: the rows the softness baseline ``soft`` was trained on (before
    its subsampling to ``max_train_rows``)."""
    return soft.rows(table)[0]


def softness_test_rows(table: pd.DataFrame, soft: SoftnessResult) -> np.ndarray:
    """(len(table),) bool: the rows the softness baseline ``soft`` was scored on: frames
    from its split_frame + lag on, D2min known, not edge, structure functions finite."""
    return soft.rows(table)[1]


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC of ``score`` (N,) for the boolean ``label`` (N,): the Mann-Whitney statistic
    P(score_pos > score_neg) + P(tie) / 2. NaN when a class is empty."""
    m = block_pair_counts(np.asarray(score, float), np.asarray(label, bool), np.zeros(len(score), int))
    return m.auc(np.ones((1, 1)))[0]


@dataclass
class BlockPairs:
    """Pair counts between blocks of rows, from which the AUC of any resampling of whole
    blocks follows exactly: for block multiplicities c (B,),

        AUC(c) = c^T C c / ((c . n_pos) (c . n_neg)),

    C[a, b] = sum over positives in block a and negatives in block b of [s_pos > s_neg]
    + [s_pos = s_neg] / 2 (B, B); n_pos, n_neg (B,) the rows of each class per block."""

    C: np.ndarray
    n_pos: np.ndarray
    n_neg: np.ndarray

    def auc(self, counts: np.ndarray) -> np.ndarray:
        """(R,) AUCs for R resamplings given as block multiplicities (R, B); NaN where a
        class is absent."""
        counts = np.asarray(counts, float)
        num = np.einsum("ra,ab,rb->r", counts, self.C, counts)
        den = (counts @ self.n_pos) * (counts @ self.n_neg)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def block_pair_counts(score: np.ndarray, label: np.ndarray, block: np.ndarray,
                      n_blocks: int | None = None) -> BlockPairs:
    """:class:`BlockPairs` of ``score`` (N,), ``label`` (N,) bool, ``block`` (N,) ids
    0..B-1 (B = ``n_blocks``, default max(block) + 1). Cost O(B N log N)."""
    if n_blocks is None:
        n_blocks = int(block.max()) + 1 if len(block) else 0
    pos, neg = label, ~label
    sp, bp = score[pos], block[pos]
    C = np.zeros((n_blocks, n_blocks))
    for b in range(n_blocks):
        sn = np.sort(score[neg & (block == b)])
        if len(sn) == 0 or len(sp) == 0:
            continue
        below = 0.5 * (np.searchsorted(sn, sp, "left") + np.searchsorted(sn, sp, "right"))
        C[:, b] = np.bincount(bp, weights=below, minlength=n_blocks)
    return BlockPairs(C, np.bincount(block[pos], minlength=n_blocks).astype(float),
                      np.bincount(block[neg], minlength=n_blocks).astype(float))


def hanley_mcneil_se(a: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC ``a`` from ``n_pos`` and ``n_neg`` independent rows (Hanley &
    McNeil, Radiology 143, 29, 1982)."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return float(np.sqrt((a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a))
                         / (n_pos * n_neg)))


def frame_blocks(frame: np.ndarray, block_frames: int) -> np.ndarray:
    """(N,) block ids 0..B-1: consecutive runs of ``block_frames`` frames counted from the
    first frame present (blocks without rows dropped)."""
    frame = np.asarray(frame)
    return np.unique((frame - frame.min()) // int(block_frames), return_inverse=True)[1].reshape(-1)


def bootstrap_counts(n_blocks: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_blocks) multiplicities of each block in ``n_boot`` draws of ``n_blocks``
    blocks with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_blocks, (n_boot, n_blocks))
    return np.stack([np.bincount(d, minlength=n_blocks) for d in draws]).astype(float)


@dataclass
class Score:
    """ROC AUC of one value on the softness baseline's test rows.

    auc : float  on the test rows where the value is finite (after the sign)
    se : float  block-bootstrap standard error (see the module docstring)
    se_rows : float  Hanley-McNeil error, treating rows as independent
    sign : float  +1 or -1: the value was multiplied by it (fixed on the training rows, or +1)
    n_test, n_test_pos : scored rows and the rearranging ones among them
    coverage : n_test over the softness baseline's test rows
    softness_auc, softness_se : the softness baseline on these same rows (equal to its own
        AUC when coverage is 1)
    diff, diff_se : auc - softness_auc and its paired bootstrap standard error
    """

    name: str
    auc: float
    se: float
    se_rows: float
    sign: float
    n_test: int
    n_test_pos: int
    coverage: float
    softness_auc: float
    softness_se: float
    diff: float
    diff_se: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ScoreReport:
    """Result of :func:`score_against_softness`.

    softness : :class:`Score` of the baseline itself (its own AUC, block-bootstrap SE)
    scores : one :class:`Score` per value, in the order given
    lag, block_frames, n_boot, n_blocks : the settings (frames), and the test blocks drawn from
    """

    softness: Score
    scores: list = field(default_factory=list)
    lag: int = 0
    block_frames: int = 0
    n_boot: int = 0
    n_blocks: int = 0

    def __getitem__(self, name: str) -> Score:
        for s in [self.softness, *self.scores]:
            if s.name == name:
                return s
        raise KeyError(name)

    def table(self) -> pd.DataFrame:
        """One row per value (softness first): name, auc, se, se_rows, sign, n_test, ..."""
        return pd.DataFrame([s.as_dict() for s in [self.softness, *self.scores]])

    def summary(self) -> dict:
        """JSON-ready: {"softness": {...}, "<name>": {...}, "lag": ..., ...}."""
        out = {s.name: s.as_dict() for s in [self.softness, *self.scores]}
        out.update(lag=self.lag, block_frames=self.block_frames, n_boot=self.n_boot,
                   n_blocks=self.n_blocks,
                   se_method=f"bootstrap over blocks of {self.block_frames} consecutive test frames")
        return out


def _values(table: pd.DataFrame, values) -> dict[str, np.ndarray]:
    """Normalise ``values`` to {name: (len(table),) float array aligned with table's rows}."""
    n = len(table)
    if isinstance(values, pd.DataFrame):
        missing = [k for k in KEYS if k not in values.columns]
        if missing:
            raise ParameterError(f"values: a value table needs columns frame and particle; it lacks "
                                 f"{', '.join(missing)}")
        cols = [c for c in values.columns if c not in KEYS]
        if values.duplicated(list(KEYS)).any():
            raise ParameterError("values: the value table has more than one row for some (frame, particle)")
        if not cols:
            raise ParameterError("values: the value table has no column besides frame and particle")
        right = values[list(KEYS) + cols].copy()
        right.columns = list(KEYS) + [f"__value_{k}" for k in range(len(cols))]
        merged = table[list(KEYS)].reset_index(drop=True).merge(right, on=list(KEYS), how="left")
        return {c: merged[f"__value_{k}"].to_numpy(float) for k, c in enumerate(cols)}
    if not isinstance(values, dict) or not values:
        raise ParameterError("values: expected a non-empty dict {name: column name or array} or a table "
                             "with frame, particle and value columns")
    out = {}
    for name, v in values.items():
        if isinstance(v, str):
            if v not in table.columns:
                raise ParameterError(f"values[{name!r}]: the table has no column {v!r}")
            out[str(name)] = table[v].to_numpy(float)
        else:
            a = np.asarray(v, float)
            if a.shape != (n,):
                raise ParameterError(f"values[{name!r}]: expected an array of one value per table row "
                                     f"({n},), got shape {a.shape}")
            out[str(name)] = a
    return out


def score_against_softness(table: pd.DataFrame, values, lag: int | None = None, *,
                           soft: SoftnessResult | None = None, fix_sign=(), block_frames: int | None = None,
                           n_boot: int = 2000, seed: int = 0) -> ScoreReport:
    """ROC AUC of each value for "rearranges within the next lag frames", on exactly the
    softness baseline's test rows, with the baseline's own AUC and standard errors.

    Parameters
    ----------
    table : DataFrame
        A rearrangements table (:func:`colloidcg.rearrangements.detect` with descriptors):
        frame, particle, d2min, edge, rearranging and the ``G_*`` structure functions.
    values : dict or DataFrame
        ``{name: column of table, or array (len(table),)}``; or a table with frame,
        particle and value columns (e.g. a model's S.parquet: S0, dSdt), joined on (frame,
        particle), every non-key column scored. Larger values are read as "more likely to
        rearrange" (negate a value, e.g. a neighbour count, to read it the other way).
    lag : int, optional
        The labels' lag in frames (the rearrangements sidecar's ``lag_frames``). Needed
        unless ``soft`` is given.
    soft : SoftnessResult, optional
        A fitted baseline (``softness_baseline(table, lag)`` is fitted otherwise).
    fix_sign : bool or iterable of names
        Values (True: all) whose sign is fixed on the baseline's training rows.
    block_frames : int, optional
        Bootstrap block length in frames (default max(2, 2 x lag)); 1 where the test
        frames would fit in a single block.
    n_boot : int
        Bootstrap resamples (default 2000; the SE's own relative error is about 1/sqrt(2 n_boot)).
    seed : int

    Returns
    -------
    ScoreReport
    """
    if soft is None:
        if lag is None:
            raise ParameterError("lag: give the labels' lag in frames (or a fitted softness baseline)")
        soft = softness_baseline(table, lag)
    elif lag is not None and int(lag) != soft.lag:
        raise ParameterError(f"lag: {lag} differs from the softness baseline's lag {soft.lag}")
    lag = soft.lag
    if block_frames is None:
        block_frames = max(2, 2 * lag)
    if int(block_frames) != block_frames or block_frames < 1:
        raise ParameterError(f"block_frames: expected a positive whole number of frames, got {block_frames!r}")
    if int(n_boot) != n_boot or n_boot < 20:
        raise ParameterError(f"n_boot: expected a whole number >= 20, got {n_boot!r}")
    block_frames, n_boot = int(block_frames), int(n_boot)
    vals = _values(table, values)
    if fix_sign is True:
        fix = set(vals)
    elif fix_sign is False or fix_sign is None:
        fix = set()
    else:
        fix = {str(k) for k in fix_sign}
        unknown = fix - set(vals)
        if unknown:
            raise ParameterError(f"fix_sign: no value named {', '.join(sorted(unknown))}")

    train, test = soft.rows(table)
    y = table["rearranging"].to_numpy(bool)
    frame = table["frame"].to_numpy()
    s_soft = soft.softness(table)
    te = np.flatnonzero(test)
    block = frame_blocks(frame[te], block_frames)
    n_blocks = int(block.max()) + 1
    if n_blocks < 2 and block_frames > 1:
        # a short film whose test frames fit in one block: resampling one block gives an SE
        # of exactly 0, so resample single frames (consecutive frames share events, so this
        # understates the error more; the report records the length used)
        block_frames = 1
        block = frame_blocks(frame[te], block_frames)
        n_blocks = int(block.max()) + 1
    # one set of block resamples of the test rows, shared by every value (paired)
    counts = bootstrap_counts(n_blocks, n_boot, seed)

    def boot(score, ok):
        return block_pair_counts(score[te][ok], y[te][ok], block[ok], n_blocks).auc(counts)

    ok_all = np.ones(len(te), bool)
    soft_boot_all = boot(s_soft, ok_all)

    def make(name, v, sign):
        ok = np.isfinite(v[te])
        n = int(ok.sum())
        if n == 0:
            raise ParameterError(f"values[{name!r}]: no finite value on the softness baseline's test rows")
        yy = y[te][ok]
        npos = int(yy.sum())
        if npos == 0 or npos == n:
            raise ParameterError(f"values[{name!r}]: its finite test rows hold only one class "
                                 f"({npos} rearranging of {n})")
        a = auc(sign * v[te][ok], yy)
        a_soft = auc(s_soft[te][ok], yy)
        b = boot(sign * v, ok)
        b_soft = soft_boot_all if ok.all() else boot(s_soft, ok)
        good = np.isfinite(b) & np.isfinite(b_soft)

        def spread(x):   # NaN, not 0, where a single test frame leaves nothing to resample
            return float(np.std(x, ddof=1)) if n_blocks > 1 and len(x) > 1 else float("nan")
        return Score(name=name, auc=a, se=spread(b[good]),
                     se_rows=hanley_mcneil_se(a, npos, n - npos), sign=float(sign), n_test=n,
                     n_test_pos=npos, coverage=n / len(te), softness_auc=a_soft,
                     softness_se=spread(b_soft[good]), diff=a - a_soft,
                     diff_se=spread((b - b_soft)[good]))

    base = make("softness", s_soft, 1.0)
    scores = []
    for name, v in vals.items():
        sign = 1.0
        if name in fix:
            tr = train & np.isfinite(v)
            if not tr.any():
                raise ParameterError(f"fix_sign: {name!r} has no finite value on the training rows, "
                                     "so its sign cannot be fixed there")
            a_tr = auc(v[tr], y[tr])
            sign = -1.0 if np.isfinite(a_tr) and a_tr < 0.5 else 1.0
        scores.append(make(name, v, sign))
    return ScoreReport(softness=base, scores=scores, lag=lag, block_frames=block_frames, n_boot=n_boot,
                       n_blocks=n_blocks)
