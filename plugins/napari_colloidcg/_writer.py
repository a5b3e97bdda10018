"""napari writer: Tracks and Points layers to colloidcg's tracks schema, as Parquet with a
JSON sidecar (:func:`colloidcg.outputs.write_table`), so that what was edited or
filtered in napari goes back into the command line and the other widgets.

Rows: frame, particle, x, y [, z] in px (the layer's data coordinates), then every
feature. Positions come from the layer's data (points moved in napari are saved where
they were moved to); where the table kept the footage's positions beside drift-subtracted
ones (``x_image``), the layer shows and saves those. The sidecar is the layer's own
(units, calibration, parameters) when it came from colloidcg, with the napari layer
recorded as the input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _table(data: np.ndarray, features: pd.DataFrame | None, kind: str) -> pd.DataFrame:
    from ._common import position_columns

    data = np.asarray(data, float)
    feats = pd.DataFrame(features).reset_index(drop=True) if features is not None else pd.DataFrame()
    if len(feats) != len(data):
        feats = pd.DataFrame(index=range(len(data)))
    if kind == "tracks":
        particle, frame, pos = data[:, 0], data[:, 1], data[:, 2:]
    else:
        frame, pos = data[:, 0], data[:, 1:]
        particle = feats["particle"].to_numpy() if "particle" in feats.columns else np.arange(len(data))
    if pos.shape[1] not in (2, 3):
        raise ValueError(f"expected 2D or 3D positions after the frame axis, got {pos.shape[1]} axes")
    axes = ["z", "y", "x"][-pos.shape[1]:]
    df = feats.copy()
    df = df.drop(columns=[c for c in ("track_id",) if c in df.columns])
    cols = position_columns(df) if set(axes) <= set(df.columns) else axes
    for c, v in zip(cols, pos.T):
        df[c] = v
    df["frame"] = np.rint(frame).astype(np.int64)
    df["particle"] = np.asarray(particle).astype(np.int64)
    first = ["frame", "particle", "x", "y"] + (["z"] if "z" in df.columns else [])
    return df[first + [c for c in df.columns if c not in first]]


def _sidecar(meta: dict, name: str, kind: str, n: int) -> dict:
    from colloidcg.outputs import provenance

    info = (meta.get("metadata") or {}).get("colloidcg") or {}
    side = dict(info.get("meta") or {})
    units = dict(side.get("units") or {})
    units.update({"x": "px", "y": "px", "z": "px", "frame": "frame"})
    scale = meta.get("scale")
    layer_units = [str(u) for u in (meta.get("units") or ())]
    if scale is not None and len(scale) >= 3 and layer_units and layer_units[-1] in ("um", "micrometer", "µm"):
        units.setdefault("um_per_px", float(scale[-1]))
    rec = provenance("napari layer", {"layer": name}, side.get("parameters") or {}, units,
                     layer_kind=kind, n_rows=n)
    for k, v in side.items():
        rec.setdefault(k, v)
    return rec


def _write(path: str, data, meta: dict, kind: str) -> list[str]:
    from colloidcg.outputs import write_table

    p = Path(path)
    if p.suffix.lower() != ".parquet":
        p = p.with_suffix(".parquet")
    df = _table(data, meta.get("features"), kind)
    write_table(p, df, _sidecar(meta, str(meta.get("name") or p.stem), kind, len(df)))
    return [str(p)]


def write_tracks(path: str, data, meta: dict) -> list[str]:
    """Write a Tracks layer as ``path`` (.parquet) + its JSON sidecar."""
    return _write(path, data, meta, "tracks")


def write_points(path: str, data, meta: dict) -> list[str]:
    """Write a Points layer (frame, [z,] y, x) as ``path`` (.parquet) + its JSON sidecar;
    ``particle`` from the layer's features, else one id per point."""
    return _write(path, data, meta, "points")
