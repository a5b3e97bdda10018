"""Writing results safely: atomic files, no silent overwrites, provenance beside data.

Every table a stage writes is a trackpy-schema Parquet file with a JSON sidecar of the
same stem (``tracks.parquet`` + ``tracks.json``). The sidecar holds the resolved
parameters, units, package version and input path, so a result can be reproduced and a
batch can tell whether a stage must be redone.

Results of more than one file are committed as a unit (:class:`Commit`): written into a
hidden transaction folder beside their destination and swapped in with renames after a
commit record is written. After any interruption each destination is absent, the
previous complete result or the new complete one; :func:`recover` (run by the next
writer and by the readers) rolls a committed transaction forward and removes one that
never committed, and the temporary files of killed runs. :func:`output_folder` is what
the commands use: it checks that the output can be written, holds the folder's lock
(:class:`OutputLock`), and writes nothing when the command fails.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from contextlib import contextmanager
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


def json_clean(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None: JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist())
    return obj


def atomic_write_json(path: str | os.PathLike, obj: dict) -> Path:
    """Write ``obj`` as JSON atomically; NaN and infinities are written as null."""
    text = json.dumps(json_clean(obj), indent=2, default=_json_default, allow_nan=False)
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
    """Write ``df`` as Parquet and ``sidecar`` as JSON beside it (same stem), committed
    together (:class:`Commit`): a reader sees both old files or both new ones.

    The sidecar records the table's SHA-256 (``table_sha256``), so that a table and a
    sidecar that do not belong together are recognised (:func:`read_table`).
    """
    path = Path(path)
    with Commit(path.parent) as tx:
        df.to_parquet(tx.path(path.name), index=False)
        side = dict(sidecar)
        side["table_sha256"] = sha256_file(tx.path(path.name))
        atomic_write_json(tx.path(path.with_suffix(".json").name), side)
        tx.commit()
    return path


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON sidecar at ``path`` ({} when absent); a damaged one is a one-line error."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ColloidcgError(f"{path}: damaged JSON sidecar ({exc.__class__.__name__}: {exc}); "
                             "rewrite it or remove it") from None
    if not isinstance(rec, dict):
        raise ColloidcgError(f"{path}: damaged JSON sidecar (expected a JSON object, got "
                             f"{type(rec).__name__})")
    return rec


def check_table_pair(path: str | os.PathLike, meta: dict) -> None:
    """Refuse a table whose sidecar records another table's checksum."""
    want = meta.get("table_sha256")
    if want and sha256_file(path) != want:
        raise ColloidcgError(f"{path}: the table does not match its sidecar "
                             f"{Path(path).with_suffix('.json').name} (checksum differs): the pair "
                             "was not written together; rerun the command that made it")


#: Calibration keys a sidecar may hold, and the sections looked in (as colloidcg.data reads them).
CALIBRATION_KEYS = ("fps", "um_per_px", "um_per_slice")
_CALIBRATION_SECTIONS = (None, "meta", "units", "video", "calibration", "parameters")


def check_calibration(meta: dict, path: str | os.PathLike) -> None:
    """Every calibration value in a sidecar (fps, um_per_px, um_per_slice, at the top
    level or in its meta/units/video/calibration/parameters sections) must be absent,
    null or a finite positive number; otherwise a one-line error names the file and key."""
    for section in _CALIBRATION_SECTIONS:
        where = meta if section is None else meta.get(section)
        if not isinstance(where, dict):
            continue
        for key in CALIBRATION_KEYS:
            if key not in where or where[key] is None:
                continue
            v = where[key]
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v) and v > 0)
            if not ok:
                name = key if section is None else f"{section}.{key}"
                raise ColloidcgError(f"{path}: calibration '{name}' must be a finite positive "
                                     f"number, got {v!r}; correct it in that file")


def check_unique_rows(df: pd.DataFrame, path: str | os.PathLike, keys=("frame", "particle")) -> None:
    """A tracks table has one row per (frame, particle); a one-line error names the file
    and the first repeated pair otherwise."""
    if not all(k in df.columns for k in keys) or not len(df):
        return
    dup = df.duplicated(list(keys), keep=False)
    if dup.any():
        first = df.loc[dup, list(keys)].iloc[0]
        pair = ", ".join(f"{k} {first[k]}" for k in keys)
        raise ColloidcgError(f"{path}: {int(dup.sum())} rows repeat a ({', '.join(keys)}) pair "
                             f"(first: {pair}); each particle may appear once per frame")


