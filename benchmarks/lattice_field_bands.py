"""Does the crystal's fitted displacement field keep the crystal's local order?

The seams of a tiled crystal film are healed by redrawing bands of sites from a field fitted
to the film (colloidcg.scaling.lattice_field). This checks the field on frames that have no
seam: a periodic soft-disk crystal (2304 disks, area fraction 0.85, the synthetic dynamics
of benchmarks/upsample_crystal.py) is run for ``2 * --frames`` frames 25 apart; the field is
fitted on the first half as open views (the box's edge sites left out, as a film's), and in
each frame of the second half, ``--heals`` times, bands of 2 lattice spacings about three
lines across a random axis are redrawn (the rest held, ``--sweeps`` sweeps). A field that is the
crystal's own leaves each site's |psi6| (over the neighbours within 1.25 diameters, as the
seam check measures it) unchanged on average; printed: healed minus before, by distance
to the band's centre line, mean and standard error over heals, and the first-shell bond
lengths' mean and rms against the data's.

    python benchmarks/lattice_field_bands.py                       # the default field (upsample's)
    python benchmarks/lattice_field_bands.py --order               # with the local-order weight
    python benchmarks/lattice_field_bands.py --splice --sweeps 400 # seams between two frames, as a film's
    python benchmarks/lattice_field_bands.py --calibration-seed 1  # another calibration draw
    python benchmarks/lattice_field_bands.py --film --sweeps 400   # bands inside a film's own frames
    python benchmarks/lattice_field_bands.py --windows [--truth lammps]  # the film's windows, untouched
    python benchmarks/lattice_field_bands.py --windows --film-seeds 1,3,4,5,6,7  # ... over independent runs
    python benchmarks/lattice_field_bands.py --defects             # band lines split: defect near or not
    python benchmarks/lattice_field_bands.py --pair [--film]       # a pair interaction on the bonds alone
    python benchmarks/lattice_field_bands.py --true-pair           # ... with the soft disks' own potential
    python benchmarks/lattice_field_bands.py --dim 3 [--truth lammps] [--pair | --true-pair]  # 3D fcc crystals

``--dim 3``: the periodic fcc crystal of ``benchmarks/upsample_crystal.py --dim 3`` (2048 soft
spheres at volume fraction 0.70; ``--truth lammps``: LAMMPS's WCA crystal at 1.1 sigma^-3,
whose sites are LAMMPS's own fcc lattice), bands normal to a random one of the three axes,
q6 (over the 12 nearest neighbours) in place of |psi6|; ``--true-pair`` then takes the soft
spheres' harmonic contacts or WCA's potential at T = 1.

``--film``: the data is the 2D crystal film of ``benchmarks/upsample_crystal.py --film`` (an
open view turned 0.3 rad inside the periodic crystal, 60 frames 5 apart), turned and given
ideal sites as ``upsample`` does (its ``_crystal_film``); the field is fitted on every third
frame and, in the frames after each of those, two bands per axis per ``--heals`` are redrawn
inside the view (3 spacings from its edges); |psi6| over first-shell lattice bonds.

``--defects``: each band line also reported apart by whether the frame has a defect (a
particle whose Voronoi cell is not six-sided) within the band or 40 px beyond it. ``--pair``:
the field without its Gaussian part, a pair interaction on the first-shell bonds fitted by
pseudo-likelihood and inversion (``lattice_field.fit_field(gaussian=False)``);
``--true-pair``: the same family with the synthetic soft disks' own pair potential, eps / 2
(1 - r / d)^2 over kT, in place of a fit (the periodic crystal only).

``--windows``: no field at all. The same film's windows as ``upsample`` cuts them (in
registry, by lattice site), before any tiling: each particle's |psi6| in its source frame
(neighbours within 20 px in the whole view) by distance to the window's nearest face, minus
the window's interior (> 60 px), mean and standard error over windows. A tiled film's seam
profile (band minus bulk) carries this too. ``--truth lammps``: the LAMMPS film of
``benchmarks/upsample_crystal.py --film --truth lammps``.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

EDGES = (0.0, 8.0, 16.0, 24.0, 33.0)         # px from the band's centre line
R_BOND = 1.25 * 16.0                          # the seam check's neighbour range, px
DEFECT_CLEAR = 40.0                           # --defects: px beyond the band a defect-free line keeps clear


def crystal_frames(frames: int, seed: int = 0, phi: float | None = None, dim: int = 2, truth: str = "numpy"):
    """(positions (F, N, d) px wrapped, ideal sites (N, d) px, box (d,) px): the periodic
    crystal of benchmarks/upsample_crystal.py, equilibrated, then ``frames`` frames. 2D: 4 x 4
    copies of 12 x 12 soft disks at area fraction 0.85, 200 frames, then 25 apart; 3D: the
    fcc crystal of 8^3 cubic cells (2048 soft spheres at volume fraction 0.70), the same
    times; ``truth`` "lammps": LAMMPS's WCA crystal of the same size (number density 1.05
    in 2D, 1.1 in 3D; 10000 steps, then 2500 apart), its ideal sites LAMMPS's lattice."""
    from upsample_crystal import PHI, lammps_crystal, lattice, run
    cols = list("xyz"[:dim])
    if truth == "lammps":
        density = 1.05 if dim == 2 else 1.1
        tracks, box = lammps_crystal(dim, 48 if dim == 2 else 8, density, frames, 2500, 10000, seed)
        first = tracks[tracks["frame"] == tracks["frame"].min()].sort_values("particle")[cols].to_numpy()
        pos = lammps_sites(first, dim, density)
    else:
        pos, box = lattice(dim, 12 if dim == 2 else 8, PHI[dim] if phi is None else phi)
        if dim == 2:
            shifts = np.array([(i, j) for i in range(4) for j in range(4)], float) * box
            pos, box = (pos[None] + shifts[:, None]).reshape(-1, 2), box * 4
        tracks = run(dim, pos, box, 200, frames, 25, seed)
    out = np.stack([np.mod(g.sort_values("particle")[cols].to_numpy(), box) for _, g in tracks.groupby("frame")])
    return out, pos, box


