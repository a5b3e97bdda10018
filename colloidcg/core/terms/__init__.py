"""Energy terms of the metriplectic model, one module each (interface: :mod:`.base`).

The registry below is filled from the modules of this package: every module defines one
:class:`~.base.EnergyTerm` subclass and lists it in ``TERM``. Adding a term is adding a
module here (and its tests); the model, tabulation, export, the training report and the
guarantee tests walk :data:`REGISTRY`. ``density`` (the internal energy U(S, V) of the
kernel density, which also gives the temperatures) is always present and always first.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import EnergyTerm

REGISTRY: dict[str, type[EnergyTerm]] = {}


def _discover() -> None:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")
    # the density term first: it supplies the temperatures every other part reads
    names.sort(key=lambda n: n != "density")
    for mod_name in names:
        mod = importlib.import_module(f"{__name__}.{mod_name}")
        cls = getattr(mod, "TERM", None)
        if cls is None:
            continue
        if cls.name in REGISTRY:
            raise RuntimeError(f"energy term {cls.name!r} defined twice ({mod_name})")
        REGISTRY[cls.name] = cls


def build_terms(config) -> dict[str, EnergyTerm]:
    """The terms a configuration asks for, in registry order (density first). A name in
    ``config.terms`` that no module defines raises ValueError."""
    unknown = sorted(set(config.terms) - set(REGISTRY))
    if unknown:
        raise ValueError(f"unknown energy term(s) {unknown}; this colloidcg has {sorted(REGISTRY)}")
    out = {}
    for name, cls in REGISTRY.items():
        term = cls.build(config)
        if term is not None:
            out[name] = term
    if "density" not in out:
        raise RuntimeError("the density term (internal energy U) is missing from the registry")
    return out


_discover()

__all__ = ["EnergyTerm", "REGISTRY", "build_terms"]