def read_table(path: str | os.PathLike, required: Iterable[str] = ()) -> tuple[pd.DataFrame, dict]:
    """Read a Parquet table and its JSON sidecar (empty dict when absent).

    A ``.csv`` file (tracks from elsewhere, such as trackpy's ``DataFrame.to_csv``: a header
    row with the trackpy column names) is read too, its sidecar likewise optional; an unnamed
    leading index column that ``to_csv`` writes is dropped. colloidcg itself writes Parquet.

    Raises :class:`ColloidcgError` naming the file when it is missing, unreadable or lacks
    one of the ``required`` columns.
    """
    path = Path(path)
    recover(path.parent)   # finish a commit a killed writer left halfway
    if not path.exists():
        raise ColloidcgError(f"{path}: no such file (expected a .parquet or .csv table)")
    if path.is_dir():   # an output folder given for its table (pandas would read it as a dataset)
        inside = sorted(q.name for q in path.glob("*.parquet"))
        hint = f"; it holds {', '.join(str(path / n) for n in inside)}" if inside else ""
        raise ColloidcgError(f"{path}: a folder, expected a .parquet table{hint}")
    csv = path.suffix.lower() == ".csv"
    try:
        df = pd.read_csv(path) if csv else pd.read_parquet(path)
    except Exception as exc:  # pyarrow and the CSV parser raise several unrelated types
        kind = "CSV table (a header row, then one row per particle and frame)" if csv else "Parquet table"
        raise ColloidcgError(f"{path}: not a readable {kind} ({exc.__class__.__name__}: {exc})") from None
    if csv and len(df.columns) and str(df.columns[0]).startswith("Unnamed: 0"):
        df = df.drop(columns=df.columns[0])        # the index column DataFrame.to_csv writes
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ColloidcgError(
            f"{path}: missing column(s) {', '.join(missing)}; expected at least {', '.join(required)}"
        )
    side = path.with_suffix(".json")
    meta = read_sidecar(side)
    check_calibration(meta, side)
    check_table_pair(path, meta)
    return df, meta


# ----------------------------------------------------------------------------- commits
#: Hidden transaction folders (one per commit in progress) and the lock file of a folder.
TXN_PREFIX = ".colloidcg-txn-"
LOCK_NAME = ".colloidcg.lock"
#: Temporary files of single-file atomic writes (``.NAME.<8 random chars>.tmp``) and older
#: replaced folders (``.NAME.old.PID``), left only by killed runs.
_LEGACY_TMP = re.compile(r"^\..+\.(?:[A-Za-z0-9_]{8}\.tmp|old\.\d+)$")
_HOST = socket.gethostname().replace("-", "_") or "host"
_LIVE_TXNS: set[str] = set()
_STATE = threading.Lock()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def _txn_owner_alive(txn: Path) -> bool:
    """Whether the process that made the transaction folder ``txn`` still runs here."""
    if str(txn) in _LIVE_TXNS:
        return True
    m = re.match(re.escape(TXN_PREFIX) + r"(.+)-(\d+)-[0-9a-f]+$", txn.name)
    if m is None:
        return False
    host, pid = m.group(1), int(m.group(2))
    if host != _HOST:
        return True   # another machine's (shared file system): only its own lock holder may tell
    return pid != os.getpid() and _pid_alive(pid)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _roll_forward(txn: Path, folder: Path, names: list[str]) -> None:
    """Move the committed ``txn/new/<name>`` into ``folder``, the replaced entries to
    ``txn/old``, then remove ``txn``. Idempotent: a rerun after a kill finishes the job."""
    old = txn / "old"
    old.mkdir(exist_ok=True)
    for name in names:
        src, dst = txn / "new" / name, folder / name
        if not (src.exists() or src.is_symlink()):
            continue   # already moved in
        if dst.exists() or dst.is_symlink():
            if (old / name).exists():
                _remove(old / name)
            os.rename(dst, old / name)
        os.rename(src, dst)
    shutil.rmtree(txn, ignore_errors=True)


