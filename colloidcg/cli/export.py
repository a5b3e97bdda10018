"""``colloidcg export MODEL_DIR -o BUNDLE``: pack a trained model as a bundle."""

from __future__ import annotations

import argparse

from ._common import add_output


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="pack a trained model as a bundle (weights, JSON description, compiled model, rollout.py)",
        description="Write a model bundle: model.pt (weights), bundle.json (architecture, units, "
                    "dt, cutoff, calibration, provenance of the training data, metrics, versions, "
                    "the compiled model's methods, checksums), torchscript/model.pt (the model itself, "
                    "compiled with TorchScript, with its integrator), driver.py and rollout.py (a rollout "
                    "with torch alone: python BUNDLE/rollout.py --init INIT.csv --steps N --seed S -o OUT.csv). "
                    "Reload the bundle with colloidcg.load_model(BUNDLE) or use it as MODEL in "
                    "colloidcg simulate.")
    p.add_argument("model", metavar="MODEL_DIR", help="folder written by colloidcg train")
    add_output(p, help="bundle folder to create")
    p.add_argument("--metrics", metavar="METRICS.json", default=None,
                   help="metrics.json from colloidcg evaluate, recorded in the bundle (default: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..errors import ColloidcgError
    from ..export import export_bundle
    from ..outputs import output_folder

    metrics = None
    if args.metrics:
        mp = Path(args.metrics)
        try:
            metrics = json.loads(mp.read_text())
        except (OSError, ValueError) as exc:
            raise ColloidcgError(f"--metrics: {mp}: not a readable JSON file ({exc})") from None
        metrics = {k: v for k, v in metrics.items() if k != "curves"}
    bundle = Path(args.output)
    if bundle.resolve() == Path(args.model).resolve():
        raise ColloidcgError(f"-o {bundle}: the bundle must be a new folder, not the model directory itself")
    if bundle.exists() and not bundle.is_dir():
        raise ColloidcgError(f"-o {bundle}: exists and is not a folder (nothing was written)")
    # the folder holding the bundle is locked while it is built; the bundle is swapped in whole
    with output_folder(bundle.parent, [bundle.name], args.overwrite, option=f"-o {bundle}: folder"):
        out = export_bundle(args.model, bundle, overwrite=True, metrics=metrics)
    print(f"bundle written: {out} (torchscript/model.pt, rollout.py; "
          f"describe it with: colloidcg info {out})")
    return 0
