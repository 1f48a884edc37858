"""The run's storage: URIs (s3://, gs://, file://) or paths, read and written with pyarrow.fs.

    uri = join_uri(storage_path, "sweep", "results")          # s3://bucket/mtssad/sweep/results
    copy_to_storage("runs/sweep", uri)                         # results.parquet, scores/, report.md, plots
    write_bytes(join_uri(storage_path, "detectors", "c3.pt"), det.to_bytes())
    check_storage_path(storage_path)                           # on a multi-node cluster: refuse a head-local path

A plain path is a directory of this machine. On a cluster of several nodes every
node must reach the run's storage (Train checkpoints, Ray Data Parquet, results):
an s3:// / gs:// URI, or a path on a shared mount (NFS, EFS, Lustre, ...) present
on every node. `check_storage_path` refuses a plain path on a multi-node cluster
unless the mount holding it is a network file system (read from /proc/self/mounts)
or the caller says it is shared (`shared=True`, `MTSSAD_SHARED_STORAGE=1`).
Importing this module imports no Ray (pyarrow is imported on first use).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path

log = logging.getLogger(__name__)

# File systems that a path on several nodes can share (fstype column of /proc/self/mounts).
SHARED_FS_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "glusterfs",
                             "cephfs", "ceph", "fuse.s3fs", "fuse.gcsfuse", "fuse.mountpoint-s3", "fuse.juicefs",
                             "fuse.sshfs", "9p", "efs", "fuse.efs", "wekafs", "panfs", "fuse.glusterfs"})
SHARED_ENV = "MTSSAD_SHARED_STORAGE"  # "1": the plain storage path is on a mount every node has


LOCK_SUFFIX = ".lock"  # writers' lock files (ResultsStore's .results.parquet.lock): of the writing machine, not the run


class StorageError(ValueError):
    """A storage path that cannot hold a run on this cluster (e.g. head-local on several nodes)."""


def is_uri(path) -> bool:
    """True for scheme://... (s3://, gs://, file://, hdfs://); False for a plain path (also C:\\ on Windows)."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", str(path)))


def is_local_path(path) -> bool:
    """A path of this machine's file system: a plain path or a file:// URI."""
    return not is_uri(path) or str(path).startswith("file://")


def join_uri(base, *parts: str) -> str:
    """base/part/part for URIs and paths; a URI's ?query (e.g. ?region=us-west-2) stays at the end."""
    base = str(base)
    parts = tuple(str(p).strip("/") for p in parts if str(p))
    if not is_uri(base):
        return os.path.join(os.path.expanduser(base), *parts)
    head, sep, query = base.partition("?")
    return posixpath.join(head, *parts) + sep + query


def absolute(path) -> str:
    """A URI unchanged; a plain path made absolute (~ expanded): what Ray Train and Tune want as storage_path."""
    return str(path) if is_uri(path) else os.path.abspath(os.path.expanduser(str(path)))


def filesystem(uri):
    """(pyarrow FileSystem, path inside it) for a URI or a plain path."""
    import pyarrow.fs as pafs

    if not is_uri(uri):
        return pafs.LocalFileSystem(), absolute(uri)
    return pafs.FileSystem.from_uri(str(uri))


