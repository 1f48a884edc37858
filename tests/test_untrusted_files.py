"""Files under --data-root are data, never code: a crafted CIFAR pickle is refused before its payload runs."""

import pickle

import numpy as np
import pytest

from mtssad.data import DataError, load_dataset


class _Payload:
    """Unpickling this calls open(marker, "w"): a file appears if the loader runs code from the pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cifar10_root(tmp_path, poisoned: dict):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072)).astype(np.uint8), b"labels": [0, 1],
                 b"batch_label": b"training batch", b"filenames": [b"a.png", b"b.png"]}
        batch.update(poisoned.get(name, {}))
        for protocol in (2,) if name == "data_batch_1" else (pickle.HIGHEST_PROTOCOL,):  # both pickle dialects
            (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return d


@pytest.mark.parametrize("where", ["data_batch_3", "test_batch"])
def test_crafted_cifar_pickle_is_refused_and_its_payload_never_runs(tmp_path, where):
    marker = tmp_path / "payload_ran"
    _cifar10_root(tmp_path, {where: {b"labels": _Payload(marker)}})
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    msg = str(e.value)
    assert f"refusing CIFAR pickle {tmp_path / 'cifar-10-batches-py' / where}" in msg
    assert "it asks for io.open" in msg and "only numpy arrays, lists, dicts, bytes and str" in msg
    assert "nothing in it was executed" in msg


def test_clean_cifar_pickles_in_both_protocols_still_load(tmp_path):
    _cifar10_root(tmp_path, {})
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_images.shape == (10, 3, 32, 32) and ds.test_images.shape == (2, 3, 32, 32)
