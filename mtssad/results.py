"""Results are data: one Parquet row per (dataset, normal class, method, config, data selection, seed).

`ResultsStore(outdir)` owns OUTDIR/results.parquet plus the per-run side files
(OUTDIR/scores/<name>.parquet, OUTDIR/<name>.json for histories). Every write
is atomic (temp file in the same directory, flush + fsync, os.replace), so a
killed process leaves either the old file or the new one, never half of one.
The atomic helpers are exported for the rest of the package (detector files).

Several processes may write to one OUTDIR: `append` holds an exclusive lock
(OUTDIR/.results.parquet.lock, `filelock`) around its read-merge-rewrite, so
no process drops another's rows; readers take no lock and read the file through
one handle, so a rewrite racing a read yields the old or the new file, never an
error. Side-file names are a readable slug plus a hash of the exact row key, so
names that differ only in non-ASCII characters or spaces never share a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

import filelock
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CorruptFileError, DiskFullError, OutputDirError, is_disk_full

__all__ = [
    "HEAD_PREFIX", "KEY_COLUMNS", "RESULT_COLUMNS", "ResultsFileError", "ResultsStore",
    "atomic_write_bytes", "atomic_write_parquet", "file_name", "row_key", "run_name", "save_run",
]

# The ordered schema of results.parquet. Columns beyond these (e.g. val_auroc)
# are kept after them; per-head AUROCs (HEAD_PREFIX + head name) come last.
RESULT_COLUMNS: dict[str, pa.DataType] = {
    "dataset": pa.string(),  # registry name, or "<in>-vs-<out>" for OOD
    "normal_class": pa.string(),  # class name ("all" for OOD)
    "method": pa.string(),  # method registry name (ours, mhrot, geotrans, ocsvm, iforest, ...)
    "grid": pa.string(),  # jigsaw grid "n_hxn_w", null for methods without jigsaw
    "k": pa.int64(),  # jigsaw permutation count, null without jigsaw
    "seed": pa.int64(),
    "auroc": pa.float64(),  # fractions in [0, 1]; the report shows percent
    "aupr": pa.float64(),  # AUPR-out (anomalies positive)
    "eer": pa.float64(),
    "apcer_at_5bpcer": pa.float64(),
    "n_train": pa.int64(),
    "n_test": pa.int64(),
    "train_seconds": pa.float64(),
    "score_seconds": pa.float64(),
    "config": pa.string(),  # JSON of the full method config (sorted keys); part of the row key
    # JSON of the data selection (load_dataset arguments, data root resolved, val_fraction); part of the row key
    "data": pa.string(),
    "selected": pa.bool_(),  # sweeps: the config chosen on validation data; null outside sweeps
    "split": pa.string(),  # "test" (one-vs-all), "ood", ...
}
KEY_COLUMNS = ("dataset", "normal_class", "method", "config", "data", "seed")
# rows written before the data column have none; they count as data "" (never equal to a new row's)
_OPTIONAL_KEY = ("data",)
HEAD_PREFIX = "auroc_head_"


class ResultsFileError(CorruptFileError):
    """A results, scores or history file that cannot be used (corrupt, wrong columns); the message names it."""


# ---------------------------------------------------------------- atomic writes

_UMASK = os.umask(0o022)
os.umask(_UMASK)

@contextlib.contextmanager
def _atomic_open(path):
    """Yield a binary file in path's directory; on success fsync it and os.replace it onto path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_disk_full(e):  # ENOSPC/EDQUOT from write, flush or fsync: the old file is kept (never half a file)
            kept = "the previous version of the file is kept" if path.exists() else "the file was not written"
            raise DiskFullError(f"disk full while writing {path} ({e}); {kept}") from e
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every OS)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parent directories created)."""
    with _atomic_open(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_parquet(table_or_df, path) -> Path:
    """Write a pyarrow Table or pandas DataFrame (index dropped) to `path` as Parquet, atomically."""
    table = table_or_df
    if isinstance(table_or_df, pd.DataFrame):
        table = pa.Table.from_pandas(table_or_df, preserve_index=False)
    elif not isinstance(table_or_df, pa.Table):
        raise TypeError(f"expected a pyarrow.Table or pandas.DataFrame; got {type(table_or_df).__name__}")
    with _atomic_open(path) as f:
        pq.write_table(table, f)
    return Path(path)


# ---------------------------------------------------------------- rows

def _config_text(config) -> str:
    return config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=list)


def row_key(row) -> tuple:
    """(dataset, normal_class, method, config, data, seed): the identity of one result row.

    Everything that changes a result is in it: the method's full config and the data selection
    (which images, at which size); a row whose key differs is a new result, never a rerun of this one.
    """
    missing = [c for c in KEY_COLUMNS if c not in _OPTIONAL_KEY and (c not in row or _is_null(row[c]))]
    if missing:
        needed = [c for c in KEY_COLUMNS if c not in _OPTIONAL_KEY]
        raise ValueError(f"a result row needs {', '.join(needed)}; missing {', '.join(missing)}")
    data = row.get("data")
    return (str(row["dataset"]), str(row["normal_class"]), str(row["method"]),
            _config_text(row["config"]), "" if _is_null(data) else _config_text(data), int(row["seed"]))


def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.") or "x"


def file_name(parts, identity) -> str:
    """A file-safe name: readable ASCII slugs of `parts` joined by '_', then 12 hex digits of sha1(identity).

    The slugs are for people ('cat dog' reads 'cat-dog', as 'cat-dog' does; '猫' and '犬' both read 'x');
    the hash of the exact identity (any JSON-able value) keeps names that slug alike apart.
    """
    digest = hashlib.sha1(json.dumps(identity, ensure_ascii=False, default=str).encode()).hexdigest()[:12]
    return "_".join([*(_slug(p) for p in parts), digest])


def run_name(row) -> str:
    """A file-safe name for one run's side files (scores, history), unique per row key."""
    key = row_key(row)
    if not key[4]:  # a row written before the data column: the name its files were written under
        digest = hashlib.sha1(key[3].encode()).hexdigest()[:8]
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{key[0]}_{key[1]}_{key[2]}_s{key[5]}_{digest}")
    return file_name([key[0], key[1], key[2], f"s{key[5]}"], list(key))


