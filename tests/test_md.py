"""MD trajectories in (colloidcg.md): LAMMPS dumps, GSD, MDAnalysis formats; coarse-graining;
LAMMPS-written files (skipped without LAMMPS); the CLI from a dump to a trained model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from colloidcg.cli import main
from colloidcg.errors import ColloidcgError
from colloidcg.md import coarse_grain, md_tracks, read_md_tracks, read_trajectory
from colloidcg.md.lammps import lammps_available

HAVE_LAMMPS, LAMMPS_WHY = lammps_available()
needs_lammps = pytest.mark.skipif(not HAVE_LAMMPS, reason=f"LAMMPS unavailable: {LAMMPS_WHY}")


def write_dump(path, frames, cols, box=((0, 10), (0, 10), (0, 10)), units=None, time=None, flags="pp pp pp",
               steps=None, header_extra=""):
    """frames: list of (N, len(cols)) arrays."""
    out = []
    for k, data in enumerate(frames):
        if units and k == 0:
            out += ["ITEM: UNITS", units]
        if time is not None:
            out += ["ITEM: TIME", f"{time * k}"]
        out += ["ITEM: TIMESTEP", str(steps[k] if steps else 100 * k), "ITEM: NUMBER OF ATOMS", str(len(data)),
                f"ITEM: BOX BOUNDS {flags}{header_extra}"]
        out += [" ".join(map(str, b)) for b in box]
        out.append("ITEM: ATOMS " + " ".join(cols))
        out += [" ".join(f"{v:.10g}" for v in row) for row in data]
    path.write_text("\n".join(out) + "\n")
    return path


def _two_molecules(T=6, L=10.0, lo=-5.0):
    """Two dimers: molecule 1 straddles the x boundary and drifts +0.5/frame in x
    (crossing it), molecule 2 sits still; masses 1 and 3. Returns frames (id mol type mass
    x y z ix iy iz vx vy vz) and the true unwrapped centres (T, 2, 3) measured from lo."""
    frames, com = [], []
    for t in range(T):
        # unwrapped positions measured from the box's lower corner
        a = np.array([[9.6 + 0.5 * t, 5.0, 5.0], [10.4 + 0.5 * t, 5.0, 5.0],
                      [2.0, 2.0, 2.0], [3.0, 2.0, 2.0]])
        m = np.array([1.0, 1.0, 1.0, 3.0])
        img = np.floor(a / L)
        w = a - img * L + lo
        v = np.array([[5.0, 0, 0], [5.0, 0, 0], [0, 1.0, 0], [0, -1.0 / 3, 0]])
        rows = np.c_[np.arange(1, 5), [1, 1, 2, 2], [1, 2, 1, 2], m, w, img, v]
        frames.append(rows[::-1])           # reverse: the reader sorts by id
        com.append([a[:2].mean(0), (a[2] + 3 * a[3]) / 4])
    return frames, np.array(com)


COLS = ["id", "mol", "type", "mass", "x", "y", "z", "ix", "iy", "iz", "vx", "vy", "vz"]
BOX = ((-5, 5), (-5, 5), (-5, 5))


def test_dump_image_flags_unwrap_and_molecule_centres(tmp_path):
    frames, com = _two_molecules()
    p = write_dump(tmp_path / "a.lammpstrj", frames, COLS, BOX, units="lj", time=0.1)
    tr = read_trajectory(p)
    assert tr.unwrapped and tr.dim == 3 and tr.n_atoms == 4 and tr.n_frames == 6
    assert np.allclose(tr.box, 10.0) and tr.units["length"] == "sigma" and tr.units["source"] == "file"
    assert np.allclose(tr.times, 0.1 * np.arange(6)) and np.isclose(tr.frame_dt, 0.1)
    assert list(tr.ids) == [1, 2, 3, 4] and list(tr.mol) == [1, 1, 2, 2]
    pos, vel, pids, extra, n = coarse_grain(tr, "molecule")
    assert list(pids) == [1, 2] and list(n) == [2, 2]
    assert np.allclose(pos, com)
    assert np.allclose(vel[:, 0], [5, 0, 0]) and np.allclose(vel[:, 1], 0)   # mass-weighted
    df, side = md_tracks(tr, "molecule")
    assert set(df.columns) >= {"frame", "particle", "x", "y", "z", "vx", "vy", "vz"}
    assert np.isclose(side["meta"]["fps"], 10.0) and side["meta"]["box_px"] == [10.0, 10.0, 10.0]
    assert side["meta"]["um_per_px"] == 1.0 and side["meta"]["length_unit"] == "sigma"
    # velocities in px/frame: 5 sigma/tau x 0.1 tau
    assert np.allclose(df.loc[df.particle == 1, "vx"], 0.5)


def test_dump_wrapped_without_images_unwrapped_by_minimum_image(tmp_path):
    frames, com = _two_molecules()
    cols = [c for c in COLS if c not in ("ix", "iy", "iz")]
    keep = [COLS.index(c) for c in cols]
    p = write_dump(tmp_path / "w.lammpstrj", [f[:, keep] for f in frames], cols, BOX, units="lj", time=0.1)
    tr = read_trajectory(p)
    assert not tr.unwrapped
    pos, *_ = coarse_grain(tr, "molecule")
    # the straddling dimer is made whole, and its centre followed across the boundary
    shift = np.round((pos[0] - com[0]) / 10.0) * 10.0
    assert np.allclose(pos, com + shift)


@pytest.mark.parametrize("kind", ["xu", "xs", "xsu"])
def test_dump_other_coordinate_columns(tmp_path, kind):
    frames, com = _two_molecules()
    out = []
    for f in frames:
        w = f[:, 4:7] + 5.0 + f[:, 7:10] * 10.0        # unwrapped from lo
        x = {"xu": w - 5.0, "xs": (f[:, 4:7] + 5.0) / 10.0, "xsu": w / 10.0}[kind]
        out.append(np.c_[f[:, :4], x])
    names = {"xu": ["xu", "yu", "zu"], "xs": ["xs", "ys", "zs"], "xsu": ["xsu", "ysu", "zsu"]}[kind]
    p = write_dump(tmp_path / "c.lammpstrj", out, COLS[:4] + names, BOX, units="lj", time=0.1)
    tr = read_trajectory(p)
    assert tr.unwrapped == (kind != "xs") and tr.vel is None
    pos, vel, *_ = coarse_grain(tr, "molecule")
    assert vel is None
    shift = np.round((pos[0] - com[0]) / 10.0) * 10.0
    assert np.allclose(pos, com + shift)


def test_dump_2d_and_type_map_and_mapping_file(tmp_path):
    frames, _ = _two_molecules()
    flat = [np.c_[f[:, :6], np.zeros(len(f)), f[:, 7:12], np.zeros(len(f))] for f in frames]
    p = write_dump(tmp_path / "d.lammpstrj", flat, COLS, BOX, units="lj", time=0.1)
    tr = read_trajectory(p)
    assert tr.dim == 2 and tr.box.shape == (2,) and any("2D" in n for n in tr.notes)
    df, side = md_tracks(tr, "type")
    assert df["particle"].nunique() == 4 and "z" not in df and {"mol", "type"} <= set(df.columns)
    (tmp_path / "map.csv").write_text("id,group\n1,7\n2,7\n4,9\n")
    df, side = read_md_tracks(p, str(tmp_path / "map.csv"))
    assert sorted(df["particle"].unique()) == [7, 9]
    df, _ = read_md_tracks(p, "none", types=["2"])
    assert sorted(df["particle"].unique()) == [2, 4]


def _err(tmp_path, name, **kw):
    with pytest.raises(ColloidcgError) as e:
        read_trajectory(tmp_path / name, **kw)
    msg = str(e.value)
    assert "\n" not in msg and name in msg
    return msg


def test_dump_errors_are_one_line_naming_file_and_problem(tmp_path):
    frames, _ = _two_molecules()
    good = write_dump(tmp_path / "good.lammpstrj", frames, COLS, BOX, units="lj", time=0.1)
    lines = good.read_text().splitlines()
    (tmp_path / "cut.lammpstrj").write_text("\n".join(lines[:-2]) + "\n")
    assert "truncated" in _err(tmp_path, "cut.lammpstrj")
    (tmp_path / "cut2.lammpstrj").write_text("\n".join(lines[:-8]) + "\n")   # cut inside the header
    assert "truncated" in _err(tmp_path, "cut2.lammpstrj")
    nobox = "\n".join(ln for k, ln in enumerate(lines) if not ln.startswith("ITEM: BOX") and not
                      (k > 0 and lines[k - 1].startswith("ITEM: BOX")) and not
                      (k > 1 and lines[k - 2].startswith("ITEM: BOX")) and not
                      (k > 2 and lines[k - 3].startswith("ITEM: BOX")))
    (tmp_path / "nobox.lammpstrj").write_text(nobox + "\n")
    assert "missing box" in _err(tmp_path, "nobox.lammpstrj")
    write_dump(tmp_path / "count.lammpstrj", [frames[0], frames[1][:3]], COLS, BOX)
    assert "atom count changes from 4 to 3" in _err(tmp_path, "count.lammpstrj")
    assert "mixed units" in _err(tmp_path, "good.lammpstrj", units="real")
    mixed = good.read_text() + write_dump(tmp_path / "x.lammpstrj", frames[:1], COLS, BOX, units="real",
                                          time=0.1, steps=[1000]).read_text()
    (tmp_path / "mixed.lammpstrj").write_text(mixed)
    assert "mixed units" in _err(tmp_path, "mixed.lammpstrj")
    write_dump(tmp_path / "tri.lammpstrj", frames, COLS, [(-5, 5, 0.5), (-5, 5, 0.2), (-5, 5, 0)],
               flags="xy xz yz pp pp pp")
    assert "triclinic box with tilts xz = 0.2" in _err(tmp_path, "tri.lammpstrj")
    write_dump(tmp_path / "abc.lammpstrj", frames, COLS, BOX, flags="abc origin pp pp pp")
    assert "general triclinic" in _err(tmp_path, "abc.lammpstrj")
    write_dump(tmp_path / "mix.lammpstrj", [f[:, :7] for f in frames], COLS[:4] + ["x", "yu", "z"], BOX)
    assert "mixed coordinate columns" in _err(tmp_path, "mix.lammpstrj")
    write_dump(tmp_path / "grow.lammpstrj", frames, COLS, BOX, steps=[0, 10, 20, 40, 50, 60])
    assert "unevenly spaced" in _err(tmp_path, "grow.lammpstrj")
    (tmp_path / "junk.lammpstrj").write_text("hello\n")
    assert "not a LAMMPS text dump" in _err(tmp_path, "junk.lammpstrj")
    assert read_trajectory(good, units="lj").n_frames == 6                  # agreeing units are fine


def test_dump_time_from_timestep_or_steps(tmp_path):
    frames, _ = _two_molecules()
    p = write_dump(tmp_path / "s.lammpstrj", frames, COLS, BOX)
    tr = read_trajectory(p, units="real", timestep=2.0)
    assert np.isclose(tr.frame_dt, 200.0) and tr.units == {"style": "real", "length": "Angstrom", "time": "fs",
                                                            "source": "flag"}
    tr = read_trajectory(p)
    assert tr.units["time"] == "step" and np.isclose(tr.frame_dt, 100) and tr.notes
    tr = read_trajectory(p, start=1, stride=2)
    assert tr.n_frames == 3 and list(tr.steps) == [100, 300, 500]


def test_gsd_roundtrip_bonds_as_molecules(tmp_path):
    gsd_hoomd = pytest.importorskip("gsd.hoomd")
    frames, com = _two_molecules()
    path = tmp_path / "t.gsd"
    with gsd_hoomd.open(str(path), "w") as f:
        for t, rows in enumerate(frames):
            rows = rows[np.argsort(rows[:, 0])]
            fr = gsd_hoomd.Frame()
            fr.configuration.step = 10 * t
            fr.configuration.box = [10, 10, 10, 0, 0, 0]
            fr.particles.N = 4
            fr.particles.position = (rows[:, 4:7]).astype(np.float32)     # [-L/2, L/2)
            fr.particles.image = rows[:, 7:10].astype(np.int32)
            fr.particles.velocity = rows[:, 10:13].astype(np.float32)
            fr.particles.mass = rows[:, 3].astype(np.float32)
            fr.particles.types = ["A", "B"]
            fr.particles.typeid = (rows[:, 2] - 1).astype(np.uint32)
            fr.bonds.N = 2
            fr.bonds.types = ["b"]
            fr.bonds.group = np.array([[0, 1], [2, 3]], dtype=np.uint32)
            f.append(fr)
    tr = read_trajectory(path, units="lj", timestep=0.01)
    assert tr.format == "gsd" and tr.unwrapped and np.isclose(tr.frame_dt, 0.1)
    assert list(tr.types) == ["A", "B", "A", "B"] and len(np.unique(tr.mol)) == 2
    pos, vel, *_ = coarse_grain(tr, "molecule")
    assert np.allclose(pos, com, atol=1e-5)
    assert np.allclose(vel[:, 0], [5, 0, 0], atol=1e-5)
    with gsd_hoomd.open(str(tmp_path / "nobox.gsd"), "w") as f:
        fr = gsd_hoomd.Frame()
        fr.particles.N = 1
        fr.particles.position = np.zeros((1, 3), np.float32)
        f.append(fr)
    assert "missing box" in _err(tmp_path, "nobox.gsd")


@pytest.mark.parametrize("fmt", ["xtc", "dcd"])
def test_mdanalysis_formats_from_its_writers(tmp_path, fmt):
    mda = pytest.importorskip("MDAnalysis")
    rng = np.random.default_rng(0)
    N, T, L = 20, 8, 30.0
    u = mda.Universe.empty(N, trajectory=True)
    path = tmp_path / f"t.{fmt}"
    truth = np.cumsum(rng.normal(scale=0.8, size=(T, N, 3)), axis=0) + 15.0
    with mda.Writer(str(path), n_atoms=N) as w:
        for t in range(T):
            u.atoms.positions = np.mod(truth[t], L)
            u.dimensions = [L, L, L, 90, 90, 90]
            u.trajectory.ts.time = 2.0 * t
            w.write(u.atoms)
    tr = read_trajectory(path)
    assert tr.format.startswith("mdanalysis") and tr.units["length"] == "Angstrom"
    assert np.allclose(tr.box, L, atol=1e-3) and not tr.unwrapped and tr.n_frames == T
    df, side = md_tracks(tr, "none")
    pos = df.sort_values(["frame", "particle"])[["x", "y", "z"]].to_numpy().reshape(T, N, 3)
    # unwrapped by the minimum image along time: the walk is recovered up to a box shift
    shift = np.round((pos[0] - truth[0]) / L) * L
    assert np.allclose(pos, truth + shift, atol=0.01)
    assert side["meta"]["box_px"] is not None
    assert "mixed units" in _err(tmp_path, f"t.{fmt}", units="lj")


def test_cli_md_read_info_and_train_simulate_evaluate_in_a_3d_box(tmp_path, capsys):
    """md-read -> train (box from the sidecar) -> simulate -> evaluate -> export, 3D periodic."""
    rng = np.random.default_rng(1)
    N, T, L = 40, 24, 8.0
    side_n = 4
    g = (np.stack(np.meshgrid(*[np.arange(side_n)] * 3, indexing="ij"), -1).reshape(-1, 3)[:N] + 0.5) * (L / side_n)
    walk = g + np.cumsum(rng.normal(scale=0.05, size=(T, N, 3)), axis=0)
    frames = []
    for t in range(T):
        img = np.floor(walk[t] / L)
        frames.append(np.c_[np.arange(1, N + 1), np.ones(N), walk[t] - img * L, img])
    dump = write_dump(tmp_path / "run.lammpstrj", frames, ["id", "type", "x", "y", "z", "ix", "iy", "iz"],
                      ((0, L), (0, L), (0, L)), units="lj", time=0.5)
    assert main(["info", str(dump)]) == 0
    out = capsys.readouterr().out
    assert "lammps-dump" in out and "sigma" in out and "atoms          40" in out
    assert main(["md-read", str(dump), "-o", str(tmp_path / "md")]) == 0
    side = json.loads((tmp_path / "md" / "tracks.json").read_text())
    assert side["meta"]["box_px"] == [L, L, L] and side["meta"]["fps"] == 2.0
    assert main(["md-read", str(dump), "-o", str(tmp_path / "md")]) == 2       # exists: refused
    tracks = str(tmp_path / "md" / "tracks.parquet")
    assert main(["train", tracks, "-o", str(tmp_path / "model"), "--epochs", "1", "--quiet", "--cutoff", "2.0",
                 "--n-pair", "2"]) == 0
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    assert cfg["calibration"]["box_px"] == [L, L, L]
    assert main(["simulate", str(tmp_path / "model"), "--init", tracks, "--steps", "10",
                 "-o", str(tmp_path / "sim" / "sim.parquet")]) == 0
    sim = pd.read_parquet(tmp_path / "sim" / "sim.parquet")
    assert {"z", "vz"} <= set(sim.columns) and sim["particle"].nunique() == N
    assert main(["evaluate", tracks, str(tmp_path / "sim" / "sim.parquet"), "-o", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert np.isfinite(m["rdf_rel_rms"]) and np.isfinite(m["msd_rel_rms"])
    assert main(["export", str(tmp_path / "model"), "-o", str(tmp_path / "bundle")]) == 0


def test_cli_md_read_errors(tmp_path, capsys):
    (tmp_path / "junk.lammpstrj").write_text("ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n5\n")
    assert main(["md-read", str(tmp_path / "junk.lammpstrj"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "junk.lammpstrj" in err
    assert not (tmp_path / "o" / "tracks.parquet").exists()
    assert main(["md-read", str(tmp_path / "junk.lammpstrj"), "-o", str(tmp_path / "o"),
                 "--coarse-grain", "residue"]) == 2


@needs_lammps
def test_lammps_ideal_gas_dump_reads(tmp_path):
    from colloidcg.md.lammps import ideal_gas

    rec = ideal_gas(tmp_path / "ig", n=100, frames=12, dump_every=5, equilibrate=50, dim=2)
    tr = read_trajectory(rec["dump"])
    assert tr.dim == 2 and tr.n_atoms == 100 and tr.n_frames == 12 and tr.unwrapped
    assert tr.units["style"] == "lj" and np.isclose(tr.frame_dt, rec["frame_dt"])
    assert np.allclose(tr.box, rec["box"])


@needs_lammps
def test_lammps_star_melt_molecule_map_conserves_momentum(tmp_path):
    """DPD-thermostatted star melt: the CG (one particle per star) total momentum stays
    zero to rounding; each star's atoms are complete and its centre moves continuously."""
    from colloidcg.md.lammps import star_melt

    rec = star_melt(tmp_path / "sm", n_stars=8, arms=3, beads=3, frames=6, dump_every=20, equilibrate=200)
    tr = read_trajectory(rec["dump"])
    assert tr.n_atoms == 8 * 10 and len(np.unique(tr.mol)) == 8 and tr.units["time"] == "tau"
    pos, vel, pids, extra, n = coarse_grain(tr, "molecule")
    assert list(n) == [10] * 8
    p_total = vel.sum(1)                            # equal masses
    assert np.abs(p_total).max() < 1e-6 * np.abs(vel).max() * 8
    step = np.abs(np.diff(pos, axis=0)).max()
    assert step < 0.25 * rec["box"][0]