def read_bytes(uri) -> bytes:
    """The whole file at `uri` (a URI or a path)."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri, data: bytes) -> str:
    """Write `data` to the file `uri` (parent directories created); returns uri."""
    fs, path = filesystem(uri)
    fs.create_dir(posixpath.dirname(path) if is_uri(uri) else os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)
    return str(uri)


def copy_to_storage(local_dir, storage_uri) -> str:
    """Copy the directory tree `local_dir` into `storage_uri` (files overwritten, others kept); return storage_uri.

    Nothing is copied when both name the same local directory. Writers' lock files (`*.lock`) are left out.
    Use it to send a run's results, per-image scores and report to the run's storage after (or while) it is
    written on the driver.
    """
    import pyarrow.fs as pafs

    if not os.path.isdir(local_dir):
        raise FileNotFoundError(f"copy_to_storage: {local_dir} is not a directory")
    src = os.path.abspath(local_dir)
    dest_fs, dest = filesystem(storage_uri)
    if isinstance(dest_fs, pafs.LocalFileSystem):
        real_src, real_dest = os.path.realpath(src), os.path.realpath(dest)
        if real_dest == real_src:
            return str(storage_uri)
        if real_dest.startswith(real_src + os.sep):
            raise ValueError(f"copy_to_storage: {storage_uri} is inside {local_dir}; copying would recurse")
    dest_fs.create_dir(dest, recursive=True)
    pafs.copy_files(src, dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dest_fs)
    for lock in sorted(Path(src).rglob(f"*{LOCK_SUFFIX}")):  # copy_files takes no filter: drop the writers' locks
        try:
            dest_fs.delete_file(posixpath.join(dest, lock.relative_to(src).as_posix()))
        except FileNotFoundError:
            pass
    log.info("copied %s -> %s", src, storage_uri)
    return str(storage_uri)


def publish_dir(local_dir, storage_path, *parts: str) -> str | None:
    """Copy `local_dir` to storage_path/parts... unless the storage is a local path that holds it or is inside it.

    The sweep's and jobs' results (results.parquet, scores/, report.md, plots) are written on the driver;
    this sends them where the run's checkpoints are. Returns the destination, or None when nothing was copied
    (the default storage OUTDIR/ray sits inside the results directory, which is then already in place).
    """
    if is_local_path(storage_path):
        src = os.path.realpath(local_dir)
        dest = os.path.realpath(absolute(str(storage_path).removeprefix("file://")))
        if dest == src or dest.startswith(src + os.sep) or src.startswith(dest + os.sep):
            return None
    return copy_to_storage(local_dir, join_uri(storage_path, *parts))


def mount_fstype(path, mounts_text: str | None = None) -> str | None:
    """The fstype of the mount holding `path` (longest mount point prefix in /proc/self/mounts); None if unknown."""
    path = absolute(path)
    if mounts_text is None:  # this machine: follow symlinks to the mount that really holds the path
        try:
            with open("/proc/self/mounts") as f:
                mounts_text = f.read()
        except OSError:
            return None
        path = os.path.realpath(path)
    best, fstype = "", None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, fields[2]
    return fstype


def alive_nodes(nodes=None) -> int:
    """Alive nodes of the connected Ray cluster (ray.nodes()), or of the given node list."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    return sum(1 for n in nodes if n.get("Alive", n.get("alive", False)))


def check_storage_path(storage_path, *, nodes=None, shared: bool | None = None, mounts_text: str | None = None) -> None:
    """Refuse a head-local storage path on a cluster of more than one alive node (StorageError naming it).

    nodes: ray.nodes() (read from the connected cluster when None). shared: the caller knows the path is
    on a mount every node has (default: $MTSSAD_SHARED_STORAGE == "1"). A plain path on a network file
    system (SHARED_FS_TYPES) passes; s3://, gs://, ... always pass.
    """
    if not is_local_path(storage_path):
        return
    n = alive_nodes(nodes)
    if n <= 1:
        return
    if shared is None:
        shared = os.environ.get(SHARED_ENV, "") == "1"
    path = str(storage_path)[len("file://"):] if str(storage_path).startswith("file://") else str(storage_path)
    fstype = mount_fstype(path, mounts_text)
    if shared or (fstype in SHARED_FS_TYPES):
        return
    raise StorageError(
        f"storage path {absolute(path)} is on this machine's own disk ({fstype or 'unknown'} file system), but the "
        f"Ray cluster has {n} alive nodes: workers on other nodes cannot write checkpoints or results there. "
        f"Pass --storage-path s3://BUCKET/PREFIX (or gs://...), or a path on a mount every node has "
        f"(NFS/EFS; set {SHARED_ENV}=1 if it is shared but not recognised)")


__all__ = ["is_uri", "is_local_path", "join_uri", "absolute", "filesystem", "read_bytes", "write_bytes",
           "copy_to_storage", "publish_dir", "check_storage_path", "mount_fstype", "alive_nodes", "StorageError",
           "SHARED_FS_TYPES", "SHARED_ENV"]