def _is_null(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _coerce(v, t: pa.DataType):
    """One cell to the python value pyarrow expects for type t (null-like -> None)."""
    if _is_null(v):
        return None
    if pa.types.is_string(t):
        return _config_text(v) if isinstance(v, dict) else str(v)
    if pa.types.is_integer(t):
        return int(v)
    if pa.types.is_floating(t):
        return float(v)
    if pa.types.is_boolean(t):
        return bool(v)
    return v.item() if isinstance(v, np.generic) else v


def _column_type(name: str, values: list, old: pa.Schema | None) -> pa.DataType:
    """Type of a column outside RESULT_COLUMNS: per-head -> float64, else the file's, else inferred."""
    if name.startswith(HEAD_PREFIX):
        return pa.float64()
    if old is not None and name in old.names:
        return old.field(name).type
    present = [v for v in values if not _is_null(v)]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in present):
        return pa.int64()
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in present):
        return pa.float64()
    return pa.string()


def _ordered_columns(names) -> list[str]:
    """Schema columns first, then other extras (in first-seen order), per-head AUROCs last (sorted)."""
    extras = [n for n in dict.fromkeys(names) if n not in RESULT_COLUMNS]
    heads = sorted(n for n in extras if n.startswith(HEAD_PREFIX))
    return [*RESULT_COLUMNS, *(n for n in extras if not n.startswith(HEAD_PREFIX)), *heads]


