"""Roll out an exported colloidcg model with torch alone (copied into every bundle as rollout.py).

    python rollout.py --init INIT.csv --steps N --seed S -o OUT.csv [--frame F] [--substeps K]
                      [--halo H] [--pixels] [--device cpu|cuda] [--shear-offset DELTA]

INIT.csv holds the tracks schema: frame, particle, x, y [, z] [, size] (other columns, such
as vx, vy, are ignored), in the bundle's units (positions um; ``--pixels``: px with the
bundle's calibration). The rollout starts at frame F (default: the second frame of the
file); as in colloidcg, the starting velocities are the finite differences from the frame
before (frame-averaged velocities, what the model was trained on), zero for particles the
frame before lacks. Without a periodic box (bundle calibration box_px),
particles within H (default: the cutoff) of the starting frame's field-of-view border are
boundary particles (the border: the extent of all positions in the camera's frame of
reference, moved by the starting frame's drift; the drift is x - x_image where the file has
image positions, as colloidcg's tracker writes them with --subtract-drift, else a running
median of the frames' centres): prescribed from the file's later frames,
held at their last position once the file has no more, and left out of OUT.csv, as
``colloidcg simulate`` does; ``--halo 0`` for none. OUT.csv: frame, particle, x, y [, z],
vx, vy [, vz] in the same units, recorded velocities being displacement / dt (what finite
differences of positions give) for frame-averaged models.

A model trained in a sheared periodic box (bundle calibration ``lees_edwards``: flow along
x, gradient along y, its ``shear_rate``) rolls out under the same steady shear in a
Lees-Edwards box: the positions of INIT.csv are then unwrapped in the infinite sheared
system (as LAMMPS's xu, yu with an xy tilt give them), ``--shear-offset`` is the shift along
x of the image across +y at the starting frame (the LAMMPS xy tilt of that frame; um, or
px with ``--pixels``; default 0) and ``--shear-rate`` (1/s) replaces the bundle's rate.

With the same seed, this script and ``colloidcg simulate BUNDLE --init (the same rows) ...``
give the same trajectory: they run the same loop (driver.py, beside this file) over the
same compiled model. Only torch (and the standard library) is imported.
"""

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import driver  # noqa: E402  (the bundle's copy of colloidcg.core.driver)


