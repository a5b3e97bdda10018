"""Coarse-graining maps and MD tracks tables.

:func:`coarse_grain` maps the atoms of an :class:`~.trajectory.MDTrajectory` onto CG
particles, each the mass-weighted centre of its atoms (and their velocities' mass-weighted
mean, its centre-of-mass velocity):

- ``"none"``: every atom is a particle;
- ``"molecule"``: one particle per molecule (``mol`` ids: the dump's mol column, GSD's
  bonded clusters, MDAnalysis's residues);
- ``"type"``: one particle per (molecule, type) pair, e.g. the blocks of a copolymer or
  a star's core and its arms (needs molecule ids);
- a file: CSV or Parquet with columns ``id`` (atom id) and ``group`` (CG particle id), or
  JSON ``{"GROUP": [atom ids, ...], ...}``; atoms not listed are left out.

``types`` keeps only atoms of those types before mapping (e.g. the star polymers' cores).

Centres are unwrapped across the periodic box: with image flags or unwrapped coordinates
they are the plain mass-weighted means; otherwise each group is first made whole around its
first atom by the minimum image (groups must span less than half the box) and the centres
are then unwrapped along time by the minimum image (no centre may move half a box between
frames).

:func:`md_tracks` returns the tracks table (frame, particle, x, y [, z], vx, vy [, vz],
mol/type where defined) and its sidecar: positions in the file's length unit with
``um_per_px = 1`` (so the model's "um" is that unit and its "s" the time unit), ``fps`` =
1 / the time between frames, the periodic box as ``meta.box_px``. ``train``, ``simulate``,
``evaluate`` and ``export`` read it as they read video tracks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ColloidcgError, ParameterError
from .trajectory import MDTrajectory, read_trajectory, unwrap_in_time

MAPS = ("none", "molecule", "type")


def _groups(traj: MDTrajectory, mapping: str, types=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(group index per atom, -1 = dropped; CG particle ids; extra per-group columns)."""
    N = traj.n_atoms
    keep = np.ones(N, bool)
    if types:
        if traj.types is None:
            raise ColloidcgError(f"{traj.path}: --types given but the file has no atom types")
        want = {str(t) for t in types}
        keep = np.array([str(t) in want for t in traj.types])
        if not keep.any():
            raise ColloidcgError(f"{traj.path}: no atom has type {', '.join(sorted(want))} "
                                 f"(types: {', '.join(sorted(map(str, np.unique(traj.types))))})")
    extra = {}
    if mapping == "none":
        key = traj.ids
        extra_src = {"type": traj.types, "mol": traj.mol}
    elif mapping == "molecule":
        if traj.mol is None:
            raise ColloidcgError(f"{traj.path}: --coarse-grain molecule needs molecule ids (a mol column in "
                                 "the dump, bonds in a GSD file, or a topology for MDAnalysis formats)")
        key = traj.mol
        extra_src = {}
    elif mapping == "type":
        if traj.types is None or traj.mol is None:
            raise ColloidcgError(f"{traj.path}: --coarse-grain type needs atom types and molecule ids")
        tcodes, tinv = np.unique(traj.types.astype(str), return_inverse=True)
        key = traj.mol.astype(np.int64) * len(tcodes) + tinv
        extra_src = {"mol": traj.mol, "type": traj.types}
    else:
        path = Path(mapping)
        if not path.is_file():
            raise ParameterError(f"--coarse-grain: expected none, molecule, type or a mapping file; "
                                 f"{mapping!r} is none of them")
        amap = _read_map(path)
        gid = np.array([amap.get(int(i), -1) for i in traj.ids], dtype=np.int64)
        if (gid < 0).all():
            raise ColloidcgError(f"{path}: no atom id of {traj.path} is in the map")
        keep &= gid >= 0
        key = gid
        extra_src = {}
    key = np.asarray(key)
    uniq, inv = np.unique(key[keep], return_inverse=True)
    g = np.full(N, -1, np.int64)
    g[keep] = inv
    kept = np.flatnonzero(keep)
    first_atom = kept[np.unique(inv, return_index=True)[1]]      # each group's first atom
    for name, src in extra_src.items():
        if src is not None:
            extra[name] = np.asarray(src)[first_atom]
    pids = np.arange(len(uniq)) + 1 if mapping == "type" else uniq.astype(np.int64)
    return g, pids, extra


def _read_map(path: Path) -> dict:
    try:
        if path.suffix.lower() == ".json":
            rec = json.loads(path.read_text())
            return {int(a): int(gr) for gr, atoms in rec.items() for a in atoms}
        df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001
        raise ColloidcgError(f"{path}: not a readable mapping ({exc.__class__.__name__}: {exc})") from None
    if not {"id", "group"} <= set(df.columns):
        raise ColloidcgError(f"{path}: a mapping needs columns id and group (got {', '.join(map(str, df.columns))})")
    if df["id"].duplicated().any():
        raise ColloidcgError(f"{path}: atom id {int(df.loc[df['id'].duplicated(), 'id'].iloc[0])} is mapped twice")
    return dict(zip(df["id"].astype(int), df["group"].astype(int)))