@needs_lammps
def test_cli_md_synth_then_md_read(tmp_path, capsys):
    args = ["md-synth", "ideal-gas", "-o", str(tmp_path / "g"), "--n", "50", "--frames", "5", "--dump-every", "5",
            "--equilibrate", "10"]
    assert main(args) == 0
    rec = json.loads((tmp_path / "g" / "run.json").read_text())
    assert rec["exact"]["D"] == 1.0 and rec["frames"] == 5
    assert main(["md-read", str(tmp_path / "g" / "dump.lammpstrj"), "-o", str(tmp_path / "t")]) == 0
    df = pd.read_parquet(tmp_path / "t" / "tracks.parquet")
    assert df["particle"].nunique() == 50 and df["frame"].nunique() == 5
    assert main(args) == 2                                   # the dump exists: refused
    assert "already exists" in capsys.readouterr().err
    sheared = ["md-synth", "star-melt", "-o", str(tmp_path / "s"), "--n-stars", "8", "--arms", "2", "--beads", "2",
               "--frames", "4", "--dump-every", "10", "--equilibrate", "100", "--shear-rate", "0.2",
               "--shear-equilibrate", "100"]
    assert main(sheared) == 0 and "sheared at 0.2/tau" in capsys.readouterr().out
    assert main(["md-read", str(tmp_path / "s" / "dump.lammpstrj"), "-o", str(tmp_path / "st"),
                 "--coarse-grain", "molecule"]) == 0
    side = json.loads((tmp_path / "st" / "tracks.json").read_text())
    assert side["meta"]["lees_edwards"]["shear_rate"] == pytest.approx(0.2, rel=1e-6)
    assert main(["md-synth", "star-melt", "-o", str(tmp_path / "s2"), "--shear-rate", "0.2",
                 "--thermostat", "langevin"]) == 2
    assert "needs the DPD thermostat" in capsys.readouterr().err