def lammps_sites(pos: np.ndarray, dim: int, density: float) -> np.ndarray:
    """Ideal sites (N, d) px of LAMMPS's ``hex`` (2D) or ``fcc`` (3D) lattice at number
    ``density`` (sigma^-d), origin 0, nearest to ``pos`` (N, d) px (unwrapped positions of a
    crystal started on that lattice: each within a quarter spacing of its site)."""
    from upsample_crystal import SCALE
    if dim == 2:
        a = math.sqrt(2 / (math.sqrt(3) * density)) * SCALE
        h = a * math.sqrt(3) / 2
        row = np.round(pos[:, 1] / h)
        shift = 0.5 * np.mod(row, 2)
        return np.column_stack([(np.round(pos[:, 0] / a - shift) + shift) * a, row * h])
    half = 0.5 * (4 / density) ** (1 / 3) * SCALE           # fcc: the half-cell grid's even points
    k = np.round(pos / half)
    odd = np.mod(k.sum(1), 2) == 1
    # an odd point is not a site: move the coordinate furthest from its rounding
    frac = pos[odd] / half - k[odd]
    j = np.argmax(np.abs(frac), axis=1)
    k[np.flatnonzero(odd), j] += np.sign(frac[np.arange(len(j)), j])
    return k * half


def registered(p: np.ndarray, sites: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions moved by the frame's mean displacement so each sits by its own site."""
    u = p - sites
    u -= box * np.round(u / box)
    return sites + u - u.mean(0)


def site_psi6(p: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) each particle's bond order as the seam check measures it: |psi6| over the
    neighbours within R_BOND in 2D, q6 over the 12 nearest in 3D."""
    from colloidcg.scaling.seams import local_measures
    return local_measures(p, box, R_BOND)["psi6" if p.shape[1] == 2 else "q6"]


def defects(p: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) bool: particles whose Voronoi cell (periodic ``box``, px) has other than six
    sides, the disclinations of a triangular crystal (5-7 pairs, vacancies, interstitials)."""
    import freud
    v = freud.locality.Voronoi()
    v.compute((freud.box.Box(float(box[0]), float(box[1]), is2D=True),
               np.column_stack([p - box / 2, np.zeros(len(p))])))
    return np.bincount(v.nlist.query_point_indices, minlength=len(p)) != 6


def film_bands(args) -> None:
    """The ``--film`` check (module docstring)."""
    from colloidcg.scaling import lattice_field as lf
    from colloidcg.scaling.stacking import lattice_site, site_of

    t0 = time.perf_counter()
    turned, info = film_source(args.truth)
    a, h = info["lattice_px"][0], info["lattice_px"][1] / 2
    frames = []
    for q in turned.pos:
        o = site_of(q, a, h)
        frames.append((q, o + lattice_site(q - o, a, h)))
    field = lf.fit_field(frames[0::3], a, rng=np.random.default_rng(args.cal_seed), bond_weights=not args.no_bonds,
                         order_weight=args.order and not args.no_bonds, gaussian=not args.pair)
    print(f"film: {len(frames)} frames of about {len(frames[0][0])} disks, a = {a:.2f} px; field fitted on "
          f"{len(frames[0::3])} in {time.perf_counter() - t0:.0f} s: {field.as_dict()}")
    chol = lf._cholesky(field)
    rng = np.random.default_rng(1000 + args.cal_seed)
    diffs, bonds_before, bonds_after = [], [], []
    t1 = time.perf_counter()
    for k, (q, s) in enumerate(frames):
        if k % 3 == 0:
            continue
        g, sig = lf.graph(s, a)
        g.cls = lf._classify(g, sig, field.signatures)
        u0 = q - s
        u0 = u0 - u0.mean(0)
        inner = np.flatnonzero(g.cls >= 0)
        for _ in range(args.heals):
            for axis in range(2):
                dist = np.abs(s[:, axis] - rng.uniform(s[inner, axis].min() + 3 * a, s[inner, axis].max() - 3 * a))
                band = inner[dist[inner] < lf.BAND_SPACINGS * a]
                u = u0.copy()
                groups = lf.colour_groups(g, band, field.ordered)
                for _ in range(args.sweeps):
                    lf._sweep(u, g, groups, field, chol, rng)
                change = lf._band_psi6(g, band, u) - lf._band_psi6(g, band, u0)
                b = np.digitize(dist[band], EDGES) - 1
                diffs.append([change[b == i].mean() if np.any(b == i) else np.nan for i in range(len(EDGES) - 1)])
                first = g.nb1[band] >= 0
                bonds_after.append(lf._bond_lengths(u, g, band, u[band])[first])
                bonds_before.append(lf._bond_lengths(u0, g, band, u0[band])[first])
    report(np.array(diffs), f"{len(diffs)} bands of film frames, {args.sweeps} sweeps, in "
                            f"{time.perf_counter() - t1:.0f} s")
    print(f"first-shell bonds in the bands: {tail(np.concatenate(bonds_after), np.concatenate(bonds_before))}")


def film_source(truth: str, view_seed: int = 1):
    """The 2D film of ``benchmarks/upsample_crystal.py --film [--truth lammps]`` (the view of
    the run with seed ``view_seed``) turned and windowed as ``upsample`` does: (upsample's
    turned source, its crystal_film dict)."""
    from upsample_crystal import film_view, lattice, lammps_crystal, run
    um = importlib.import_module("colloidcg.scaling.upsample")
    if truth == "lammps":
        seen, box = lammps_crystal(2, 48, 1.05, 60, 250, 10000, seed=view_seed)
        seen = seen.assign(x=np.mod(seen["x"], box[0]), y=np.mod(seen["y"], box[1]))
    else:
        pos, box = lattice(2, 12, 0.85)
        shifts = np.array([(i, j) for i in range(4) for j in range(4)], float) * box
        pos, box = (pos[None] + shifts[:, None]).reshape(-1, 2), box * 4
        seen = run(2, pos, box, 200, 60, 5, seed=view_seed)
    src = um._source(film_view(seen, box, 2), {}, {"calibration": {}}, None, None, 24.0, 2, "view")
    return um._crystal_film(src, 24.0, field=False)


def window_profile(truth: str, view_seed: int = 1, say=print) -> dict:
    """The ``--windows`` check (module docstring), and the film's defects: particles more
    than 40 px inside the view (its convex hull) whose Delaunay neighbours are not six,
    and the |psi6| of particles within 40 px of one against the rest. Returns the run's
    profiles over all particles, {"psi6", "density"}: (bins,) means over windows of the bin
    minus the window's interior (density: neighbours within R_BOND)."""
    from scipy.spatial import ConvexHull, Delaunay, cKDTree

    from colloidcg.neighbours import pairs
    from colloidcg.structure.order import psi_k

    turned, info = film_source(truth, view_seed)
    first, count, step, _, member = turned.registered
    side = turned.window
    edges = np.array([0.0, 8.0, 16.0, 32.0, 48.0, 60.0])
    rows, deep_rows, clean_rows, count_rows, site_rows = [], [], [], [], []
    from colloidcg.scaling.stacking import lattice_site
    a, h = info["lattice_px"][0], info["lattice_px"][1] / 2
    site = -np.array([0.25 * a, 0.5 * h])            # a lattice site in window coordinates (upsample's)
    n_defect, n_inner, near, far = 0, 0, [], []
    for t, p in enumerate(turned.pos):
        pr = pairs(p, R_BOND, None)
        src, dst = np.concatenate([pr[:, 0], pr[:, 1]]), np.concatenate([pr[:, 1], pr[:, 0]])
        psi = np.abs(psi_k(p, src, dst, len(p), 6))
        nbrs = np.bincount(src, minlength=len(p)).astype(float)
        hull = ConvexHull(p)
        inside = np.min(-(p @ hull.equations[:, :2].T + hull.equations[:, 2]), axis=1)     # px to the hull
        ind, _ = Delaunay(p).vertex_neighbor_vertices
        defect = (inside > 20.0) & (np.diff(ind) != 6)
        inner = inside > 40.0
        n_defect += int(np.sum(defect & inner))
        n_inner += int(np.sum(inner))
        gap = cKDTree(p[defect]).query(p)[0] if np.any(defect) else np.full(len(p), np.inf)
        near.append(psi[inner & (gap <= 40.0)])
        far.append(psi[inner & (gap > 40.0)])
        for corner in np.ndindex(*count[t]):
            q = p - (first[t] + np.array(corner) * step)
            around = np.all((q > -0.5 * side) & (q < 1.5 * side), axis=1)
            keep = np.flatnonzero(around)[member(q[around])]
            qq = np.clip(q[keep], 0.0, side)
            d = np.min(np.minimum(qq, side - qq), axis=1)
            b = np.digitize(d, edges) - 1
            inner_count = nbrs[keep][d > edges[-1]].mean()
            count_rows.append([nbrs[keep][b == k].mean() - inner_count if np.any(b == k) else np.nan
                               for k in range(len(edges) - 1)])
            # by lattice site: each particle at its site's distance to the nearest face
            at = lattice_site(q[keep] - site, a, h) + site
            ds = np.min(np.minimum(at, side - at), axis=1)
            bs = np.digitize(ds, edges) - 1
            core = ds > edges[-1]
            site_rows.append([[v[keep][bs == k].mean() - v[keep][core].mean() if np.any(bs == k) else np.nan
                               for k in range(len(edges) - 1)] for v in (psi, nbrs)])
            for store, ok in ((rows, np.ones(len(keep), bool)), (deep_rows, inside[keep] > 24.0),
                              (clean_rows, gap[keep] > 40.0)):
                interior = psi[keep][(d > edges[-1]) & ok].mean()
                store.append([psi[keep][(b == k) & ok].mean() - interior if np.any((b == k) & ok) else np.nan
                              for k in range(len(edges) - 1)])
    bins = ", ".join(f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:]))
    for r, what in ((np.array(rows), ""), (np.array(deep_rows), " (particles more than 24 px inside the view)"),
                    (np.array(clean_rows), " (particles more than 40 px from a defect)")):
        m, se = np.nanmean(r, 0), np.nanstd(r, 0, ddof=1) / np.sqrt(np.sum(np.isfinite(r), 0))
        say(f"{truth} film, {len(r)} windows of {np.round(side).tolist()} px: |psi6| in the source frames by "
            f"distance to the window's nearest face ({bins} px) minus the interior{what}: "
            + ", ".join(f"{x:+.4f} +- {e:.4f}" for x, e in zip(m, se)))
    c = np.array(count_rows)
    say(f"{truth} film: neighbours within {R_BOND:g} px, the same way: "
        + ", ".join(f"{x:+.4f} +- {e:.4f}" for x, e in zip(np.nanmean(c, 0), np.nanstd(c, 0, ddof=1)
                                                          / np.sqrt(np.sum(np.isfinite(c), 0)))))
    near, far = np.concatenate(near), np.concatenate(far)
    near_mean = near.mean() if len(near) else float("nan")          # a film without defects (LAMMPS)
    say(f"defects (Delaunay neighbours not 6, > 40 px inside the view): {n_defect / n_inner:.4f} of the particles, "
        f"{n_defect / len(turned.pos):.1f} per frame; |psi6| within 40 px of one {near_mean:.4f} "
        f"({len(near) / (len(near) + len(far)):.3f} of the particles), beyond {far.mean():.4f}, "
        f"all {np.concatenate([near, far]).mean():.4f}")
    by_site = np.nanmean(np.array(site_rows), 0)
    return {"psi6": np.nanmean(np.array(rows), 0), "density": np.nanmean(c, 0),
            "psi6 by site": by_site[0], "density by site": by_site[1]}


