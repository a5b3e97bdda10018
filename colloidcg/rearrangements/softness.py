"""Softness baseline: does local structure predict where the material rearranges?

Following Cubuk et al. (PRL 114, 108001, 2015), a linear classifier on the radial
structure functions G(i; r) of particle i at frame t predicts whether i rearranges in the
window [t, t + lag] (its ``rearranging`` label at frame t). Here the classifier is an
L2-regularised logistic regression on standardised features with balanced class weights
(scikit-learn). Its decision function is the "softness" S.

The split is by time so that the test measures prediction of the future: rows with
frame < t_split (the first ``train_fraction`` of the frame range) train the model; rows
with frame >= t_split + lag are held out, so no training window overlaps a test window.
Rows flagged ``edge`` and rows with NaN D2min or NaN features are left out. The score is
the ROC AUC on the held-out rows: 0.5 is chance, 1 perfect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ColloidcgError, ParameterError


@dataclass
class SoftnessResult:
    """Outcome of :func:`softness_baseline`.

    Attributes
    ----------
    auc : float  ROC AUC on the held-out frames
    auc_se : float  its standard error (Hanley & McNeil, Radiology 143, 29, 1982), which
        treats rows as independent and so understates the error when the rearranging rows
        come from few events
    model : sklearn Pipeline (StandardScaler -> LogisticRegression), fitted
    features : list of the feature columns, in the model's order
    split_frame : int  first frame not used for training; test frames start at split_frame + lag
    lag : int  the lag (frames) of the labels, which sets the gap between train and test frames
    n_train, n_test : rows used; n_train_pos, n_test_pos : rearranging rows among them
        (n_train after subsampling to ``max_train_rows``)
    """

    auc: float
    model: object
    auc_se: float = float("nan")
    features: list = field(default_factory=list)
    split_frame: int = 0
    lag: int = 0
    n_train: int = 0
    n_test: int = 0
    n_train_pos: int = 0
    n_test_pos: int = 0

    def softness(self, table: pd.DataFrame) -> np.ndarray:
        """Softness S (the classifier's decision function) of every row of ``table``;
        NaN where a feature is NaN."""
        X = table[self.features].to_numpy(float)
        ok = np.isfinite(X).all(axis=1)
        out = np.full(len(table), np.nan)
        if ok.any():
            out[ok] = self.model.decision_function(X[ok])
        return out

    def rows(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(train, test): boolean masks (len(table),) of the rows this baseline trains on
        (before subsampling) and is scored on, by :func:`baseline_rows`."""
        return baseline_rows(table, self.split_frame, self.lag, self.features)

    def summary(self) -> dict:
        return {"auc": self.auc, "auc_se": self.auc_se, "split_frame": self.split_frame, "lag": self.lag,
                "n_train": self.n_train,
                "n_test": self.n_test, "n_train_pos": self.n_train_pos, "n_test_pos": self.n_test_pos,
                "features": list(self.features)}


def usable_rows(table: pd.DataFrame, features) -> np.ndarray:
    """(len(table),) bool: rows with D2min known, not ``edge`` and every feature finite."""
    X = table[list(features)].to_numpy(float)
    return np.isfinite(X).all(axis=1) & np.isfinite(table["d2min"].to_numpy(float)) \
        & ~table["edge"].to_numpy(bool)


def split_frame(frame: np.ndarray, train_fraction: float) -> int:
    """First frame after the training part: first frame + ceil(train_fraction x frame span)."""
    f0, f1 = int(np.min(frame)), int(np.max(frame))
    return f0 + int(np.ceil(train_fraction * (f1 - f0 + 1)))


def baseline_rows(table: pd.DataFrame, split: int, lag: int, features) -> tuple[np.ndarray, np.ndarray]:
    """The softness baseline's rows: (train, test) boolean masks (len(table),). Training rows
    have frame < ``split``; test rows frame >= split + ``lag`` (no label window of a
    training row reaches a test frame); both only among :func:`usable_rows`."""
    use = usable_rows(table, features)
    frame = table["frame"].to_numpy()
    return use & (frame < split), use & (frame >= split + int(lag))


def softness_baseline(table: pd.DataFrame, lag: int, train_fraction: float = 0.5,
                      features: list[str] | None = None, max_train_rows: int = 200_000,
                      C: float = 1.0, random_state: int = 0) -> SoftnessResult:
    """Train the logistic-regression softness baseline and score it on later frames.

    Parameters
    ----------
    table : DataFrame
        A rearrangements table (from :func:`colloidcg.rearrangements.detect`): frame,
        d2min, rearranging, edge and the radial structure functions ``G_*``.
    lag : int
        The lag (frames) the labels were computed with; sets the gap between train and
        test frames.
    train_fraction : float in (0, 1)
        Fraction of the frame range used for training.
    features : list of str, optional
        Feature columns; default every ``G_*`` column.
    max_train_rows : int
        Training rows are subsampled (uniformly, seeded) to at most this many.
    C : float
        Inverse L2 regularisation strength.
    random_state : int

    Returns
    -------
    SoftnessResult
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 0.0 < train_fraction < 1.0:
        raise ParameterError(f"train_fraction: expected a number between 0 and 1, got {train_fraction!r}")
    if features is None:
        features = [c for c in table.columns if str(c).startswith("G_")]
    need = ["frame", "d2min", "rearranging", "edge"] + list(features)
    missing = [c for c in need if c not in table.columns]
    if not features or missing:
        raise ColloidcgError("softness baseline: the table lacks "
                             f"{', '.join(missing) or 'radial structure function (G_*) columns'}; "
                             "run the rearrangements stage with descriptors")
    X = table[features].to_numpy(float)
    y = table["rearranging"].to_numpy(bool)
    split = split_frame(table["frame"].to_numpy(), train_fraction)
    train, test = baseline_rows(table, split, lag, features)
    for name, m in (("training", train), ("test", test)):
        pos = int(y[m].sum())
        if pos == 0 or pos == int(m.sum()):
            raise ColloidcgError(
                f"softness baseline: the {name} frames hold {pos} rearranging and "
                f"{int(m.sum()) - pos} other usable rows; both classes are needed "
                f"(try a lower threshold, a longer video, or another train_fraction)")
    rng = np.random.default_rng(random_state)
    tr = np.flatnonzero(train)
    if len(tr) > max_train_rows:
        tr = np.sort(rng.choice(tr, max_train_rows, replace=False))
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(C=C, class_weight="balanced", max_iter=2000))
    model.fit(X[tr], y[tr])
    te = np.flatnonzero(test)
    auc = float(roc_auc_score(y[te], model.decision_function(X[te])))
    n1, n0 = int(y[te].sum()), int((~y[te]).sum())
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    se = float(np.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc ** 2) + (n0 - 1) * (q2 - auc ** 2))
                       / (n1 * n0)))
    return SoftnessResult(auc=auc, auc_se=se, model=model, features=list(features), split_frame=split,
                          lag=int(lag), n_train=len(tr), n_test=len(te), n_train_pos=int(y[tr].sum()),
                          n_test_pos=int(y[te].sum()))