def test_mdanalysis_with_topology_residues_as_molecules(tmp_path):
    mda = pytest.importorskip("MDAnalysis")
    N, T, L = 6, 4, 20.0
    u = mda.Universe.empty(N, n_residues=3, atom_resindex=[0, 0, 1, 1, 2, 2], trajectory=True)
    u.add_TopologyAttr("resids", [1, 2, 3])
    u.add_TopologyAttr("names", ["A", "B"] * 3)
    u.add_TopologyAttr("types", ["A", "B"] * 3)
    u.add_TopologyAttr("masses", [1.0, 3.0] * 3)
    base = np.array([[1, 1, 1], [2, 1, 1], [5, 5, 5], [6, 5, 5], [10, 10, 10], [10, 11, 10]], float)
    u.atoms.positions = base
    u.dimensions = [L, L, L, 90, 90, 90]
    u.atoms.write(str(tmp_path / "top.pdb"))
    with mda.Writer(str(tmp_path / "t.xtc"), n_atoms=N) as w:
        for t in range(T):
            u.atoms.positions = base + 0.5 * t
            u.trajectory.ts.time = float(t)
            w.write(u.atoms)
    tr = read_trajectory(tmp_path / "t.xtc", topology=tmp_path / "top.pdb")
    assert list(tr.mol) == [1, 1, 2, 2, 3, 3] and list(tr.types) == ["A", "B"] * 3
    pos, *_ = coarse_grain(tr, "molecule")
    want = np.array([[1.5, 1, 1], [5.5, 5, 5], [10, 10.5, 10]])            # equal masses
    assert np.allclose(pos[0], want, atol=0.01) and np.allclose(pos[-1], want + 1.5, atol=0.01)


