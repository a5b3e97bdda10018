"""Content hashes, stage keys and stage records: what makes a batch resumable.

Each stage folder OUT/<video>/<stage>/ ends with ``stage.json``, written last and
atomically. It records the stage's key (SHA-256 of the stage name, its resolved
parameters, the package version and the content hashes of its inputs), its status, and
the size and SHA-256 of every file the stage wrote. A stage is up to date when its
record says "done", the key is the one the current inputs and parameters give, and every
recorded output is still there with the same content. Anything else is redone: a
killed run leaves either no record (the stage is redone) or the previous complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .._version import __version__
from ..io.readers import FRAME_EXTS
from ..outputs import atomic_write_json, sha256_file

RECORD = "stage.json"
#: Beside a kept (stale) result: the failed or blocked redo that did not replace it.
ATTEMPT = "attempt.json"


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in FRAME_EXTS and not p.name.startswith("."))


def video_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Size and modification time of a video file or folder of frames (cheap)."""
    path = Path(path)
    files = _frame_files(path) if path.is_dir() else [path]
    stats = [f.stat() for f in files]
    return {"size": int(sum(s.st_size for s in stats)),
            "mtime_ns": int(max((s.st_mtime_ns for s in stats), default=0)),
            "n_files": len(files)}


def hash_video(path: str | os.PathLike, previous: dict | None = None) -> dict[str, Any]:
    """{"path", "size", "mtime_ns", "n_files", "sha256"} of a video file or folder of frames.

    The SHA-256 covers the file's bytes (for a folder: each frame's name and bytes, in
    order). When ``previous`` (an earlier result for the same path) has the same size,
    modification time and file count, its hash is reused instead of reading the video again.
    """
    path = Path(path)
    fp = video_fingerprint(path)
    if previous and previous.get("sha256") and all(previous.get(k) == v for k, v in fp.items()) \
            and previous.get("path") == str(path):
        return {"path": str(path), **fp, "sha256": previous["sha256"]}
    if path.is_dir():
        h = hashlib.sha256()
        for f in _frame_files(path):
            h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
        digest = h.hexdigest()
    else:
        digest = sha256_file(path)
    return {"path": str(path), **fp, "sha256": digest}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def stage_key(stage: str, parameters: dict, inputs: dict[str, str | None]) -> str:
    """SHA-256 naming one computation: stage, parameters, package version, input hashes."""
    return hashlib.sha256(canonical({"stage": stage, "parameters": parameters, "inputs": inputs,
                                     "colloidcg_version": __version__}).encode()).hexdigest()


def manifest(stage_dir: str | os.PathLike) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of every file in a stage folder except the
    record itself and hidden (temporary) files."""
    stage_dir = Path(stage_dir)
    out = {}
    for p in sorted(stage_dir.rglob("*")):
        rel = p.relative_to(stage_dir)
        if not p.is_file() or rel.as_posix() in (RECORD, ATTEMPT) or any(part.startswith(".") for part in rel.parts):
            continue
        out[rel.as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def outputs_intact(stage_dir: str | os.PathLike, files: dict[str, dict]) -> bool:
    stage_dir = Path(stage_dir)
    for rel, info in files.items():
        p = stage_dir / rel
        if not p.is_file() or p.stat().st_size != info.get("size") or sha256_file(p) != info.get("sha256"):
            return False
    return True


def read_record(stage_dir: str | os.PathLike) -> dict | None:
    p = Path(stage_dir) / RECORD
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def write_record(stage_dir: str | os.PathLike, record: dict) -> Path:
    return atomic_write_json(Path(stage_dir) / RECORD, record)


def read_attempt(stage_dir: str | os.PathLike) -> dict | None:
    """The failed or blocked redo recorded beside a kept result (None when there is none)."""
    p = Path(stage_dir) / ATTEMPT
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return {"status": "failed", "error": f"{p}: unreadable"}
    return rec if isinstance(rec, dict) else {"status": "failed", "error": f"{p}: unreadable"}


def write_attempt(stage_dir: str | os.PathLike, record: dict) -> Path:
    return atomic_write_json(Path(stage_dir) / ATTEMPT, record)


def clear_attempt(stage_dir: str | os.PathLike) -> None:
    try:
        (Path(stage_dir) / ATTEMPT).unlink()
    except FileNotFoundError:
        pass


def verified_status(stage_dir: str | os.PathLike) -> tuple[str, str]:
    """(status, why) of a stage folder as it is on disk now, checking every recorded
    output's size and SHA-256: "done", "stale" (a complete result that a later redo failed
    to replace), "failed", "blocked", "incomplete" (recorded outputs missing or changed) or
    "absent"."""
    rec = read_record(stage_dir)
    if rec is None:
        return "absent", "no stage.json"
    status = rec.get("status")
    if status != "done":
        return str(status or "unknown"), str(rec.get("error") or "")
    if not outputs_intact(stage_dir, rec.get("outputs") or {}):
        return "incomplete", "recorded outputs are missing or changed on disk"
    att = read_attempt(stage_dir)
    if att is not None:
        return "stale", f"{att.get('status', 'failed')}: {att.get('error', '')}"
    return "done", ""


def up_to_date(stage_dir: str | os.PathLike, key: str) -> dict | None:
    """The stage's record when it is complete for ``key`` with intact outputs, else None."""
    rec = read_record(stage_dir)
    if rec is None or rec.get("status") != "done" or rec.get("key") != key:
        return None
    if not outputs_intact(stage_dir, rec.get("outputs") or {}):
        return None
    return rec


def completed(stage_dir: str | os.PathLike) -> dict | None:
    """The stage's record when it finished ("done") and its outputs are intact, else None."""
    rec = read_record(stage_dir)
    if rec is None or rec.get("status") != "done":
        return None
    return rec if outputs_intact(stage_dir, rec.get("outputs") or {}) else None