def windows_across_runs(truth: str, seeds: list) -> None:
    """``--windows --film-seeds``: the windows' own profile (:func:`window_profile`) over
    the films of independent runs, mean and standard error over runs (the same bins and
    the same runs as ``benchmarks/upsample_crystal.py --film --film-seeds``)."""
    runs = [window_profile(truth, v, say=lambda *a: None) for v in seeds]
    for name in ("psi6", "density", "psi6 by site", "density by site"):
        per = np.array([r[name] for r in runs])
        m, se = per.mean(0), per.std(0, ddof=1) / np.sqrt(len(per))
        print(f"{truth} films, {len(runs)} runs (view seeds {', '.join(map(str, seeds))}): {name} in the source "
              "frames by distance to the window's nearest face (0-8, 8-16, 16-32, 32-48, 48-60 px) minus the "
              "interior, over runs: " + ", ".join(f"{x:+.4f} ({x / e:+.1f} SE)" for x, e in zip(m, se)))


def report(d: np.ndarray, head: str, name: str = "|psi6|") -> None:
    """Print healed minus before per distance bin: mean and standard error over heals."""
    m = np.nanmean(d, 0)
    se = np.nanstd(d, 0, ddof=1) / np.sqrt(np.sum(np.isfinite(d), 0))
    bins = ", ".join(f"{lo:g}-{hi:g}" for lo, hi in zip(EDGES, EDGES[1:]))
    print(head)
    print(f"{name} healed minus before, by distance to the band's centre ({bins} px): "
          + ", ".join(f"{x:+.4f} +- {e:.4f}" for x, e in zip(m, se)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20, help="frames to fit on (and as many to heal)")
    ap.add_argument("--heals", type=int, default=10, help="heals of each healed frame")
    ap.add_argument("--sweeps", type=int, default=100)
    ap.add_argument("--calibration-seed", type=int, default=0, dest="cal_seed")
    ap.add_argument("--order", action="store_true",
                    help="with the local-order weight (lattice_field.calibrate_order; not upsample's default)")
    ap.add_argument("--pair", action="store_true",
                    help="a pair interaction on the bonds alone, fitted (lattice_field.fit_field(gaussian=False))")
    ap.add_argument("--true-pair", action="store_true", dest="true_pair",
                    help="the bonds alone with the soft disks' own pair potential (periodic crystal only)")
    ap.add_argument("--no-bonds", action="store_true", help="the Gaussian field alone")
    ap.add_argument("--splice", action="store_true",
                    help="seams: two lines per heal, the strips between them from two frames (as a tiled "
                         "film's windows meet); each site compared with its own frame")
    ap.add_argument("--defects", action="store_true",
                    help="also split the band lines by whether the data has a defect (Voronoi cell not "
                         "six-sided) within the band or 40 px of it")
    ap.add_argument("--film", action="store_true", help="bands inside the frames of a crystal film (docstring)")
    ap.add_argument("--windows", action="store_true", help="the film's windows' own |psi6| profile (docstring)")
    ap.add_argument("--truth", choices=("numpy", "lammps"), default="numpy",
                    help="the crystal: the synthetic soft disks (spheres) or LAMMPS's WCA crystal")
    ap.add_argument("--dim", type=int, choices=(2, 3), default=2,
                    help="the periodic crystal: 2D disks or 3D fcc spheres (3D: not --film, --windows, "
                         "--defects, --order)")
    ap.add_argument("--film-seeds", default="1", dest="film_seeds",
                    help="--windows: seeds of the runs the view films, comma-separated; with several, the "
                         "profile's mean and standard error over runs")
    args = ap.parse_args(argv)
    if args.dim == 3 and (args.film or args.windows or args.defects or args.order):
        raise SystemExit("--dim 3: the periodic crystal only (no --film, --windows, --defects or --order)")
    if args.windows:
        seeds = [int(x) for x in args.film_seeds.split(",")]
        if len(seeds) > 1:
            windows_across_runs(args.truth, seeds)
        else:
            window_profile(args.truth, seeds[0])
        return 0
    if args.film:
        film_bands(args)
        return 0

    from colloidcg.scaling import lattice_field as lf

    t0 = time.perf_counter()
    frames, sites, box = crystal_frames(2 * args.frames, dim=args.dim, truth=args.truth)
    a = float(np.min(np.linalg.norm(sites[1:] - sites[0], axis=1)))
    fit = [(registered(p, sites, box), sites) for p in frames[:args.frames]]
    t1 = time.perf_counter()
    field = lf.fit_field(fit, a, rng=np.random.default_rng(args.cal_seed),
                         bond_weights=not (args.no_bonds or args.true_pair), order_weight=args.order and not args.no_bonds,
                         gaussian=not args.pair)
    if args.true_pair:
        from upsample_crystal import DIAM, KT, SCALE
        field.bond_edges = np.linspace(0.5 * DIAM, 2.0 * DIAM, 1201)
        r = 0.5 * (field.bond_edges[1:] + field.bond_edges[:-1])
        if args.truth == "lammps":
            # WCA at T = 1: 4 (s^-12 - s^-6) + 1 for s = r / sigma < 2^(1/6)
            x = r / SCALE
            field.bond_log_weight = -np.where(x < 2 ** (1 / 6), 4 * (x ** -12 - x ** -6) + 1, 0.0)
        else:
            # the synthetic dynamics' harmonic contacts: energy eps / 2 (1 - r / d)^2, eps = 1
            field.bond_log_weight = -0.5 * np.clip(1.0 - r / DIAM, 0.0, None) ** 2 / KT
        field.gaussian = False
    print(f"crystal {len(sites)} {'disks' if args.dim == 2 else 'spheres'}, a = {a:.2f} px, {2 * args.frames} "
          f"frames simulated in {t1 - t0:.0f} s; "
          f"field fitted in {time.perf_counter() - t1:.0f} s: {field.as_dict()}")
    rng = np.random.default_rng(1000 + args.cal_seed)
    diffs = []             # per heal: (bins,) healed minus before
    by_line = {True: [], False: []}   # --defects: per line, keyed by "no defect near it"
    bonds_before, bonds_after = [], []
    t2 = time.perf_counter()
    healed = frames[args.frames:]
    g, _ = lf.graph(sites, a, box)
    for f, p in enumerate(healed):
        p = registered(p, sites, box)
        before = site_psi6(p, box)
        bad = defects(p, box) if args.defects else None
        if args.splice:
            other = registered(healed[(f + 1) % len(healed)], sites, box)
            before_other = site_psi6(other, box)
            bad_other = defects(other, box) if args.defects else None
        for _ in range(args.heals):
            axis = int(rng.integers(args.dim))
            n_lines = 2 if args.splice else 3
            lines = np.mod(rng.uniform(0, box[axis]) + np.arange(n_lines) * box[axis] / n_lines, box[axis])
            dist = np.mod(np.abs(sites[:, axis][:, None] - lines[None]), box[axis])
            dist = np.min(np.minimum(dist, box[axis] - dist), axis=1)
            band = dist < lf.BAND_SPACINGS * a
            start, ref, ref_bad = p, before, bad
            if args.splice:
                # the strip between the lines (going up from the first) from the other frame
                strip = np.mod(sites[:, axis] - lines[0], box[axis]) < box[axis] / 2
                start = np.where(strip[:, None], other, p)
                ref = np.where(strip, before_other, before)
                ref_bad = np.where(strip, bad_other, bad) if args.defects else None
            new, _ = lf.heal(start, sites, box, field, band, rng, sweeps=args.sweeps)
            after = site_psi6(new, box)
            k = np.digitize(dist, EDGES) - 1
            # a bin of 8 px can hold no row of sites (rows 14.3 px apart across y): NaN
            diffs.append([np.mean((after - ref)[k == b]) if np.any(k == b) else np.nan
                          for b in range(len(EDGES) - 1)])
            if args.defects:
                for line in lines:
                    d1 = np.abs(sites[:, axis] - line)
                    d1 = np.minimum(d1, box[axis] - d1)
                    k1 = np.digitize(d1, EDGES) - 1
                    clean = not np.any(ref_bad & (d1 < EDGES[-1] + DEFECT_CLEAR))
                    by_line[clean].append([np.mean((after - ref)[k1 == b]) if np.any(k1 == b) else np.nan
                                           for b in range(len(EDGES) - 1)])
            inner = band & (g.cls >= 0)
            for q, store in ((p, bonds_before), (new, bonds_after)):     # data: the unspliced frame
                u = q - sites
                u -= box * np.round(u / box)
                rows = np.flatnonzero(inner)
                r = lf._bond_lengths(u, g, rows, u[rows])[g.nb1[rows] >= 0]
                store.append(r)
    report(np.array(diffs), f"{len(diffs)} heals of {2 if args.splice else 3} bands, {args.sweeps} sweeps, in "
                            f"{time.perf_counter() - t2:.0f} s", "|psi6|" if args.dim == 2 else "q6")
    if args.defects:
        for clean, rows in by_line.items():
            if rows:
                report(np.array(rows), f"{len(rows)} band lines {'with no' if clean else 'with a'} defect within "
                                       f"{EDGES[-1] + DEFECT_CLEAR:g} px")
    rb, ra = np.concatenate(bonds_before), np.concatenate(bonds_after)
    print(f"first-shell bonds in the bands: mean {ra.mean():.3f} px (data {rb.mean():.3f}), "
          f"rms about a {np.sqrt(np.mean((ra - a) ** 2)):.3f} (data {np.sqrt(np.mean((rb - a) ** 2)):.3f}); "
          f"{tail(ra, rb)}")
    return 0


def tail(healed: np.ndarray, data: np.ndarray) -> str:
    """The share of first-shell bonds longer than the seam check's neighbour range (a
    neighbour lost to its count), healed against the data, with the healed share's
    binomial standard error."""
    f1, f0 = np.mean(healed > R_BOND), np.mean(data > R_BOND)
    return (f"beyond {R_BOND:g} px {f1:.4f} +- {np.sqrt(f1 * (1 - f1) / len(healed)):.4f} (data {f0:.4f}); "
            f"longest {healed.max():.2f} px (data {data.max():.2f})")


if __name__ == "__main__":
    raise SystemExit(main())