@needs_lammps
def test_lammps_written_dcd_read_through_mdanalysis_matches_the_dump(tmp_path):
    """One LAMMPS run writes a text dump and a DCD of the same frames; the DCD read through
    MDAnalysis (and unwrapped by the minimum image in time) gives the dump's positions."""
    pytest.importorskip("MDAnalysis")
    from colloidcg.md.lammps import run_script

    L = 8.0
    run_script(f"""
units lj
atom_style atomic
region box block 0 {L} 0 {L} 0 {L}
create_box 1 box
create_atoms 1 random 60 5 NULL
mass 1 1.0
pair_style zero 1.0
pair_coeff * *
velocity all create 1.0 6
fix nve all nve
fix lang all langevin 1.0 1.0 1.0 7
timestep 0.01
dump t all custom 10 {tmp_path / 'd.lammpstrj'} id type xu yu zu
dump_modify t units yes time yes sort id
dump c all dcd 10 {tmp_path / 'd.dcd'}
dump_modify c sort id
run 90
""")
    a = read_trajectory(tmp_path / "d.lammpstrj")
    b = read_trajectory(tmp_path / "d.dcd")
    assert a.n_frames == b.n_frames == 10 and np.allclose(b.box, L, atol=1e-4)
    pa, *_ = coarse_grain(a, "none")
    pb, *_ = coarse_grain(b, "none")
    shift = np.round((pb[0] - pa[0]) / L) * L
    assert np.allclose(pb - shift, pa, atol=1e-4)