class Commit:
    """Files written into a hidden transaction folder in ``folder`` and moved in together.

    >>> with Commit(out) as tx:                     # doctest: +SKIP
    ...     df.to_parquet(tx.path("tracks.parquet"))
    ...     atomic_write_json(tx.path("tracks.json"), meta)
    ...     tx.commit()

    Everything written under :meth:`path` (files or folders) replaces the entries of the
    same names in ``folder`` on :meth:`commit`; leaving the ``with`` block without
    committing (an exception) removes it all and leaves ``folder`` as it was. The commit
    writes ``commit.json`` (the point after which the new result wins) and then renames;
    :func:`recover` finishes a commit that a kill interrupted and removes an uncommitted
    transaction.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.txn = self.folder / f"{TXN_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
        self.new = self.txn / "new"
        self.new.mkdir(parents=True)
        with _STATE:
            _LIVE_TXNS.add(str(self.txn))
        self.done = False

    def path(self, name: str) -> Path:
        """Where to write the entry ``name`` of the result."""
        return self.new / name

    def names(self) -> list[str]:
        return sorted(p.name for p in self.new.iterdir() if not p.name.startswith("."))

    def commit(self) -> list[str]:
        """Swap the written entries into the folder; returns their names."""
        names = self.names()
        atomic_write_json(self.txn / "commit.json", {"names": names, "pid": os.getpid()})
        _roll_forward(self.txn, self.folder, names)
        self._forget()
        self.done = True
        return names

    def abort(self) -> None:
        """Undo an uncommitted transaction; one past its commit record is finished instead
        (or, when that fails too, left for :func:`recover`): the new result then wins."""
        if (self.txn / "commit.json").is_file():
            try:
                names = json.loads((self.txn / "commit.json").read_text())["names"]
                _roll_forward(self.txn, self.folder, names)
            except (OSError, ValueError, KeyError):
                pass
        else:
            shutil.rmtree(self.txn, ignore_errors=True)
        self._forget()

    def _forget(self) -> None:
        with _STATE:
            _LIVE_TXNS.discard(str(self.txn))

    def __enter__(self) -> "Commit":
        return self

    def __exit__(self, *exc) -> None:
        if not self.done:
            self.abort()


def leftovers(folder: str | os.PathLike) -> list[Path]:
    """Transaction folders and temporary files of interrupted writes in ``folder``."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if p.name.startswith(TXN_PREFIX) or _LEGACY_TMP.match(p.name))


def recover(folder: str | os.PathLike, held: bool = False) -> list[str]:
    """Finish or undo the interrupted commits in ``folder`` and remove temporary files of
    killed runs; returns what was done (for messages and tests).

    ``held``: the caller holds the folder's lock (a writer): transactions whose owner is
    not running are handled and temporary files removed. Otherwise (a reader) the lock is
    taken for the time of the repair of dead writers' transactions (temporary files are
    left to the next writer), and nothing is done while another process holds it or the
    folder is read-only.
    """
    folder = Path(folder)
    found = leftovers(folder)
    if not held:   # a reader repairs dead writers' transactions only
        found = [p for p in found if p.name.startswith(TXN_PREFIX) and not _txn_owner_alive(p)]
    if not found:
        return []
    lock = None
    if not held and not _held_here(folder):
        try:
            lock = OutputLock(folder).acquire()
        except (ColloidcgError, OSError):
            return []
    done = []
    try:
        for p in found:
            if p.name.startswith(TXN_PREFIX):
                if _txn_owner_alive(p):
                    continue
                rec = p / "commit.json"
                try:
                    names = json.loads(rec.read_text())["names"] if rec.is_file() else None
                except (OSError, ValueError, KeyError, TypeError):
                    names = None
                try:
                    if names is not None:
                        _roll_forward(p, folder, list(names))
                        done.append(f"finished the interrupted commit of {', '.join(names)}")
                    else:
                        shutil.rmtree(p, ignore_errors=True)
                        done.append(f"removed the uncommitted {p.name}")
                except FileNotFoundError:   # another process repaired it meanwhile
                    continue
            elif held:   # temporaries carry no owner: only the folder's writer removes them
                if str(p) in _LIVE_TXNS:
                    continue
                _remove(p)
                done.append(f"removed the temporary {p.name}")
    finally:
        if lock is not None:
            lock.release()
    return done


def recover_tree(root: str | os.PathLike) -> list[str]:
    """:func:`recover` in ``root`` and every folder below it (a batch output, under its lock)."""
    done = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(TXN_PREFIX)]
        done += recover(dirpath, held=True)
    return done


# ----------------------------------------------------------------------------- locks
class OutputBusyError(ColloidcgError):
    """Another process writes into the same output folder."""


_HELD_LOCKS: set[str] = set()


def _held_here(folder: Path) -> bool:
    return str((Path(folder) / LOCK_NAME).resolve()) in _HELD_LOCKS


def _lock_info(path: Path, tries: int = 1) -> dict:
    """The holder's record in a lock file ({} when unreadable). With ``tries`` > 1 an empty
    or partial record is read again, 10 ms apart: a holder that has just taken the lock
    empties the file and writes its record a moment later."""
    import time

    rec: object = {}
    for k in range(tries):
        try:
            rec = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            rec = {}
        if isinstance(rec, dict) and "pid" in rec:
            return rec
        if k + 1 < tries:
            time.sleep(0.01)
    return rec if isinstance(rec, dict) else {}


