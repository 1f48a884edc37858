"""Paths that hold on a cluster: joining the running Ray by default, refusing head-local storage on
several nodes, URIs and copies to the run's storage. No Ray is started here (decisions are unit-tested)."""

import pytest

from mtssad.distributed.session import connection_plan
from mtssad.distributed.storage import (StorageError, check_storage_path, copy_to_storage, join_uri, mount_fstype,
                                        publish_dir, read_bytes, write_bytes)

MOUNTS = """\
/dev/nvme0n1p1 / ext4 rw,relatime 0 0
fs-123.efs.us-west-2.amazonaws.com:/ /mnt/shared nfs4 rw,vers=4.1 0 0
tmpfs /tmp tmpfs rw 0 0
"""
ONE_NODE = [{"Alive": True}, {"Alive": False}]  # a dead node does not count
TWO_NODES = [{"Alive": True}, {"Alive": True}]


@pytest.mark.parametrize("address,local,env,running,expected", [
    (None, True, {"RAY_ADDRESS": "10.0.0.1:6379"}, "10.0.0.1:6379", "local"),  # --local wins
    ("10.0.0.2:6379", False, {}, None, ("join", "10.0.0.2:6379")),
    (None, False, {"RAY_ADDRESS": "auto"}, None, ("join", "auto")),  # inside `ray job submit`
    (None, False, {"RAY_ADDRESS": "ray://head:10001"}, None, ("join", "ray://head:10001")),
    (None, False, {}, "127.0.0.1:6379", ("join", "auto")),  # a `ray start` cluster on this machine
    (None, False, {"RAY_ADDRESS": ""}, "", "local"),  # nothing to join
])
def test_ray_session_joins_a_running_cluster_by_default(address, local, env, running, expected):
    how, what = connection_plan(address, local=local, env=env, running_cluster=running)
    if expected == "local":
        assert how == "local" and ("--local" in what if local else "no Ray cluster to join" in what)
    else:
        assert (how, what) == expected


def test_head_local_storage_is_refused_on_several_nodes_only():
    check_storage_path("/data/runs", nodes=ONE_NODE, mounts_text=MOUNTS)  # one node: any path works
    with pytest.raises(StorageError, match=r"storage path /data/runs is on this machine's own disk \(ext4 file "
                                           r"system\), but the Ray cluster has 2 alive nodes.*s3://.*shared"):
        check_storage_path("/data/runs", nodes=TWO_NODES, mounts_text=MOUNTS, shared=False)
    with pytest.raises(StorageError, match="file:///tmp/x|/tmp/x"):
        check_storage_path("file:///tmp/x", nodes=TWO_NODES, mounts_text=MOUNTS, shared=False)
    check_storage_path("/mnt/shared/runs", nodes=TWO_NODES, mounts_text=MOUNTS, shared=False)  # NFS/EFS mount
    check_storage_path("s3://bucket/runs?region=us-west-2", nodes=TWO_NODES, mounts_text=MOUNTS)
    check_storage_path("/data/runs", nodes=TWO_NODES, mounts_text=MOUNTS, shared=True)  # the user says it is shared


def test_shared_storage_can_be_declared_by_environment(monkeypatch):
    monkeypatch.setenv("MTSSAD_SHARED_STORAGE", "1")
    check_storage_path("/data/runs", nodes=TWO_NODES, mounts_text=MOUNTS)
    monkeypatch.setenv("MTSSAD_SHARED_STORAGE", "0")
    with pytest.raises(StorageError):
        check_storage_path("/data/runs", nodes=TWO_NODES, mounts_text=MOUNTS)


def test_mount_of_a_path_is_the_longest_prefix():
    assert mount_fstype("/mnt/shared/a/b", MOUNTS) == "nfs4"
    assert mount_fstype("/mnt/sharedx", MOUNTS) == "ext4"  # a sibling name is not inside the mount
    assert mount_fstype("/tmp", MOUNTS) == "tmpfs"


def test_join_uri_keeps_schemes_and_queries(tmp_path):
    assert join_uri("s3://bucket/run", "sweep", "results") == "s3://bucket/run/sweep/results"
    assert join_uri("s3://bucket/run/?region=us-west-2", "a.pt") == "s3://bucket/run/a.pt?region=us-west-2"
    assert join_uri(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")


def test_copy_to_storage_and_bytes_round_trip_through_uris(tmp_path):
    src = tmp_path / "out"
    (src / "scores").mkdir(parents=True)
    (src / "results.parquet").write_bytes(b"rows")
    (src / "scores" / "c0.parquet").write_bytes(b"scores")
    (src / ".results.parquet.lock").write_bytes(b"")  # ResultsStore's writers' lock: not part of the results
    dest = f"file://{tmp_path}/store/sweep-results"
    assert copy_to_storage(src, dest) == dest
    assert (tmp_path / "store" / "sweep-results" / "scores" / "c0.parquet").read_bytes() == b"scores"
    assert sorted(p.name for p in (tmp_path / "store" / "sweep-results").iterdir()) == ["results.parquet", "scores"]
    uri = write_bytes(join_uri(f"file://{tmp_path}/store", "detectors", "c0.pt"), b"\x00weights")
    assert read_bytes(uri) == b"\x00weights" and (tmp_path / "store" / "detectors" / "c0.pt").exists()
    with pytest.raises(ValueError, match="recurse"):
        copy_to_storage(src, src / "ray" / "results")


def test_publish_skips_storage_inside_the_results_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("# report")
    assert publish_dir(out, out / "ray", "sweep-results") is None  # the default storage: already in place
    dest = publish_dir(out, tmp_path / "store", "sweep-results")
    assert (tmp_path / "store" / "sweep-results" / "report.md").read_text() == "# report" and dest


def test_sweep_picks_ddp_by_the_largest_fit_set_only_when_workers_are_left_open():
    import numpy as np

    from mtssad.distributed.train import DDP_MIN_FIT_IMAGES
    from mtssad.distributed.tune import sweep_workers

    small = np.repeat(np.arange(200), 30)  # CUB-200: ~30 training images per class
    big = np.repeat(np.arange(10), 5000)  # CIFAR-10: 5,000 per class
    assert sweep_workers(None, small, list(range(200)), 0.2) == 1  # in the class trial's own process
    assert sweep_workers(None, big, [3], 0.2) == 2  # 4,000 fit images >= DDP_MIN_FIT_IMAGES: DDP
    assert 4000 >= DDP_MIN_FIT_IMAGES > 24
    assert sweep_workers(1, big, [3], 0.2) == 1 and sweep_workers(3, small, [0], 0.2) == 3  # asked: granted
