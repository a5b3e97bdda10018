"""Writing results safely: atomic files, no silent overwrites, provenance beside data.

Every table a stage writes is a trackpy-schema Parquet file with a JSON sidecar of the
same stem (``tracks.parquet`` + ``tracks.json``). The sidecar holds the resolved
parameters, units, package version and input path, so a result can be reproduced and a
batch can tell whether a stage must be redone.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ._version import __version__
from .errors import ColloidcgError, OutputExistsError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks (constant memory for any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk_bytes := fh.read(chunk):
            h.update(chunk_bytes)
    return h.hexdigest()


def check_writable(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse to go on if any of ``paths`` exists and ``overwrite`` is false.

    Called before any work starts, so that a long run never ends by refusing to save.
    """
    for p in paths:
        p = Path(p)
        if p.exists() and not overwrite:
            raise OutputExistsError(
                f"{p}: already exists; pass --overwrite to replace it (nothing was written)"
            )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes files owner-only; use normal permissions
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _json_default(obj: Any):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def atomic_write_json(path: str | os.PathLike, obj: dict) -> Path:
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True)
    return atomic_write_bytes(path, (text + "\n").encode())


def atomic_write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def provenance(stage: str, inputs: dict[str, Any], parameters: dict[str, Any],
               units: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """The sidecar record every written output carries."""
    rec = {
        "stage": stage,
        "colloidcg_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": {k: (os.path.abspath(v) if isinstance(v, (str, os.PathLike)) else v)
                   for k, v in inputs.items()},
        "parameters": parameters,
        "units": units or {},
    }
    rec.update(extra)
    return rec


def write_table(path: str | os.PathLike, df: pd.DataFrame, sidecar: dict[str, Any]) -> Path:
    """Write ``df`` as Parquet and ``sidecar`` as JSON beside it (same stem), atomically.

    The JSON is written last: a table without its sidecar is recognisably incomplete.
    """
    path = Path(path)
    atomic_write_parquet(path, df)
    atomic_write_json(path.with_suffix(".json"), sidecar)
    return path


def read_table(path: str | os.PathLike, required: Iterable[str] = ()) -> tuple[pd.DataFrame, dict]:
    """Read a Parquet table and its JSON sidecar (empty dict when absent).

    Raises :class:`ColloidcgError` naming the file when it is missing, unreadable or lacks
    one of the ``required`` columns.
    """
    path = Path(path)
    if not path.exists():
        raise ColloidcgError(f"{path}: no such file (expected a .parquet table)")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise ColloidcgError(f"{path}: not a readable Parquet table ({exc.__class__.__name__}: {exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ColloidcgError(
            f"{path}: missing column(s) {', '.join(missing)}; expected at least {', '.join(required)}"
        )
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text()) if side.exists() else {}
    return df, meta