def read_csv(path: Path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    need = ["frame", "particle", "x", "y"]
    missing = [c for c in need if c not in rows[0]]
    if missing:
        raise SystemExit(f"{path}: missing column(s) {', '.join(missing)}; expected frame, particle, x, y")
    return rows


def _median(values):
    v = sorted(values)
    h = len(v) // 2
    return v[h] if len(v) % 2 else 0.5 * (v[h - 1] + v[h])


#: as colloidcg.data.DRIFT_WINDOW
DRIFT_WINDOW = 9


def field_of_view(rows, names, frame, scale):
    """(lo, hi) (d,) of the field of view at ``frame`` as colloidcg.data.frame_fields_of_view
    gives it (share 0), in um: per axis, the extent of all positions in the camera's frame
    of reference, moved by that frame's drift. The drift is x - x_image (median per frame)
    where the file has image positions (x_image ...), else a running median over
    DRIFT_WINDOW frames (fewer, symmetrically, near the ends) of each frame's centre
    (mid-point of its extent), less its median."""
    frames = sorted({int(r["frame"]) for r in rows})
    lo, hi = [], []
    for n in names:
        img = n + "_image"
        try:
            im = [float(r[img]) for r in rows]
        except (KeyError, TypeError, ValueError):
            im = None
        x = [float(r[n]) for r in rows]
        per = {}
        if im is not None and all(math.isfinite(v) for v in im):
            for r, a, b in zip(rows, x, im):
                per.setdefault(int(r["frame"]), []).append(a - b)
            shift = {f: _median(v) for f, v in per.items()}
        else:
            for r, a in zip(rows, x):
                per.setdefault(int(r["frame"]), []).append(a)
            centre = [0.5 * (min(per[f]) + max(per[f])) for f in frames]
            n_f, half = len(frames), DRIFT_WINDOW // 2
            smooth = []
            for k in range(n_f):                 # the window shrinks symmetrically at the ends
                h = min(half, k, n_f - 1 - k)
                smooth.append(_median(centre[k - h: k + h + 1]))
            mid = _median(smooth)
            shift = {f: v - mid for f, v in zip(frames, smooth)}
        own = {}
        for r, a in zip(rows, x):
            f = int(r["frame"])
            own.setdefault(f, []).append(a - shift[f])
        lo.append((min(min(v) for v in own.values()) + shift[frame]) * scale)
        hi.append((max(max(v) for v in own.values()) + shift[frame]) * scale)
    return torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="tracks CSV to start from")
    p.add_argument("--steps", type=int, required=True, help="frames to simulate")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("-o", "--output", required=True, help="output CSV")
    p.add_argument("--frame", type=int, default=None, help="frame to start from (default: the second)")
    p.add_argument("--substeps", type=int, default=1, help="integration steps per frame (default 1)")
    p.add_argument("--halo", type=float, default=None, help="boundary width, um (default: the cutoff)")
    p.add_argument("--pixels", action="store_true", help="CSV positions in px, velocities in px/frame")
    p.add_argument("--device", default="cpu")
    p.add_argument("--shear-offset", type=float, default=0.0, dest="shear_offset",
                   help="sheared box: image offset along x at the starting frame (default 0)")
    p.add_argument("--shear-rate", type=float, default=None, dest="shear_rate",
                   help="sheared box: shear rate, 1/s (default: the bundle's, none for an unsheared model)")
    a = p.parse_args(argv)
    if a.steps < 1 or a.substeps < 1:
        raise SystemExit("--steps and --substeps must be >= 1")

    desc = json.loads((HERE / "bundle.json").read_text())
    made_with = str(desc.get("torch_version", ""))
    if made_with.split(".")[:2] != torch.__version__.split("+")[0].split(".")[:2]:
        print(f"note: the bundle was compiled with torch {made_with}, this is torch {torch.__version__}; "
              "TorchScript files usually load across versions, but results may differ at the rounding level",
              file=sys.stderr)
    cal = desc.get("calibration") or {}
    arch = desc["architecture"]
    dtype = getattr(torch, desc.get("dtype", "float64"))
    um = float(cal.get("um_per_px") or 1.0)
    fps = float(cal.get("fps") or 1.0)
    dt = 1.0 / fps
    d = int(arch["dim"])
    integrator = torch.jit.load(str(HERE / "torchscript" / "model.pt"), map_location=a.device)
    model = integrator.model
    box = None
    if cal.get("box_px"):
        box = torch.tensor([float(b) for b in cal["box_px"]], dtype=torch.float64) * um
    rate = a.shear_rate if a.shear_rate is not None else (cal.get("lees_edwards") or {}).get("shear_rate")
    le = None
    if rate is not None:
        if box is None:
            raise SystemExit("--shear-rate: a sheared box needs the bundle's periodic box (calibration box_px)")
        le = driver.LeesEdwards(float(rate), a.shear_offset * (um if a.pixels else 1.0))

    rows = read_csv(Path(a.init))
    names = ["x", "y", "z"][:d]
    scale_r = um if a.pixels else 1.0                 # to um
    scale_v = um * fps if a.pixels else 1.0           # to um/s
    frames = sorted({int(r["frame"]) for r in rows})
    parts = sorted({int(r["particle"]) for r in rows})
    col = {pid: k for k, pid in enumerate(parts)}
    T, N = frames[-1] - frames[0] + 1, len(parts)
    pos = torch.zeros(T, N, d, dtype=torch.float64)
    present = torch.zeros(T, N, dtype=torch.bool)
    size_col = arch.get("size_column") or ""
    size = torch.full((N,), float("nan"), dtype=torch.float64) if float(arch.get("size_scale") or 0) > 0 else None
    sizes = {}
    for r in rows:
        t, k = int(r["frame"]) - frames[0], col[int(r["particle"])]
        pos[t, k] = torch.tensor([float(r[n]) for n in names], dtype=torch.float64) * scale_r
        present[t, k] = True
        if size is not None:
            if size_col not in r:
                raise SystemExit(f"{a.init}: the model was trained with per-particle sizes; expected a "
                                 f"{size_col!r} column")
            sizes.setdefault(k, []).append(float(r[size_col]))
    if size is not None:
        for k, vals in sizes.items():        # per-particle median, as colloidcg reads sizes
            vals.sort()
            h = len(vals) // 2
            size[k] = vals[h] if len(vals) % 2 else 0.5 * (vals[h - 1] + vals[h])
    f = frames[0] + 1 if a.frame is None else a.frame
    t = f - frames[0]
    if not (0 <= t < T):
        raise SystemExit(f"--frame: {f} is not in {a.init} (frames {frames[0]}..{frames[-1]})")
    idx = torch.nonzero(present[t]).squeeze(-1)
    r0 = pos[t, idx]
    v0 = torch.zeros_like(r0)
    if t > 0:
        disp = pos[t, idx] - pos[t - 1, idx]
        if box is not None:
            disp = driver.minimum_image(disp, box)
        v0 = torch.where(present[t - 1, idx].unsqueeze(-1), disp / dt, v0)

    cutoff = float(arch["cutoff"])
    halo = cutoff if a.halo is None else a.halo
    boundary = None
    prescribed = None                    # k -> (r, v, S) of the boundary particles
    if box is None and halo > 0:
        lo, hi = field_of_view(rows, names, frames[0] + t, scale_r)
        boundary = ((r0 < lo + halo) | (r0 > hi - halo)).any(-1)
        if not bool(boundary.any()):
            boundary = None
        elif bool(boundary.all()):
            raise SystemExit(f"every particle of frame {f} lies within the halo ({halo:g} um) of the border")
    dev = torch.device(a.device)
    cast = dict(dtype=dtype, device=dev)
    r0, v0 = r0.to(**cast), v0.to(**cast)
    bx = None if box is None else box.to(**cast)
    sz = None if size is None else size[idx].to(**cast)
    sh0 = None if le is None else le.state(0.0, bx)
    with torch.no_grad():
        pairs0 = model.pairs(driver.wrap(r0, bx, sh0), bx, sh0)
        S0 = model.encode(driver.wrap(r0, bx, sh0), pairs0, bx, sh0)
    if boundary is not None:
        last = min(T - 1, t + a.steps)
        pp = pos[t: last + 1, idx].clone()
        vv = torch.zeros_like(pp)
        seen = present[t: last + 1, idx]
        for k in range(1, pp.shape[0]):
            vv[k] = torch.where(seen[k].unsqueeze(-1) & present[t + k - 1, idx].unsqueeze(-1),
                                (pp[k] - pp[k - 1]) / dt, torch.zeros_like(vv[k]))
            gone = ~seen[k]
            pp[k, gone] = pp[k - 1, gone]
            vv[k, gone] = 0.0
        pp, vv = pp.to(**cast), vv.to(**cast)

        def from_file(k):
            if k < pp.shape[0]:
                return pp[k], vv[k], S0
            return pp[-1], torch.zeros_like(vv[-1]), S0
        prescribed = from_file
        boundary = boundary.to(dev)

    nl = driver.VerletList(cutoff, 0.3 * cutoff, bx,
                           search=lambda r, radius, b, sh=None: driver.search_pairs(r, radius, b, 1024, sh))
    # the compiled graph as written, op for op as colloidcg runs it (no graph rewriting)
    with torch.jit.optimized_execution(False):
        r_out, v_out, _, _ = driver.run(integrator, r0, v0, S0, a.steps, dt, neighbours=nl, size=sz, box=bx, seed=a.seed,
                                        boundary=boundary, prescribed=prescribed, substeps=a.substeps,
                                        lees_edwards=le)
    keep = torch.ones(idx.shape[0], dtype=torch.bool) if boundary is None else ~boundary.cpu()
    with open(a.output, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "particle"] + names + ["v" + n for n in names])
        for k in range(r_out.shape[0]):
            for j in torch.nonzero(keep).squeeze(-1).tolist():
                rr = (r_out[k, j].double().cpu() / scale_r).tolist()
                vk = (v_out[k, j].double().cpu() / scale_v).tolist()
                w.writerow([f + k, parts[int(idx[j])]] + [repr(x) for x in rr] + [repr(x) for x in vk])
    print(f"simulated {a.steps} frames of {int(keep.sum())} particles from frame {f}: {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