@needs_lammps
@pytest.mark.slow
def test_md_speed_benchmark_smoke(capsys):
    """benchmarks/md_speed.py runs both engines and prints the ratio (no timing asserted)."""
    from bench_helpers import load_benchmark

    mod = load_benchmark("md_speed")
    assert mod.main(["--sizes", "400", "--dims", "3", "--quick", "--json"]) == 0
    out = capsys.readouterr().out
    rec = json.loads(out.strip().splitlines()[-1])
    assert "3d_400" in rec["ratio_lammps_over_ours"] and rec["ratio_lammps_over_ours"]["3d_400"] > 0
    assert {r["engine"] for r in rec["rows"]} == {"lammps dpd", "colloidcg rollout (tabulated)"}
    assert all(10 <= r["neighbours"] <= 14 for r in rec["rows"])


# ----------------------------------------------------------------------------- sheared boxes
def _sheared_frames(T=5, L=10.0, rate=0.02, dt=0.5):
    """Three atoms in a box sheared at ``rate`` (tilt xy = rate L t): atom 1 sits in the
    image above (iy = 1, wrapped y = 2), atom 2 in the primary cell, atom 3 below (iy = -1).
    Returns frames (id x y z ix iy iz), the per-frame tilts and the true unwrapped positions."""
    frames, tilts, true = [], [], []
    for k in range(T):
        xy = rate * L * k * dt
        w = np.array([[3.0, 2.0, 5.0], [4.0, 6.0, 4.0], [6.0, 8.0, 6.0]])
        img = np.array([[0, 1, 0], [0, 0, 0], [1, -1, 0]])
        true.append(w + img * L + img[:, 1:2] * np.array([xy, 0, 0]))
        frames.append(np.c_[np.arange(1, 4), w, img])
        tilts.append(xy)
    return frames, np.array(tilts), np.array(true)