class OutputLock:
    """An exclusive lock on an output folder: ``FOLDER/.colloidcg.lock``, holding the
    holder's process id, host, command and start time.

    The lock is an operating-system record lock on that file (``fcntl.lockf``), which the
    system releases when the holder dies, however it dies: a lock file left by a killed
    process is recognised as stale (nobody holds its lock) and taken over. Where there
    are no such locks (Windows) the file is created exclusively and a file naming a
    process that no longer runs is taken over. A second writer gets
    :class:`OutputBusyError`, one line naming the folder and the holder's process id.
    """

    def __init__(self, folder: str | os.PathLike, option: str = "-o"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.option = option
        self.fd: int | None = None
        self.stale: dict | None = None

    def _busy(self, info: dict) -> OutputBusyError:
        who = f"process {info.get('pid', '?')}"
        if info.get("host") and info.get("host") != socket.gethostname():
            who += f" on {info['host']}"
        what = f" ({info['command']}, since {info.get('started', '?')})" if info.get("command") else ""
        return OutputBusyError(
            f"{self.option} {self.folder}: in use by another colloidcg run, {who}{what}; wait for "
            "it to finish or choose another output folder (nothing was written)")

    def _record(self) -> bytes:
        import sys

        cmd = " ".join(["colloidcg"] + sys.argv[1:3]) if sys.argv else "colloidcg"
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": cmd,
                           "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}).encode()

    def acquire(self) -> "OutputLock":
        key = str(self.path.resolve())
        with _STATE:
            if key in _HELD_LOCKS:
                raise self._busy({"pid": os.getpid(), "command": "this process"})
        try:
            import fcntl
        except ImportError:   # pragma: no cover - Windows
            return self._acquire_exclusive(key)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._busy(_lock_info(self.path, tries=50)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:   # the previous holder removed the file while we opened it
                os.close(fd)
                continue
            old = os.read(fd, 4096)
            if old.strip():
                try:
                    self.stale = json.loads(old)
                except ValueError:
                    self.stale = {}
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, self._record())
            self.fd = fd
            with _STATE:
                _HELD_LOCKS.add(key)
            return self
        raise self._busy(_lock_info(self.path))   # pragma: no cover - constant churn

    def _acquire_exclusive(self, key: str) -> "OutputLock":   # pragma: no cover - Windows
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                info = _lock_info(self.path)
                if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", 0))):
                    self.stale = info
                    self.path.unlink(missing_ok=True)
                    continue
                raise self._busy(info) from None
            os.write(fd, self._record())
            self.fd = fd
            with _STATE:
                _HELD_LOCKS.add(key)
            return self
        raise self._busy(_lock_info(self.path))

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        with _STATE:
            _HELD_LOCKS.discard(str(self.path.resolve()))

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------- commands
def check_output_folder(folder: str | os.PathLike, option: str = "-o") -> Path:
    """Refuse, before any work, an output folder that cannot be made or written: one that
    is a file, lies under a file, or sits where nothing can be created. Creates nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ColloidcgError(f"{option} {folder}: exists and is not a folder; give a folder for "
                             "the outputs (nothing was written)")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ColloidcgError(f"{option} {folder}: {probe} is a file, not a folder (nothing was written)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ColloidcgError(f"{option} {folder}: cannot write in {probe} (permission denied; "
                             "nothing was written)")
    return folder


def _make_folder(folder: Path, option: str) -> list[Path]:
    """Create ``folder`` (and missing parents); returns the folders created, deepest first."""
    made = []
    p = folder
    while not p.exists() and p.parent != p:
        made.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ColloidcgError(f"{option} {folder}: cannot create the output folder "
                             f"({exc.strerror or exc}; nothing was written)") from None
    return made


@contextmanager
def output_folder(folder: str | os.PathLike, names: Iterable[str] = (), overwrite: bool = False,
                  option: str = "-o"):
    """The output folder of a command, for the time of its work; yields a :class:`Commit`.

    Before the work: the folder must be creatable and writable, its lock free (held until
    the end), and the result's ``names`` must not exist unless ``overwrite``; leftovers of
    killed runs in it are repaired (:func:`recover`). The result is committed when the
    block ends normally (or earlier by ``tx.commit()``); when the block raises, nothing is
    written: the transaction, the lock file and the folders this call made are removed.
    """
    folder = Path(folder)
    check_output_folder(folder, option)
    made = _make_folder(folder, option)
    ok = False
    try:
        try:
            lock = OutputLock(folder, option).acquire()
        except OSError as exc:
            raise ColloidcgError(f"{option} {folder}: cannot write there ({exc.strerror or exc}; "
                                 "nothing was written)") from None
        try:
            recover(folder, held=True)
            check_writable([folder / n for n in names], overwrite)
            with Commit(folder) as tx:
                yield tx
                if not tx.done:
                    tx.commit()
            ok = True
        finally:
            lock.release()
    finally:
        if not ok:
            for d in made:
                try:
                    d.rmdir()
                except OSError:
                    break
