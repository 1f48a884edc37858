"""Batch scoring of a fitted detector with Ray Data (an actor pool; one model load per actor).

    df = score_with_ray_data(det, X_test, labels=y_test, num_actors=4, num_gpus=1,
                             out_dir="s3://bucket/run/scores/ood")
    # df: index, score, score_<head>... (+ label), sorted by index; equal to det.score_samples(X_test)

The detector reaches the actors through the object store or the run's storage, never
through a path on the driver's disk (which actors on other nodes cannot open): a fitted
detector, its bytes (`to_bytes`) or a local file are read on the driver and `ray.put`
once; a storage URI (s3://, gs://, ...) is read by each actor with pyarrow.fs.
The images go in as Arrow tensor blocks of `block_size` images (several per actor, so
the pool is kept busy); `DetectorScorer` loads the detector once per actor and scores each
batch of `batch_size` images. The pool is sized with
`compute=ray.data.ActorPoolStrategy(size=num_actors)` (`concurrency=` is deprecated since
Ray 2.51). Ray Data writes the scores as Parquet straight to `out_dir` (a path or a
storage URI): no round trip through the driver. Scores do not depend on how images are
batched (the network is in eval mode), so they equal the local `score_samples` up to
float rounding.
"""

from __future__ import annotations

import numpy as np

PASSTHROUGH = ("index", "label")  # input columns copied to the output rows


def load_detector(source, device: str = "cpu"):
    """A fitted detector from its bytes, an ObjectRef to them, a storage URI or a path."""
    from ..detector import MultiTaskDetector
    from ..methods import method_names
    from .storage import is_uri, read_bytes

    method_names()  # registers every method's detector class, so load() can rebuild subclasses
    try:
        import ray

        if isinstance(source, ray.ObjectRef):
            source = ray.get(source)
    except ImportError:
        pass
    if isinstance(source, str) and is_uri(source):
        source = read_bytes(source)
    return MultiTaskDetector.load(source, device=device)


class DetectorScorer:
    """Ray Data callable class: `__call__({"image": (B, C, H, W) uint8, "index": (B,)})` -> scores.

    detector: the detector's bytes (or an ObjectRef to them: `ray.put(det.to_bytes())`), a storage
    URI of a saved detector, or (single machine only) a path.
    """

    def __init__(self, detector, device: str = "cpu"):
        self.detector = load_detector(detector, device=device)

    def __call__(self, batch: dict) -> dict:
        images = batch["image"]  # (B, C, H, W) uint8
        if not images.flags.writeable:  # Ray Data batches are read-only views; torch wants writable memory
            images = images.copy()
        if hasattr(self.detector, "score_samples_and_tasks"):
            score, heads = self.detector.score_samples_and_tasks(images)
        else:
            score, heads = self.detector.score_samples(images), {}
        out = {"index": np.asarray(batch["index"], np.int64), "score": np.asarray(score, np.float64)}
        out.update({f"score_{h}": np.asarray(s, np.float64) for h, s in heads.items()})
        if "label" in batch:
            out["label"] = np.asarray(batch["label"])
        return out


def images_dataset(images: np.ndarray, labels=None, *, block_size: int = 1024):
    """A Ray Dataset with columns image (tensor), index (and label), in blocks of `block_size` images."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W); got {images.shape}")
    tables = []
    for i in range(0, len(images), block_size):
        cols = {"image": ArrowTensorArray.from_numpy(np.ascontiguousarray(images[i:i + block_size])),
                "index": np.arange(i, min(i + block_size, len(images)), dtype=np.int64)}
        if labels is not None:
            cols["label"] = np.asarray(labels)[i:i + block_size]
        tables.append(pa.table(cols))
    return ray.data.from_arrow(tables)


def _detector_ref(detector):
    """What the actors get: a storage URI as is; anything on the driver (object, bytes, path) via ray.put."""
    import os

    import ray

    from .storage import is_local_path

    if isinstance(detector, ray.ObjectRef):
        return detector
    if isinstance(detector, (bytes, bytearray, memoryview)):
        return ray.put(bytes(detector))
    if isinstance(detector, (str, os.PathLike)):
        if not is_local_path(detector):
            return str(detector)  # s3://, gs://, ...: every actor reads it from the run's storage
        path = str(detector).removeprefix("file://")
        with open(path, "rb") as f:  # read here, on the driver: actors on other nodes cannot open this path
            return ray.put(f.read())
    if hasattr(detector, "to_bytes"):
        return ray.put(detector.to_bytes())
    raise TypeError(f"detector must be a fitted detector, its bytes, an ObjectRef, a path or a storage URI; "
                    f"got {type(detector).__name__}")


def score_with_ray_data(detector, images, labels=None, *, num_actors: int = 1, batch_size: int = 256,
                        num_gpus: float = 0, num_cpus: float | None = None, block_size: int | None = None,
                        out_dir=None, return_frame: bool = True):
    """Score `images` (N, C, H, W) with a fitted detector on `num_actors` Ray Data actors; a DataFrame by index.

    detector: a fitted detector, its bytes, an ObjectRef to them, a saved file (read here and sent
    through the object store) or a storage URI (read by each actor). num_gpus: GPUs per actor
    (fractional ok; the actors then score on cuda). out_dir: a path or storage URI (s3://...) that Ray
    Data writes the scores to as Parquet (a directory of files, overwritten on reruns); a plain path is
    refused on a multi-node cluster. labels: added as a column. return_frame=False: only write out_dir
    (nothing collected on the driver) and return None.
    """
    import ray.data

    from ..validation import check_images
    from .storage import absolute, check_storage_path

    images = check_images(images, name="images").numpy()  # NaN/inf, range, shape: fail here, not in an actor
    if num_actors < 1 or batch_size < 1:
        raise ValueError(f"num_actors and batch_size must be >= 1; got {num_actors}, {batch_size}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"labels has {len(labels)} entries for {len(images)} images")
    if out_dir is None and not return_frame:
        raise ValueError("return_frame=False needs out_dir: the scores would go nowhere")
    if out_dir is not None:
        check_storage_path(out_dir)
    source = _detector_ref(detector)
    block = block_size or max(batch_size, -(-len(images) // (4 * num_actors)))  # ~4 blocks per actor
    ds = images_dataset(images, labels, block_size=block)
    scored = ds.map_batches(
        DetectorScorer,
        fn_constructor_kwargs={"detector": source, "device": "cuda" if num_gpus else "cpu"},
        batch_size=int(batch_size),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_gpus=num_gpus or None,
        num_cpus=num_cpus,
    )
    if return_frame:
        scored = scored.materialize()  # scored once: written and collected from the same blocks
    if out_dir is not None:
        scored.write_parquet(absolute(out_dir), mode=ray.data.SaveMode.OVERWRITE)
    if not return_frame:
        return None
    return scored.to_pandas().sort_values("index", kind="stable").reset_index(drop=True)