def _to_table(rows: list[dict], old: pa.Schema | None = None) -> pa.Table:
    names = _ordered_columns([n for r in rows for n in r])
    arrays, fields = [], []
    for n in names:
        values = [r.get(n) for r in rows]
        t = RESULT_COLUMNS.get(n) or _column_type(n, values, old)
        arrays.append(pa.array([_coerce(v, t) for v in values], type=t))
        fields.append(pa.field(n, t))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def _to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas keeping nullable ints/bools (k, selected) as Int64/boolean, not float/object."""
    return table.to_pandas(types_mapper=_NULLABLE.get)


# ---------------------------------------------------------------- the store

class ResultsStore:
    """OUTDIR/results.parquet and its side files; safe to append after every run."""

    def __init__(self, outdir):
        self.outdir = Path(outdir).expanduser()
        self.path = self.outdir / "results.parquet"
        self._check_writable()

    def _check_writable(self) -> None:
        """Fail now, not after hours of training, when the directory cannot take files."""
        try:
            if self.outdir.exists() and not self.outdir.is_dir():
                raise NotADirectoryError(f"{self.outdir} exists and is not a directory")
            self.outdir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.outdir, prefix=".write-probe.")
            os.close(fd)
            os.unlink(probe)
        except PermissionError as e:
            raise PermissionError(f"results directory {self.outdir} is not writable: {e}") from e
        except OSError as e:
            if is_disk_full(e):
                raise DiskFullError(f"disk full: cannot create files in {self.outdir} ({e})") from e
            raise OutputDirError(f"results directory {self.outdir} cannot be used: expected a writable "
                                 f"directory (or a path where one can be created); got {e}") from e

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.outdir)!r})"

    def _lock(self) -> filelock.FileLock:
        """The writers' lock: held around every read-merge-rewrite of results.parquet."""
        return filelock.FileLock(str(self.outdir / f".{self.path.name}.lock"))

    def _read_table(self) -> pa.Table | None:
        try:  # one handle, read whole: a concurrent os.replace cannot mix two files' bytes
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as e:
            raise ResultsFileError(f"{self.path} is not a readable Parquet results file ({e}); "
                                   "move it aside or delete it to start afresh") from e
        missing = [c for c in KEY_COLUMNS if c not in _OPTIONAL_KEY and c not in table.column_names]
        if missing:
            raise ResultsFileError(f"{self.path}: expected the key columns {', '.join(KEY_COLUMNS)}; "
                                   f"missing {', '.join(missing)} (got {', '.join(table.column_names)})")
        return table

    def load(self) -> pd.DataFrame:
        """All rows as a DataFrame (an empty one with the schema's columns when there is no file yet)."""
        table = self._read_table()
        if table is None:
            table = pa.schema(list(RESULT_COLUMNS.items())).empty_table()
        return _to_frame(table)

    def done_keys(self) -> set[tuple]:
        """The row keys already stored (to skip finished runs)."""
        table = self._read_table()
        if table is None:
            return set()
        return {row_key(r) for r in table.select([c for c in KEY_COLUMNS if c in table.column_names]).to_pylist()}

    def has(self, key) -> bool:
        """Whether a row with this key (a tuple from row_key, or a row dict) is stored."""
        return (row_key(key) if isinstance(key, dict) else tuple(key)) in self.done_keys()

    def append(self, rows: list[dict]) -> pd.DataFrame:
        """Add rows (a newer row replaces a stored one with the same key); rewrite the file atomically.

        The read-merge-rewrite holds the writers' lock, so concurrent appends from several processes
        all keep their rows.
        """
        if isinstance(rows, dict):
            rows = [rows]
        new = []
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise TypeError(f"append expects a list of dicts; item {i} is a {type(r).__name__}")
            row_key(r)  # validates the key columns
            r = {**r, "config": _config_text(r["config"])}
            r.setdefault("split", "test")
            new.append(r)
        with self._lock():
            table = self._read_table()
            old_rows = table.to_pylist() if table is not None else []
            merged = {row_key(r): r for r in [*old_rows, *new]}  # dict keeps first position, last value
            out = _to_table(list(merged.values()), table.schema if table is not None else None)
            atomic_write_parquet(out, self.path)
        return _to_frame(out)

    # side files -------------------------------------------------------------
    def _side_path(self, name: str, sub: str, suffix: str) -> Path:
        rel = Path(str(name) + suffix)
        if not str(name) or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"expected a relative file name without '..'; got {name!r}")
        return self.outdir / sub / rel

    def scores_path(self, name: str) -> Path:
        return self._side_path(name, "scores", ".parquet")

    def write_scores(self, name: str, frame) -> Path:
        """Per-image scores (index, label, is_normal, score, score_<head>...) -> OUTDIR/scores/<name>.parquet."""
        if isinstance(frame, dict):
            frame = pd.DataFrame(frame)
        return atomic_write_parquet(frame, self.scores_path(name))

    def read_scores(self, name: str) -> pd.DataFrame | None:
        return read_scores_file(self.scores_path(name))

    def json_path(self, name: str) -> Path:
        return self._side_path(name, ".", ".json")

    def write_json(self, name: str, obj) -> Path:
        """Any JSON-able object (numpy scalars/arrays allowed) -> OUTDIR/<name>.json, atomically."""
        text = json.dumps(obj, indent=1, default=_json_default)
        return atomic_write_bytes(self.json_path(name), text.encode())

    def read_json(self, name: str):
        """The JSON side file (e.g. a run's history), None when absent; ResultsFileError naming it when damaged."""
        path = self.json_path(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ResultsFileError(f"{path} is not a readable JSON side file ({type(e).__name__}: {str(e)[:120]}); "
                                   f"delete it and run `mtssad report {self.outdir}` again (that run's task curves "
                                   "are then left out), or rerun that run with --overwrite") from e


def save_run(store: ResultsStore, out) -> None:
    """Persist one run (a protocols.RunOutput): scores and history first, then the row (so a listed row always
    has its files)."""
    name = run_name(out.row)
    store.write_scores(name, out.scores)
    if out.history:
        store.write_json(f"history/{name}", out.history)
    store.append([out.row])


def read_scores_file(path) -> pd.DataFrame | None:
    """A per-image scores file, None when absent; ResultsFileError naming it when damaged."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ResultsFileError(f"{path} is not a readable scores file ({type(e).__name__}: {str(e)[:120]}); "
                               f"delete it and run `mtssad report {path.parent.parent}` again (that run's ROC curve "
                               "is then left out), or rerun that run with --overwrite") from e


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")
