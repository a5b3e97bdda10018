"""napari layers for an upsampled system (``colloidcg upsample`` output, docs/scaling.md).

An upsample table is recognised by its sidecar's stage ("upsample"). It opens as one
Points layer: one sample per position of the frame slider (the table's frame column is
the sample index), every column a feature (size, seam_distance px, tile, velocities), and
in 2D the local |psi6| of every particle as a feature too, computed over the neighbours
within the first minimum of g(r) in the periodic box (minimum image). The points are
coloured by |psi6| (2D) or by the distance to the nearest seam (3D), drawn with the
particles' diameters when the table has a size column. In 2D the periodic box is drawn
as a rectangle (a Shapes layer, shown on every sample).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The sidecar stage written by ``colloidcg upsample``.
STAGE = "upsample"


def is_upsample(meta: dict) -> bool:
    """Whether a table's sidecar ``meta`` is an upsample output's."""
    return (meta or {}).get("stage") == STAGE


def _box(meta: dict, dim: int) -> np.ndarray | None:
    box = ((meta or {}).get("meta") or {}).get("box_px")
    if box is None:
        return None
    box = np.asarray(box, float).reshape(-1)
    return box if len(box) == dim and np.all(box > 0) else None


def _size_column(df: pd.DataFrame, meta: dict) -> str | None:
    col = ((meta or {}).get("parameters") or {}).get("size_column")
    return col if col and col in df.columns else None


def shell_radius(pos: np.ndarray, box: np.ndarray | None) -> float:
    """The first minimum of g(r) of one configuration ``pos`` (N, d) px in the periodic
    ``box`` (d,) px (or open), px; 1.4 median nearest-neighbour distances when g(r) has
    no clear first minimum."""
    from colloidcg.neighbours import nearest, pairs
    from colloidcg.structure.rdf import first_minimum

    nn = float(np.median(nearest(pos, 1, box=box)[0]))
    r_max = 3.0 * nn
    if box is not None:
        r_max = min(r_max, 0.499 * float(np.min(box)))
    dist = pairs(pos, r_max, box, sort=False, distances=True)[1]
    edges = np.linspace(0.0, r_max, 61)
    counts = np.histogram(dist, edges)[0]
    d = pos.shape[1]
    shell = np.pi * np.diff(edges ** 2) if d == 2 else 4.0 / 3.0 * np.pi * np.diff(edges ** 3)
    volume = float(np.prod(box)) if box is not None else float(np.prod(np.ptp(pos, 0)))
    ideal = 0.5 * len(pos) * (len(pos) - 1) / volume * shell
    g = counts / ideal
    r = 0.5 * (edges[1:] + edges[:-1])
    rmin = first_minimum(r, g, sigma=np.sqrt(np.maximum(counts, 1)) / ideal)
    return float(rmin) if rmin is not None and rmin > nn else 1.4 * nn


def local_psi6(pos: np.ndarray, box: np.ndarray | None, radius: float) -> np.ndarray:
    """(N,) |psi6| of every particle of ``pos`` (N, 2) px over its neighbours within
    ``radius`` px (minimum image in ``box``); NaN for a particle without neighbours."""
    from colloidcg.neighbours import pairs
    from colloidcg.structure.order import psi_k

    pr = pairs(pos, radius, box, sort=False)
    src = np.concatenate([pr[:, 0], pr[:, 1]])
    dst = np.concatenate([pr[:, 1], pr[:, 0]])
    bond = pos[dst] - pos[src]
    if box is not None:
        bond -= box * np.round(bond / box)
    return np.abs(psi_k(pos, src, dst, len(pos), 6, bonds=bond))


def upsample_features(df: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Every column of the table as features, and the local bond order: in 2D ``psi6_abs``
    (local |psi6|, per sample, neighbours within that sample's first minimum of g(r)), in 3D
    ``q6`` (Steinhardt q6 over the 12 nearest neighbours, as the macroscopic observable
    ``q6`` of :mod:`colloidcg.scaling.observables`)."""
    from ._common import table_features

    rows = df.reset_index(drop=True)
    features = table_features(rows)
    if "z" in rows.columns:
        features.insert(0, "q6", _local_q6(rows, _box(meta, 3)))
        return features
    box = _box(meta, 2)
    psi = np.full(len(rows), np.nan)
    for _, idx in rows.groupby("frame").indices.items():
        pos = rows.loc[idx, ["x", "y"]].to_numpy(float)
        if box is not None:
            pos = np.mod(pos, box)
        if len(pos) < 3:
            continue
        psi[idx] = local_psi6(pos, box, shell_radius(pos, box))
    features.insert(0, "psi6_abs", psi)
    return features


def _local_q6(rows: pd.DataFrame, box) -> np.ndarray:
    """(N,) q6 of every particle over the 12 nearest neighbours in its own sample (NaN in
    a sample of 12 particles or fewer)."""
    from colloidcg.scaling.observables import q6_norm, q6m_local

    q6 = np.full(len(rows), np.nan)
    for _, idx in rows.groupby("frame").indices.items():
        pos = rows.loc[idx, ["x", "y", "z"]].to_numpy(float)
        if len(pos) > 12:
            q6[idx] = q6_norm(q6m_local(np.mod(pos, box) if box is not None else pos, box)[0])
    return q6


def upsample_layers(df: pd.DataFrame, meta: dict, name: str) -> list[tuple]:
    """LayerData of an upsample table: a Points layer (frame slider = sample) with its
    features, and in 2D the periodic box as a Shapes rectangle."""
    from ._common import points_data

    dim = 3 if "z" in df.columns else 2
    rows = df.reset_index(drop=True)
    features = upsample_features(rows, meta)
    size_col = _size_column(rows, meta)
    if size_col is not None:
        size = rows[size_col].to_numpy(float)
    else:
        from colloidcg.neighbours import nearest

        first = rows[rows["frame"] == rows["frame"].iloc[0]][["x", "y", "z"][:dim]].to_numpy(float)
        size = 0.9 * float(np.median(nearest(first, 1)[0])) if len(first) > 1 else 10.0
    colour = "psi6_abs" if dim == 2 else "q6"
    params = meta.get("parameters") or {}
    info = {"kind": "upsample", "tracks": rows, "meta": meta, "parameters": params}
    kwargs = {"name": name, "features": features, "size": size, "border_width": 0.05,
              "border_width_is_relative": True, "border_color": "black", "opacity": 0.9,
              "metadata": {"colloidcg": info}}
    if colour is not None:
        values = features[colour].to_numpy(float)
        ok = values[np.isfinite(values)]
        lo, hi = (float(ok.min()), float(ok.max())) if len(ok) else (0.0, 1.0)
        if colour == "psi6_abs":
            lo, hi = 0.0, 1.0
        elif colour == "q6":
            lo, hi = 0.2, 0.6          # a gas about 0.28, a dense liquid 0.41, fcc 0.575
        kwargs.update({"face_color": colour, "face_colormap": "viridis",
                       "face_contrast_limits": (lo, hi if hi > lo else lo + 1.0)})
    out = [(points_data(rows), kwargs, "points")]
    box = _box(meta, dim)
    if box is not None and dim == 2:
        ly, lx = float(box[1]), float(box[0])
        rect = np.array([[0.0, 0.0], [0.0, lx], [ly, lx], [ly, 0.0]])
        out.append(([rect], {"name": f"{name} box", "shape_type": "rectangle", "edge_color": "white",
                             "face_color": "transparent", "edge_width": max(1.0, 0.002 * max(lx, ly)),
                             "metadata": {"colloidcg": {"kind": "upsample box", "box_px": box.tolist()}}},
                    "shapes"))
    return out
