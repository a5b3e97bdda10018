"""OUT/summary.csv: one row per video and stage with status, error, duration and key numbers."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ..outputs import atomic_write_bytes

BASE_COLUMNS = ["video", "stage", "status", "error", "duration_s", "computed_s"]


def summary_table(rows: list[dict], stages: list[str]) -> pd.DataFrame:
    """Rows sorted by video, then pipeline order; the key numbers of every stage become
    columns (empty where a stage does not report that number).

    status: "done" (ran now), "unchanged" (up to date, skipped; its files verified),
    "failed" (error says why), "blocked" (an input stage failed or has no output) or
    "stale" (failed or blocked, and the previous complete result was kept; error says why),
    "skipped" (the stage does not apply: rearrangements of an MD trajectory). duration_s: seconds this
    run spent on the row; computed_s: seconds the stored result took to compute.
    """
    flat, extra = [], []
    for r in rows:
        rec = {k: r.get(k) for k in BASE_COLUMNS}
        for k, v in (r.get("numbers") or {}).items():
            if k not in extra:
                extra.append(k)
            rec[k] = v
        flat.append(rec)
    df = pd.DataFrame(flat, columns=BASE_COLUMNS + extra)
    for c in extra:   # counts stay integers next to the empty cells of other stages
        vals = [r[c] for r in flat if r.get(c) is not None]
        if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            df[c] = df[c].astype("Int64")
    if len(df):
        df["_o"] = df["stage"].map({s: i for i, s in enumerate(stages)})
        df = df.sort_values(["video", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)
    df["error"] = df["error"].fillna("")
    return df


def write_summary(rows: list[dict], path, stages: list[str]) -> pd.DataFrame:
    df = summary_table(rows, stages)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(Path(path), buf.getvalue().encode())
    return df
