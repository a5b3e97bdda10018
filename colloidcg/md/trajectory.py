"""Reading MD trajectories: LAMMPS text dumps, GSD, and what MDAnalysis reads.

:func:`read_trajectory` returns one :class:`MDTrajectory` whatever the format:

- positions (T, N, d) in the file's length unit, measured from the box's lower corner
  (so the box is ``[0, L)`` per axis), unwrapped across the periodic box when the file
  says how (LAMMPS image flags ix/iy/iz or unwrapped xu/yu/zu/xsu columns, GSD image
  flags); otherwise wrapped into ``[0, L)`` with ``unwrapped = False`` (the coarse-graining
  step then unwraps by the minimum image along time);
- velocities (T, N, d) in length/time units when the file has them;
- atom ids, types, molecule ids and masses where the file has them (sorted by id);
- the orthogonal periodic box (d,), which may not change in time; triclinic boxes are
  refused with a one-line error, except the sheared (Lees-Edwards) box of a LAMMPS dump:
  an xy tilt only (xz = yz = 0), which may change in time (``fix deform ... xy``), with
  unwrapped coordinates (xu/yu/zu, or image flags); its per-frame tilt is kept in
  ``tilt`` (T,) and the box is the orthogonal one of the same edge lengths;
- times (T,) of the frames and the units (LAMMPS unit style: length and time names).

Formats: ``lammps-dump`` (text dump, ``dump custom``/``atom``, any column order; parsed
here because MDAnalysis's dump reader does not keep ``mol``, masses or the ``ITEM: UNITS``
and ``ITEM: TIME`` lines and cannot name a truncated frame), ``gsd`` (HOOMD-blue, with the
``gsd`` package; molecules are the bonded clusters), and any trajectory format of
MDAnalysis (``xtc``, ``trr``, ``dcd``, ``nc``, ``lammpstrj`` through MDAnalysis when asked,
...), with an optional topology file for types, molecules (residues) and masses.

Every problem in the input is a one-line :class:`~colloidcg.errors.ColloidcgError` that
names the file and the problem: a truncated dump, a missing box, an atom count that
changes, units that contradict each other, a triclinic box other than an xy shear, a
changing box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ColloidcgError, ParameterError

#: LAMMPS unit styles: (length unit, time unit).
UNIT_STYLES = {
    "lj": ("sigma", "tau"),
    "real": ("Angstrom", "fs"),
    "metal": ("Angstrom", "ps"),
    "si": ("m", "s"),
    "cgs": ("cm", "s"),
    "electron": ("Bohr", "fs"),
    "micro": ("um", "us"),
    "nano": ("nm", "ns"),
    "mdanalysis": ("Angstrom", "ps"),
}

#: File name endings read as LAMMPS text dumps and as GSD.
DUMP_SUFFIXES = (".dump", ".lammpstrj", ".lammpsdump")
GSD_SUFFIXES = (".gsd",)
#: Endings that MDAnalysis reads as trajectories (what :func:`detect_format` hands to it).
MDA_SUFFIXES = (".xtc", ".trr", ".dcd", ".nc", ".ncdf", ".netcdf", ".xyz", ".h5md", ".trj",
                ".mdcrd", ".crd", ".dms", ".tng", ".gro", ".pdb")
TRAJECTORY_SUFFIXES = DUMP_SUFFIXES + GSD_SUFFIXES + MDA_SUFFIXES


@dataclass
class MDTrajectory:
    """A trajectory as arrays (see the module docstring for units and conventions)."""

    path: str
    format: str
    pos: np.ndarray                    # (T, N, d)
    box: np.ndarray                    # (d,)
    times: np.ndarray                  # (T,) in time units
    unwrapped: bool
    ids: np.ndarray                    # (N,)
    vel: np.ndarray | None = None      # (T, N, d)
    types: np.ndarray | None = None    # (N,)
    mol: np.ndarray | None = None      # (N,)
    mass: np.ndarray | None = None     # (N,)
    steps: np.ndarray | None = None    # (T,) integration steps, where the format has them
    units: dict = field(default_factory=dict)   # style, length, time, source
    periodic: tuple = ()
    notes: list = field(default_factory=list)
    tilt: np.ndarray | None = None     # (T,) xy tilt of a sheared (Lees-Edwards) box, length units

    @property
    def n_frames(self) -> int:
        return self.pos.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.pos.shape[1]

    @property
    def dim(self) -> int:
        return self.pos.shape[2]

    @property
    def frame_dt(self) -> float:
        """Time between frames (time units); 1 with a single frame."""
        return float(np.median(np.diff(self.times))) if len(self.times) > 1 else 1.0

    def describe(self) -> dict:
        """A JSON-ready summary (what ``colloidcg info`` prints)."""
        return {
            "format": self.format, "frames": self.n_frames, "atoms": self.n_atoms, "dim": self.dim,
            "box": [float(b) for b in self.box], "periodic": list(self.periodic),
            "units": dict(self.units), "frame_dt": self.frame_dt,
            "time": [float(self.times[0]), float(self.times[-1])],
            "steps": None if self.steps is None else [int(self.steps[0]), int(self.steps[-1])],
            "unwrapped": self.unwrapped, "velocities": self.vel is not None,
            "types": None if self.types is None else sorted(map(str, np.unique(self.types))),
            "molecules": None if self.mol is None else int(len(np.unique(self.mol))),
            "masses": self.mass is not None, "notes": list(self.notes),
            "sheared": None if self.tilt is None else {
                "plane": "xy", "tilt_xy": [float(self.tilt[0]), float(self.tilt[-1])],
                "shear_rate": self.shear_rate},
        }

    @property
    def shear_rate(self) -> float | None:
        """d(tilt_xy)/dt / L_y (1/time) of a sheared box (least squares over the frames;
        box flips, tilt jumps of L_x, undone first), or None."""
        if self.tilt is None or len(self.times) < 2:
            return None
        tilt = np.unwrap(self.tilt, period=float(self.box[0]))
        return float(np.polyfit(self.times, tilt, 1)[0] / self.box[1])


def detect_format(path) -> str | None:
    """``lammps-dump``, ``gsd``, ``mdanalysis`` or None from the file name (and, for an
    unknown ending, the first line of a text file)."""
    p = Path(path)
    suf = p.suffix.lower()
    if suf in DUMP_SUFFIXES or p.name.lower().startswith("dump."):
        return "lammps-dump"
    if suf in GSD_SUFFIXES:
        return "gsd"
    if suf in MDA_SUFFIXES:
        return "mdanalysis"
    try:
        with open(p, "rb") as f:
            head = f.read(64)
        if head.startswith(b"ITEM: "):
            return "lammps-dump"
    except OSError:
        pass
    return None


def read_trajectory(path, *, format: str | None = None, topology=None, units: str | None = None,
                    timestep: float | None = None, dim: int | None = None, box=None,
                    start: int = 0, stop: int | None = None, stride: int = 1) -> MDTrajectory:
    """Read a trajectory file into an :class:`MDTrajectory`.

    Parameters
    ----------
    path : the trajectory file.
    format : ``lammps-dump``, ``gsd`` or ``mdanalysis`` (default: from the file name).
    topology : a topology file MDAnalysis reads (LAMMPS data, PDB, PSF, GRO, TPR, ...) for
        types, molecules and masses of an MDAnalysis trajectory.
    units : LAMMPS unit style (lj, real, metal, si, cgs, electron, micro, nano) when the
        file does not say; a file that says otherwise is an error (mixed units).
    timestep : the integration step size in time units, for formats that number frames by
        step (LAMMPS dumps without ``ITEM: TIME``, GSD); without it times are in steps.
    dim : 2 or 3 (default: 2 when every z is equal and the file is 2D, else 3).
    box : box lengths (d values) for files that carry none (e.g. an XYZ file).
    start, stop, stride : frames kept (Python slice of the file's frames).
    """
    p = Path(path)
    if not p.exists():
        raise ColloidcgError(f"{p}: no such file")
    if p.is_dir():
        raise ColloidcgError(f"{p}: is a folder, expected a trajectory file")
    if units is not None and units not in UNIT_STYLES:
        raise ParameterError(f"units: expected one of {', '.join(UNIT_STYLES)}, got {units!r}")
    if timestep is not None and not (np.isfinite(timestep) and timestep > 0):
        raise ParameterError(f"timestep: must be a positive number, got {timestep}")
    if dim not in (None, 2, 3):
        raise ParameterError(f"dim: expected 2 or 3, got {dim}")
    if stride < 1 or start < 0:
        raise ParameterError(f"stride must be >= 1 and start >= 0 (got {stride}, {start})")
    fmt = format or detect_format(p)
    if fmt is None:
        raise ColloidcgError(f"{p}: unknown trajectory format (expected a LAMMPS dump, a .gsd file "
                             f"or one of {', '.join(MDA_SUFFIXES)}); pass --format")
    sl = slice(start, stop, stride)
    if fmt == "lammps-dump":
        traj = _read_dump(p, units, timestep, sl)
    elif fmt == "gsd":
        traj = _read_gsd(p, units, timestep, sl)
    elif fmt == "mdanalysis":
        traj = _read_mdanalysis(p, topology, units, sl, box)
    else:
        raise ParameterError(f"format: expected lammps-dump, gsd or mdanalysis, got {fmt!r}")
    if traj.n_frames == 0:
        raise ColloidcgError(f"{p}: no frames (after start/stop/stride)")
    return _finish(traj, dim)


# ---------------------------------------------------------------------------- helpers
def _units(style: str | None, source: str) -> dict:
    if style is None:
        return {"style": None, "length": "length unit", "time": "time unit", "source": "unknown"}
    length, time = UNIT_STYLES[style]
    return {"style": style, "length": length, "time": time, "source": source}


def _check_times(p: Path, times: np.ndarray) -> None:
    if len(times) < 2:
        return
    d = np.diff(times)
    if np.any(d <= 0):
        k = int(np.flatnonzero(d <= 0)[0]) + 1
        raise ColloidcgError(f"{p}: frame {k} (time {times[k]:g}) does not come after the frame before "
                             f"it (time {times[k - 1]:g}); frames must be in time order")
    if np.ptp(d) > 1e-6 * abs(np.median(d)):
        raise ColloidcgError(f"{p}: frames are unevenly spaced in time (steps from {d.min():g} to {d.max():g}); "
                             "colloidcg needs a fixed interval (dump every N steps)")


def unwrap_in_time(pos: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions (T, N, d) wrapped in a periodic ``box`` made continuous in time: each
    frame-to-frame displacement is taken as its minimum image (valid while no particle
    moves more than half a box length between frames)."""
    disp = np.diff(pos, axis=0)
    disp -= box * np.round(disp / box)
    return np.concatenate([pos[:1], pos[:1] + np.cumsum(disp, axis=0)], axis=0)


def _finish(traj: MDTrajectory, dim: int | None) -> MDTrajectory:
    d = traj.pos.shape[2]
    want = dim
    if want is None:
        flat = d == 3 and traj.n_atoms > 0 and float(np.ptp(traj.pos[..., 2])) == 0.0
        want = 2 if flat else d
        if flat:
            traj.notes.append("every z is equal: read as 2D (pass --dim 3 to keep z)")
    if want > d:
        raise ParameterError(f"dim: {want} requested but {traj.path} has {d} coordinates")
    if want < d:
        traj.pos = traj.pos[..., :want]
        traj.box = traj.box[:want]
        traj.periodic = tuple(traj.periodic[:want])
        if traj.vel is not None:
            traj.vel = traj.vel[..., :want]
    if not np.all(np.isfinite(traj.pos)):
        raise ColloidcgError(f"{traj.path}: NaN or infinite positions")
    if traj.vel is not None and not np.all(np.isfinite(traj.vel)):
        raise ColloidcgError(f"{traj.path}: NaN or infinite velocities")
    return traj


# ---------------------------------------------------------------------------- LAMMPS dump
_COORDS = {"x": ("x", "y", "z"), "xu": ("xu", "yu", "zu"), "xs": ("xs", "ys", "zs"), "xsu": ("xsu", "ysu", "zsu")}


def _read_dump(p: Path, units: str | None, timestep: float | None, sl: slice) -> MDTrajectory:
    try:
        lines = p.read_text().splitlines()
    except UnicodeDecodeError:
        raise ColloidcgError(f"{p}: not a text LAMMPS dump (binary or compressed file); write it "
                             "with 'dump custom' (text) or gunzip it first") from None
    n = len(lines)
    frames = []          # (step, time, natoms, box(lo, hi), flags, cols, data, units)
    i = 0

    def need(k, what, step):
        if i + k > n:
            raise ColloidcgError(f"{p}: truncated: the frame at timestep {step} ends inside its {what} "
                                 f"(file ends at line {n}); the run was cut or the file was copied early")

    while i < n:
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        if not line.startswith("ITEM:"):
            raise ColloidcgError(f"{p}: line {i + 1}: expected an ITEM line, got {line[:60]!r}; "
                                 "not a LAMMPS text dump")
        step = None
        fr = {"step": None, "time": None, "natoms": None, "box": None, "flags": None, "units": None,
              "tilt": None}
        while True:
            if i >= n:
                raise ColloidcgError(f"{p}: truncated: the frame at timestep {step} has no ATOMS section "
                                     "(the file ends early)")
            item = lines[i].strip()
            if not item.startswith("ITEM:"):
                raise ColloidcgError(f"{p}: line {i + 1}: expected an ITEM line in the frame at timestep "
                                     f"{step}, got {item[:60]!r}")
            key = item[5:].strip()
            if key.startswith("TIMESTEP"):
                if fr["step"] is not None:
                    raise ColloidcgError(f"{p}: truncated: the frame at timestep {fr['step']} has no ATOMS "
                                         f"section (line {i + 1} starts the next frame)")
                need(2, "TIMESTEP", "?")
                try:
                    step = fr["step"] = int(float(lines[i + 1].split()[0]))
                except (ValueError, IndexError):
                    raise ColloidcgError(f"{p}: line {i + 2}: bad timestep {lines[i + 1][:40]!r}") from None
                i += 2
            elif key.startswith("UNITS"):
                need(2, "UNITS line", step)
                fr["units"] = lines[i + 1].strip()
                i += 2
            elif key.startswith("TIME"):
                need(2, "TIME line", step)
                fr["time"] = float(lines[i + 1].split()[0])
                i += 2
            elif key.startswith("NUMBER OF ATOMS"):
                need(2, "NUMBER OF ATOMS line", step)
                fr["natoms"] = int(lines[i + 1].split()[0])
                i += 2
            elif key.startswith("BOX BOUNDS"):
                words = key.split()[2:]
                tri = [w for w in words if w in ("xy", "xz", "yz")]
                if "abc" in words or (tri and tri != ["xy", "xz", "yz"]):
                    raise ColloidcgError(f"{p}: general triclinic box ({' '.join(words)}) in the frame at "
                                         f"timestep {step}; colloidcg reads orthogonal and xy-sheared boxes only")
                if tri:
                    words = [w for w in words if w not in tri]
                need(4, "BOX BOUNDS", step)
                try:
                    raw = np.array([[float(v) for v in lines[i + 1 + k].split()[:3 if tri else 2]] for k in range(3)])
                except ValueError:
                    raise ColloidcgError(f"{p}: line {i + 2}: bad BOX BOUNDS in the frame at timestep {step}") from None
                if raw.shape != (3, 3 if tri else 2):
                    raise ColloidcgError(f"{p}: line {i + 2}: bad BOX BOUNDS in the frame at timestep {step}")
                bounds = raw[:, :2].copy()
                if tri:
                    xy, xz, yz = raw[:, 2]
                    if xz != 0.0 or yz != 0.0:
                        raise ColloidcgError(f"{p}: triclinic box with tilts xz = {xz:g}, yz = {yz:g} in the frame "
                                             f"at timestep {step}; colloidcg reads an xy shear only (xz = yz = 0)")
                    # LAMMPS writes the bounding box of the tilted cell: take the tilt back out
                    bounds[0] -= (min(0.0, xy), max(0.0, xy))
                    fr["tilt"] = float(xy)
                fr["box"] = bounds
                fr["flags"] = tuple(words[:3]) if len(words) >= 3 else ("pp", "pp", "pp")
                i += 4
            elif key.startswith("ATOMS"):
                cols = key.split()[1:]
                if fr["step"] is None:
                    raise ColloidcgError(f"{p}: a frame before line {i + 1} has no TIMESTEP item")
                if fr["natoms"] is None:
                    raise ColloidcgError(f"{p}: the frame at timestep {step} has no NUMBER OF ATOMS item")
                N = fr["natoms"]
                i += 1
                if i + N > n:
                    got = n - i
                    raise ColloidcgError(f"{p}: truncated: the frame at timestep {step} has {got} of its {N} "
                                         "atom lines (the file ends early; the run was cut or the file "
                                         "copied while being written)")
                try:
                    data = np.array(" ".join(lines[i:i + N]).split(), dtype=float)
                except ValueError:
                    raise ColloidcgError(f"{p}: non-numeric atom data in the frame at timestep {step}; "
                                         "type labels must be numbers") from None
                if data.size != N * len(cols):
                    raise ColloidcgError(f"{p}: the frame at timestep {step} has atom lines of the wrong "
                                         f"length (expected {len(cols)} columns: {' '.join(cols)}); the "
                                         "file is truncated or damaged")
                fr["cols"] = cols
                fr["data"] = data.reshape(N, len(cols))
                i += N
                break
            else:
                raise ColloidcgError(f"{p}: line {i + 1}: unknown item {item[:60]!r}")
        frames.append(fr)
    if not frames:
        raise ColloidcgError(f"{p}: empty file (no frames)")
    # consistency over the whole file, before slicing (a bad frame anywhere is an error)
    f0 = frames[0]
    for fr in frames:
        if fr["box"] is None:
            raise ColloidcgError(f"{p}: missing box: the frame at timestep {fr['step']} has no BOX BOUNDS")
        if fr["natoms"] != f0["natoms"]:
            raise ColloidcgError(f"{p}: the atom count changes from {f0['natoms']} to {fr['natoms']} at "
                                 f"timestep {fr['step']}; colloidcg needs a fixed set of atoms")
        if fr["cols"] != f0["cols"]:
            raise ColloidcgError(f"{p}: the columns change at timestep {fr['step']} "
                                 f"({' '.join(f0['cols'])} -> {' '.join(fr['cols'])})")
        if fr["units"] is not None and f0["units"] is not None and fr["units"] != f0["units"]:
            # LAMMPS writes ITEM: UNITS in the first frame only; another value later is a
            # second file appended to the first
            raise ColloidcgError(f"{p}: mixed units: {f0['units']!r} at timestep {f0['step']} but "
                                 f"{fr['units']!r} at timestep {fr['step']}")
        if (fr["time"] is None) != (f0["time"] is None):
            raise ColloidcgError(f"{p}: some frames have ITEM: TIME and some do not")
        if (fr["tilt"] is None) != (f0["tilt"] is None):
            raise ColloidcgError(f"{p}: the box is sheared (xy tilt) in some frames and orthogonal in others "
                                 f"(timestep {fr['step']})")
    file_units = f0["units"]
    if file_units is not None and file_units not in UNIT_STYLES:
        raise ColloidcgError(f"{p}: unknown LAMMPS unit style {file_units!r}")
    if units is not None and file_units is not None and units != file_units:
        raise ColloidcgError(f"{p}: mixed units: the file says {file_units!r} (ITEM: UNITS) but "
                             f"--units says {units!r}")
    style = file_units or units
    unit_rec = _units(style, "file" if file_units else ("flag" if units else "unknown"))
    cols = f0["cols"]
    kind = [k for k, names in _COORDS.items() if names[0] in cols or names[1] in cols]
    for k in list(kind):
        names = _COORDS[k]
        if not (names[0] in cols and names[1] in cols):
            raise ColloidcgError(f"{p}: mixed coordinate columns ({' '.join(c for c in cols if c in sum(_COORDS.values(), ()))}); "
                                 "dump x y z, xu yu zu, xs ys zs or xsu ysu zsu")
    if not kind:
        raise ColloidcgError(f"{p}: no position columns (expected x y [z], xu yu [zu], xs ys [zs] or "
                             f"xsu ysu [zsu]; got {' '.join(cols)})")
    kind = next(k for k in ("xu", "xsu", "x", "xs") if k in kind)   # unwrapped when available
    names = [c for c in _COORDS[kind] if c in cols]
    frames = frames[sl]
    if not frames:
        raise ColloidcgError(f"{p}: no frames (after start/stop/stride)")
    bounds = np.stack([fr["box"] for fr in frames])            # (T, 3, 2)
    L = bounds[:, :, 1] - bounds[:, :, 0]
    if np.any(L[0, :len(names)] <= 0):
        raise ColloidcgError(f"{p}: missing box: zero or negative box lengths {L[0].tolist()}")
    if np.ptp(L, axis=0).max() > 1e-9 * L[0].max():
        k = int(np.flatnonzero(np.abs(L - L[0]).max(1) > 1e-9 * L[0].max())[0])
        raise ColloidcgError(f"{p}: the box changes at timestep {frames[k]['step']} ({L[0].tolist()} -> "
                             f"{L[k].tolist()}); colloidcg needs fixed box lengths (NVT or xy shear, "
                             "not NPT or a stretching deform)")
    tilt = None if f0["tilt"] is None else np.array([fr["tilt"] for fr in frames], float)
    d = len(names)
    box = L[0, :d]
    lo = bounds[:, :d, 0]                                      # (T, d)
    ci = [cols.index(c) for c in names]
    data = np.stack([fr["data"] for fr in frames])             # (T, N, C)
    idcol = cols.index("id") if "id" in cols else None
    if idcol is not None:
        ids_t = data[:, :, idcol].astype(np.int64)
        order = np.argsort(ids_t, axis=1, kind="stable")
        data = np.take_along_axis(data, order[:, :, None], axis=1)
        ids = data[0, :, idcol].astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ColloidcgError(f"{p}: repeated atom ids in the frame at timestep {frames[0]['step']}")
        bad = np.flatnonzero((data[:, :, idcol].astype(np.int64) != ids).any(1))
        if bad.size:
            raise ColloidcgError(f"{p}: the set of atom ids changes at timestep {frames[int(bad[0])]['step']}")
    else:
        ids = np.arange(1, data.shape[1] + 1)
    xyz = data[:, :, ci]
    if kind in ("xs", "xsu"):
        pos = xyz * box
    else:
        pos = xyz - lo[:, None, :]
    unwrapped = kind in ("xu", "xsu")
    imgs = [c for c in ("ix", "iy", "iz")[:d] if c in cols]
    if tilt is not None and kind in ("xs", "xsu"):
        raise ColloidcgError(f"{p}: scaled coordinates ({' '.join(names)}) in a sheared box; dump xu yu zu "
                             "(or x y z with ix iy iz)")
    if not unwrapped and len(imgs) == d:
        pos = pos + data[:, :, [cols.index(c) for c in imgs]] * box
        if tilt is not None:      # an image across y is shifted along x by the tilt
            pos[:, :, 0] += data[:, :, cols.index("iy")] * tilt[:, None]
        unwrapped = True
    elif not unwrapped:
        if tilt is not None:
            raise ColloidcgError(f"{p}: wrapped coordinates without image flags in a sheared box; dump "
                                 "xu yu zu (or x y z with ix iy iz)")
        pos = np.mod(pos, box)
    vel = None
    vnames = [c for c in ("vx", "vy", "vz")[:d] if c in cols]
    if len(vnames) == d:
        vel = data[:, :, [cols.index(c) for c in vnames]]
    def col(name, dtype):
        return data[0, :, cols.index(name)].astype(dtype) if name in cols else None
    types = col("type", np.int64)
    mol = col("mol", np.int64)
    mass = col("mass", float)
    steps = np.array([fr["step"] for fr in frames], dtype=np.int64)
    notes = []
    if f0["time"] is not None:
        times = np.array([fr["time"] for fr in frames], float)
        if timestep is not None:
            notes.append("times from ITEM: TIME (--timestep ignored)")
    elif timestep is not None:
        times = steps * float(timestep)
    else:
        times = steps.astype(float)
        unit_rec["time"] = "step"
        notes.append("no ITEM: TIME and no --timestep: time is counted in integration steps")
    _check_times(p, times)
    flags = f0["flags"] or ("pp",) * 3
    periodic = tuple(f == "pp" for f in flags[:d])
    if tilt is not None:
        notes.append("sheared box (xy tilt, Lees-Edwards): the streaming velocity is part of the positions "
                     "and velocities")
    return MDTrajectory(str(p), "lammps-dump", pos, box.astype(float), times, unwrapped, ids, vel, types, mol,
                        mass, steps, unit_rec, periodic, notes, tilt)


# ---------------------------------------------------------------------------- GSD
def _read_gsd(p: Path, units: str | None, timestep: float | None, sl: slice) -> MDTrajectory:
    try:
        import gsd.hoomd
    except ImportError:
        raise ColloidcgError(f"{p}: reading GSD needs the gsd package (pip install colloidcg[md])") from None
    try:
        f = gsd.hoomd.open(str(p), "r")
    except Exception as exc:  # gsd raises RuntimeError/OSError for damaged files
        raise ColloidcgError(f"{p}: not a readable GSD file ({exc.__class__.__name__}: {exc})") from None
    with f:
        nf = len(f)
        if nf == 0:
            raise ColloidcgError(f"{p}: empty GSD file (no frames)")
        idx = list(range(nf))[sl]
        has_img = any(f.file.chunk_exists(frame=k, name="particles/image") for k in (0, nf - 1))
        has_vel = any(f.file.chunk_exists(frame=k, name="particles/velocity") for k in (0, nf - 1))
        if not f.file.chunk_exists(frame=0, name="configuration/box"):
            raise ColloidcgError(f"{p}: missing box: the first frame stores no configuration/box "
                                 "(GSD's default 1 x 1 x 1 box is not read as a box)")
        pos, vel, steps, boxes, n0 = [], [], [], [], None
        for k in idx:
            fr = f[k]
            N = fr.particles.N
            if n0 is None:
                n0, first = N, fr
            elif N != n0:
                raise ColloidcgError(f"{p}: the particle count changes from {n0} to {N} at frame {k} "
                                     f"(step {fr.configuration.step}); colloidcg needs a fixed set of particles")
            b = np.asarray(fr.configuration.box, float)
            dims = int(fr.configuration.dimensions)
            if np.any(b[3:] != 0):
                raise ColloidcgError(f"{p}: triclinic box (tilts {b[3:].tolist()}) at frame {k}; "
                                     "colloidcg reads orthogonal boxes only")
            if np.any(b[:dims] <= 0):
                raise ColloidcgError(f"{p}: missing box: box lengths {b[:3].tolist()} at frame {k}")
            boxes.append(b[:3])
            r = np.asarray(fr.particles.position, float) + b[:3] / 2
            if has_img:
                r = r + np.asarray(fr.particles.image, float) * b[:3]
            pos.append(r)
            if has_vel:
                vel.append(np.asarray(fr.particles.velocity, float))
            steps.append(int(fr.configuration.step))
        boxes = np.array(boxes)
        if np.ptp(boxes, axis=0).max() > 1e-9 * boxes.max():
            raise ColloidcgError(f"{p}: the box changes in time; colloidcg needs a fixed box")
        types = np.asarray(first.particles.types, dtype=object)[np.asarray(first.particles.typeid)]
        mass = np.asarray(first.particles.mass, float)
        mol = None
        if first.bonds.N > 0:
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components
            g = np.asarray(first.bonds.group)
            adj = coo_matrix((np.ones(len(g)), (g[:, 0], g[:, 1])), shape=(n0, n0))
            mol = connected_components(adj, directed=False)[1].astype(np.int64) + 1
        dims = int(first.configuration.dimensions)
    box = boxes[0]
    pos = np.stack(pos)
    if not has_img:
        pos = np.mod(pos, box)
    steps = np.asarray(steps, np.int64)
    unit_rec = _units(units, "flag" if units else "unknown")
    notes = ["GSD files carry no units: pass --units"] if units is None else []
    if timestep is not None:
        times = steps * float(timestep)
    else:
        times = steps.astype(float)
        unit_rec["time"] = "step"
        notes.append("no --timestep: time is counted in integration steps")
    _check_times(p, times)
    traj = MDTrajectory(str(p), "gsd", pos, box, times, bool(has_img), np.arange(n0), np.stack(vel) if has_vel else None,
                        np.array([str(t) for t in types]), mol, mass, steps, unit_rec, (True,) * 3, notes)
    if dims == 2:
        traj.pos, traj.box = traj.pos[..., :2], traj.box[:2]
        traj.periodic = (True, True)
        if traj.vel is not None:
            traj.vel = traj.vel[..., :2]
    return traj


# ---------------------------------------------------------------------------- MDAnalysis
def _read_mdanalysis(p: Path, topology, units: str | None, sl: slice, box) -> MDTrajectory:
    try:
        import MDAnalysis as mda
    except ImportError:
        raise ColloidcgError(f"{p}: reading this format needs MDAnalysis (pip install colloidcg[md])") from None
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if topology is not None:
                u = mda.Universe(str(topology), str(p))
            else:
                from MDAnalysis.coordinates.core import get_reader_for
                reader = get_reader_for(str(p))(str(p))
                u = mda.Universe.empty(reader.n_atoms, trajectory=False)
                u.trajectory = reader
    except ColloidcgError:
        raise
    except Exception as exc:  # MDAnalysis raises many types for unreadable input
        raise ColloidcgError(f"{p}: MDAnalysis cannot read it ({exc.__class__.__name__}: "
                             f"{' '.join(str(exc).split())[:160]})") from None
    if units is not None and units != "mdanalysis":
        raise ColloidcgError(f"{p}: mixed units: MDAnalysis reports Angstrom and ps for this format, "
                             f"but --units says {units!r} (leave --units out)")
    pos, vel, times, boxes = [], [], [], []
    has_vel = None
    try:
        for ts in u.trajectory[sl]:
            dims = ts.dimensions
            if dims is None or np.any(np.asarray(dims[:3]) <= 0):
                if box is None:
                    raise ColloidcgError(f"{p}: missing box: frame {ts.frame} has no unit cell; pass --box")
                b = np.asarray(box, float)
            else:
                if np.any(np.abs(np.asarray(dims[3:], float) - 90.0) > 1e-3):
                    raise ColloidcgError(f"{p}: triclinic box (angles {np.round(dims[3:], 3).tolist()}) at frame "
                                         f"{ts.frame}; colloidcg reads orthogonal boxes only")
                b = np.asarray(dims[:3], float)
                if box is not None:
                    raise ColloidcgError(f"{p}: the file has a box ({b.tolist()}); leave --box out")
            boxes.append(b)
            pos.append(np.array(ts.positions, float))
            if has_vel is None:
                has_vel = bool(ts.has_velocities)
            if has_vel:
                vel.append(np.array(ts.velocities, float))
            times.append(float(ts.time))
    except ColloidcgError:
        raise
    except Exception as exc:
        raise ColloidcgError(f"{p}: truncated or damaged after {len(pos)} frames ({exc.__class__.__name__}: "
                             f"{' '.join(str(exc).split())[:160]})") from None
    if not pos:
        raise ColloidcgError(f"{p}: no frames (after start/stop/stride)")
    boxes = np.array(boxes)
    d = boxes.shape[1]
    if np.ptp(boxes, axis=0).max() > 1e-6 * boxes.max():
        raise ColloidcgError(f"{p}: the box changes in time; colloidcg needs a fixed box")
    bx = boxes[0]
    posa = np.mod(np.stack(pos)[..., :d], bx)
    times = np.asarray(times)
    _check_times(p, times)
    atoms = u.atoms
    def attr(name):
        try:
            return np.asarray(getattr(atoms, name))
        except Exception:   # noqa: BLE001  (an absent topology attribute)
            return None
    types = attr("types") if topology is not None else None
    mol = attr("resids") if topology is not None else None
    mass = attr("masses") if topology is not None else None
    ids = attr("ids") if topology is not None else None
    if ids is None:
        ids = np.arange(1, len(atoms) + 1)
    notes = []
    if mass is not None and not np.all(np.asarray(mass, float) > 0):
        mass = None     # MDAnalysis guesses 0 for types it does not know (PDB has no masses)
        notes.append("the topology gives no (or zero) masses: equal masses assumed")
    unit_rec = {"style": "mdanalysis", "length": "Angstrom", "time": "ps", "source": "MDAnalysis"}
    return MDTrajectory(str(p), f"mdanalysis:{type(u.trajectory).__name__}", posa, bx, times, False,
                        np.asarray(ids, np.int64), np.stack(vel)[..., :d] if has_vel else None,
                        None if types is None else np.array([str(t) for t in types]), mol, mass, None,
                        unit_rec, (True,) * d, notes)