def coarse_grain(traj: MDTrajectory, mapping: str = "molecule", types=None):
    """CG positions (T, G, d), velocities (T, G, d) or None, particle ids (G,), extra
    per-particle columns, and the number of atoms per particle (see module docstring)."""
    g, pids, extra = _groups(traj, mapping, types)
    from scipy.sparse import csr_matrix
    G = len(pids)
    atoms = np.flatnonzero(g >= 0)
    m = np.ones(traj.n_atoms) if traj.mass is None else np.asarray(traj.mass, float)
    if np.any(m[atoms] <= 0):
        raise ColloidcgError(f"{traj.path}: zero or negative masses")
    M = np.bincount(g[atoms], weights=m[atoms], minlength=G)
    W = csr_matrix((m[atoms] / M[g[atoms]], (g[atoms], atoms)), shape=(G, traj.n_atoms))
    T, _, d = traj.pos.shape
    pos = traj.pos
    box = traj.box
    if not traj.unwrapped and mapping != "none":
        # make each group whole around its first atom, then unwrap the centres in time
        first = np.full(G, -1)
        for a in atoms[::-1]:
            first[g[a]] = a
        ref = np.where(g >= 0, first[np.maximum(g, 0)], np.arange(traj.n_atoms))
        rel = pos - pos[:, ref]
        rel -= box * np.round(rel / box)
        pos = pos[:, ref] + rel
    flat = pos.transpose(1, 0, 2).reshape(traj.n_atoms, T * d)
    com = np.asarray(W @ flat).reshape(G, T, d).transpose(1, 0, 2)
    if not traj.unwrapped:
        com = unwrap_in_time(com, box)
    vel = None
    if traj.vel is not None:
        vflat = traj.vel.transpose(1, 0, 2).reshape(traj.n_atoms, T * d)
        vel = np.asarray(W @ vflat).reshape(G, T, d).transpose(1, 0, 2)
    n_atoms = np.bincount(g[atoms], minlength=G)
    return com, vel, pids, extra, n_atoms


def md_tracks(traj: MDTrajectory, mapping: str = "none", types=None, source: dict | None = None,
              parameters: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Tracks table and sidecar of a (coarse-grained) trajectory (see module docstring)."""
    from ..outputs import provenance

    com, vel, pids, extra, n_atoms = coarse_grain(traj, mapping, types)
    T, G, d = com.shape
    names = ["x", "y", "z"][:d]
    out = {"frame": np.repeat(np.arange(T, dtype=np.int64), G),
           "particle": np.tile(pids.astype(np.int64), T)}
    for a, nm in enumerate(names):
        out[nm] = com[:, :, a].reshape(-1)
    fdt = traj.frame_dt
    if vel is not None:
        for a, nm in enumerate(names):
            out["v" + nm] = vel[:, :, a].reshape(-1) * fdt          # px/frame, as the tracks schema
    for k, v in extra.items():
        vals = np.asarray(v)
        out[k] = np.tile(vals.astype(np.int64) if vals.dtype.kind in "iu" else vals.astype(str), T)
    df = pd.DataFrame(out)
    length, time = traj.units.get("length", "length unit"), traj.units.get("time", "time unit")
    periodic = all(traj.periodic) if traj.periodic else True
    meta = {"fps": 1.0 / fdt, "um_per_px": 1.0, "box_px": [float(b) for b in traj.box] if periodic else None,
            "dim": d, "length_unit": length, "time_unit": time, "t0": float(traj.times[0]),
            "note": f"positions in {length} (px = 1 {length}; the model's 'um' is 1 {length} and its 's' "
                    f"is 1 {time}); frame = index of the frame read, time = t0 + frame / fps"}
    if traj.tilt is not None:
        # the sheared periodic box: an image across y is shifted along x by tilt_xy(frame)
        meta["lees_edwards"] = {"plane": "xy", "shear_rate": traj.shear_rate,
                                "tilt_xy": [float(t) for t in traj.tilt],
                                "note": "x flows with y (velocity gradient along y); the box's image at "
                                        "y + L_y is shifted along x by tilt_xy of the frame"}
    units = {"frame": f"frame (1/fps = {fdt:g} {time})", **{nm: f"px (= {length})" for nm in names}}
    if vel is not None:
        units.update({"v" + nm: "px/frame" for nm in names})
    params = {"coarse_grain": mapping, "types": list(map(str, types)) if types else None,
              "n_particles": int(G), "atoms_per_particle": [int(n_atoms.min()), int(n_atoms.max())],
              **(parameters or {})}
    side = provenance("md-read", source or {"trajectory": traj.path}, params, units=units, meta=meta,
                      md=traj.describe())
    return df, side


def read_md_tracks(path, coarse_grain: str = "none", types=None, **read_kw) -> tuple[pd.DataFrame, dict]:
    """:func:`~.trajectory.read_trajectory` then :func:`md_tracks`."""
    traj = read_trajectory(path, **read_kw)
    src = {"trajectory": str(path)}
    if read_kw.get("topology"):
        src["topology"] = str(read_kw["topology"])
    params = {k: v for k, v in read_kw.items() if k != "topology"}
    return md_tracks(traj, coarse_grain, types, source=src, parameters=params)