def _write_sheared(path, frames, tilts, cols, L=10.0, dt=0.5):
    out = []
    for k, (data, xy) in enumerate(zip(frames, tilts)):
        out += ["ITEM: UNITS", "lj"] if k == 0 else []
        out += ["ITEM: TIME", f"{dt * k}", "ITEM: TIMESTEP", str(100 * k), "ITEM: NUMBER OF ATOMS", str(len(data)),
                "ITEM: BOX BOUNDS xy xz yz pp pp pp",
                f"{min(0.0, xy)} {L + max(0.0, xy)} {xy}", f"0 {L} 0", f"0 {L} 0", "ITEM: ATOMS " + " ".join(cols)]
        out += [" ".join(f"{v:.10g}" for v in row) for row in data]
    path.write_text("\n".join(out) + "\n")
    return path


def test_dump_sheared_box_tilt_images_and_sidecar(tmp_path):
    """An xy-sheared (Lees-Edwards) dump: box lengths without the tilt, the per-frame tilt
    and the shear rate kept, an image across y shifted along x by the frame's tilt; the
    sidecar carries them; wrapped coordinates without image flags refused."""
    frames, tilts, true = _sheared_frames()
    p = _write_sheared(tmp_path / "shear.lammpstrj", frames, tilts, ["id", "x", "y", "z", "ix", "iy", "iz"])
    tr = read_trajectory(p)
    assert np.allclose(tr.box, [10, 10, 10]) and tr.unwrapped
    assert np.allclose(tr.tilt, tilts) and tr.shear_rate == pytest.approx(0.02, rel=1e-9)
    assert np.allclose(tr.pos, true, atol=1e-9)
    df, side = md_tracks(tr)
    le = side["meta"]["lees_edwards"]
    assert le["plane"] == "xy" and le["shear_rate"] == pytest.approx(0.02) and np.allclose(le["tilt_xy"], tilts)
    assert side["md"]["sheared"]["tilt_xy"] == [0.0, pytest.approx(tilts[-1])]
    _write_sheared(tmp_path / "wrapped.lammpstrj", [f[:, :4] for f in frames], tilts, ["id", "x", "y", "z"])
    assert "without image flags in a sheared box" in _err(tmp_path, "wrapped.lammpstrj")


@needs_lammps
def test_lammps_sheared_melt_velocity_profile_and_non_gaussian(tmp_path):
    """The star melt sheared by LAMMPS (fix deform xy, remap v, DPD thermostat), read one
    particle per star: the box tilts at the imposed rate, the stars' finite-difference
    velocity profile along y has that slope (within 15 %), and the transverse non-Gaussian
    parameter of the two halves of the run agree within 0.15 (the known answer's
    tolerance, here between the MD and itself: the run is steady)."""
    from colloidcg.md.shear import sheared_melt_md

    r = sheared_melt_md(tmp_path, shear_rate=0.1, frames=120)
    assert r["box_rate"] == pytest.approx(0.1, rel=1e-6)
    assert abs(r["profile_rate"] / 0.1 - 1) < 0.15, r["profile_rate"]
    prof = r["profile"]
    assert np.all(np.diff(prof["vx"]) > 0)                    # monotone across the gap
    a1, a2 = r["alpha2_first_half"], r["alpha2_second_half"]
    assert np.isfinite(a1).all() and np.isfinite(a2).all()
    assert r["alpha2_halves_abs_diff"] < 0.15
    assert r["sidecar"]["meta"]["box_px"] == pytest.approx(r["run"]["box"])
