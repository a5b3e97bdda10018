"""Exporting trained models: bundles with weights, a JSON description and TorchScript.

- :func:`export_bundle`: model directory -> bundle folder (see :mod:`.bundle`).
- :func:`load_model`: bundle or model directory -> (model, config), to simulate or
  fine-tune; also available as :func:`colloidcg.load_model`.
- :func:`read_bundle`: the bundle's description (bundle.json), checked.
- :mod:`.compiled`: the model itself compiled with TorchScript (its integrator holding
  it), which loads with ``torch.jit.load`` in a Python that has only torch; bundles also
  carry ``rollout.py`` (:mod:`.rollout_script`) and the torch-only loop ``driver.py``.
"""

from .bundle import BUNDLE_FORMAT, BUNDLE_VERSION, export_bundle, is_bundle, load_model, read_bundle

__all__ = ["export_bundle", "load_model", "read_bundle", "is_bundle", "BUNDLE_FORMAT", "BUNDLE_VERSION"]
