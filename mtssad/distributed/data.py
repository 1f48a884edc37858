"""Batch scoring of a saved detector with Ray Data (an actor pool; one model load per actor).

    df = score_with_ray_data("det.pt", X_test, labels=y_test, num_actors=4, num_gpus=1, out_dir="scores/")
    # df: index, score, score_<head>... (+ label), sorted by index; equal to det.score_samples(X_test)

The images go in as Arrow tensor blocks of `block_size` images (several per actor, so
the pool is kept busy); `DetectorScorer` loads `MultiTaskDetector.load(path)` once
per actor and scores each batch of `batch_size` images. The pool is sized with
`compute=ray.data.ActorPoolStrategy(size=num_actors)`: the `concurrency=` argument
that Ray's examples (and our style notes) show is deprecated since Ray 2.51.
Scores do not depend on how images are batched (the network is in eval mode), so
they equal the local `score_samples` up to float rounding.
"""

from __future__ import annotations

import numpy as np


class DetectorScorer:
    """Ray Data callable class: `__call__({"image": (B, C, H, W) uint8, "index": (B,)})` -> scores."""

    def __init__(self, detector_path, device: str = "cpu"):
        from ..detector import MultiTaskDetector
        from ..methods import method_names

        method_names()  # registers every method's detector class, so load() can rebuild subclasses
        self.detector = MultiTaskDetector.load(detector_path, device=device)

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
        return out


def images_dataset(images: np.ndarray, *, block_size: int = 1024):
    """A Ray Dataset with columns image (tensor) and index, in blocks of `block_size` images."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W); got {images.shape}")
    tables = [
        pa.table({"image": ArrowTensorArray.from_numpy(np.ascontiguousarray(images[i:i + block_size])),
                  "index": np.arange(i, min(i + block_size, len(images)), dtype=np.int64)})
        for i in range(0, len(images), block_size)
    ]
    return ray.data.from_arrow(tables)


def score_with_ray_data(detector_path, images, labels=None, *, num_actors: int = 1, batch_size: int = 256,
                        num_gpus: float = 0, num_cpus: float | None = None, block_size: int | None = None,
                        out_dir=None):
    """Score `images` (N, C, H, W) with a saved detector on `num_actors` Ray Data actors; a DataFrame by index.

    num_gpus: GPUs per actor (fractional ok; the actors then score on cuda). out_dir: also write the
    scores as Parquet there (a directory of files, overwritten on reruns). labels: added as a column.
    """
    import ray.data

    from ..validation import check_images

    images = check_images(images, name="images").numpy()  # NaN/inf, range, shape: fail here, not in an actor
    if num_actors < 1 or batch_size < 1:
        raise ValueError(f"num_actors and batch_size must be >= 1; got {num_actors}, {batch_size}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"labels has {len(labels)} entries for {len(images)} images")
    block = block_size or max(batch_size, -(-len(images) // (4 * num_actors)))  # ~4 blocks per actor
    ds = images_dataset(images, block_size=block)
    scored = ds.map_batches(
        DetectorScorer,
        fn_constructor_kwargs={"detector_path": str(detector_path), "device": "cuda" if num_gpus else "cpu"},
        batch_size=int(batch_size),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_gpus=num_gpus or None,
        num_cpus=num_cpus,
    ).materialize()
    df = scored.to_pandas().sort_values("index", kind="stable").reset_index(drop=True)
    if labels is not None:
        df["label"] = np.asarray(labels)[df["index"].to_numpy()]
    if out_dir is not None:
        ray.data.from_pandas(df).write_parquet(str(out_dir), mode=ray.data.SaveMode.OVERWRITE)
    return df
