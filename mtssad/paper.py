"""The paper's published numbers, as data, so reports can put ours beside theirs.

Source: Jézéquel, Vu, Beaudet, Histace, "Fine-grained anomaly detection via
multi-task self-supervision", AVSS 2021 (text in shared/paper/). All values are
percent. Tables:
- Table 2: AUROC, mean over normal classes, one-vs-all (CIFAR-100 on its 20 superclasses);
- Table 3: CIFAR-10 AUROC per normal class (its "Avg" column is the CIFAR-10 mean);
- Table 4: ablation, geometric heads only / jigsaw only / both;
- Table 5: SiW-M AUROC, EER and APCER at 5% BPCER (ours and MHRot);
- Table 6: out-of-distribution AUROC with CIFAR-10 as the in-distribution.

Keys: data set names match our data registry (mnist, fashion-mnist, cifar10,
cifar100, cub200) plus "foundertype200" and "siwm" for the sets loaded through
imagefolder; method names match our method registry (ours, mhrot, geotrans,
ocsvm, iforest, geometric, jigsaw, rotnet; deepsad-<pct> for Deep SAD with that
percentage of anomaly subclasses seen).
Note the paper's own inconsistency: MHRot on SiW-M is 83.1 in Tables 2 and 4
but 83.0 in Table 5; PAPER_AUROC keeps Table 2, PAPER_SIWM keeps Table 5.
"""

from __future__ import annotations

__all__ = [
    "CITATION", "PAPER_AUROC", "PAPER_CIFAR10_PER_CLASS", "PAPER_OOD", "PAPER_SIWM",
    "paper_auroc", "paper_dataset_key", "paper_siwm",
]

CITATION = ("Jézéquel, Vu, Beaudet, Histace, \"Fine-grained anomaly detection via multi-task "
            "self-supervision\", AVSS 2021")

_TABLE2_COLUMNS = ("cifar100", "mnist", "fashion-mnist", "cub200", "foundertype200", "siwm")
_TABLE2 = {  # method: values in _TABLE2_COLUMNS order; None = "-" in the paper
    "deepsad-75": (88.7, 99.9, 98.1, 73.6, 99.8, 85.4),
    "deepsad-25": (87.9, 98.5, 95.4, 70.9, 99.4, 76.0),
    "deepsad-10": (89.1, 96.5, 88.2, 66.1, 98.0, 80.6),
    "adgan": (54.7, 94.7, 88.4, None, None, None),
    "ganomaly": (56.5, 92.8, 80.9, None, None, None),
    "arnet": (78.8, 98.3, 93.9, None, None, None),
    "ocsvm": (None, 84.7, 74.2, 76.3, None, None),
    "iforest": (None, 87.1, 84.0, 74.2, None, None),
    "piad": (78.8, 98.1, 94.3, 63.5, None, 81.2),
    "geotrans": (84.7, 96.9, 92.6, 66.6, 92.3, 81.1),
    "mhrot": (83.6, 95.2, 92.5, 77.6, 96.7, 83.1),
    "ours": (85.8, 96.0, 92.8, 83.2, 96.9, 88.4),
}

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_TABLE3 = {  # method: per class in _CIFAR10_CLASSES order, then the mean
    "vae": (70.0, 38.6, 67.9, 53.5, 74.8, 52.3, 68.7, 49.3, 69.6, 38.6, 58.3),
    "ocsvm": (63.0, 44.0, 64.9, 48.7, 73.5, 50.0, 72.5, 53.3, 64.9, 50.8, 58.5),
    "anogan": (67.1, 54.7, 52.9, 54.5, 65.1, 60.3, 58.5, 62.5, 75.8, 66.5, 61.8),
    "pixelcnn": (53.1, 99.5, 47.6, 51.7, 73.9, 54.2, 59.2, 78.9, 34.0, 66.2, 61.8),
    "deep-svdd": (61.7, 65.9, 50.8, 59.1, 60.9, 65.7, 67.7, 67.3, 75.9, 73.1, 64.8),
    "ocgan": (75.7, 53.1, 64.0, 62.0, 72.3, 62.0, 72.3, 57.5, 82.0, 55.4, 65.6),
    "puzzle-ae": (78.9, 78.0, 69.9, 54.8, 75.4, 66.0, 74.7, 73.3, 83.3, 69.9, 72.4),
    "drocc": (81.7, 76.7, 66.7, 67.1, 73.6, 74.4, 74.4, 71.4, 80.0, 76.2, 74.2),
    "geotrans": (74.7, 95.7, 78.1, 72.4, 87.8, 87.8, 83.4, 95.5, 93.3, 91.3, 86.0),
    "ours": (75.1, 96.3, 84.8, 74.2, 91.1, 89.9, 88.7, 95.5, 94.7, 91.9, 88.2),
}

_TABLE4 = {  # ablation: (cifar100, cub200, siwm)
    "geometric": (83.6, 77.6, 83.1),
    "jigsaw": (80.1, 78.5, 76.3),
}

# (dataset, method) -> mean AUROC % over normal classes
PAPER_AUROC: dict[tuple[str, str], float] = {
    (ds, m): v for m, vals in _TABLE2.items() for ds, v in zip(_TABLE2_COLUMNS, vals) if v is not None
}
PAPER_AUROC.update({("cifar10", m): vals[-1] for m, vals in _TABLE3.items()})
PAPER_AUROC.update({(ds, m): v for m, vals in _TABLE4.items() for ds, v in zip(("cifar100", "cub200", "siwm"), vals)})

# (normal class name, method) -> CIFAR-10 AUROC % for that normal class (Table 3)
PAPER_CIFAR10_PER_CLASS: dict[tuple[str, str], float] = {
    (c, m): v for m, vals in _TABLE3.items() for c, v in zip(_CIFAR10_CLASSES, vals[:-1])
}

# method -> {"auroc", "eer", "apcer_at_5bpcer"} in %, SiW-M (Table 5)
PAPER_SIWM: dict[str, dict[str, float]] = {
    "mhrot": {"auroc": 83.0, "eer": 21.6, "apcer_at_5bpcer": 77.5},
    "ours": {"auroc": 88.4, "eer": 18.7, "apcer_at_5bpcer": 39.1},
}

# (in-distribution, out-of-distribution, method) -> AUROC % (Table 6)
PAPER_OOD: dict[tuple[str, str, str], float] = {
    ("cifar10", ood, m): v
    for m, vals in {
        "vae": (2.4, 52.8), "deep-svdd": (14.5, 52.1), "pixelcnn": (15.8, 52.4),
        "rotnet": (97.9, 81.2), "ours": (98.8, 83.4), "csi": (99.8, 89.2),
    }.items()
    for ood, v in zip(("svhn", "cifar100"), vals)
}

_ALIASES = {
    "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist", "f-mnist": "fashion-mnist",
    "cifar-10": "cifar10", "cifar-100": "cifar100", "cifar100-20": "cifar100",
    "cub": "cub200", "cub-200": "cub200", "cub200-2011": "cub200", "caltech-birds": "cub200",
    "fonts": "foundertype200", "foundertype": "foundertype200", "foundertype-200": "foundertype200",
    "siw-m": "siwm",
}


def paper_dataset_key(dataset: str) -> str:
    """Our data set name -> the key used in these tables (case, '_' and common aliases folded)."""
    key = str(dataset).strip().lower().replace("_", "-")
    return _ALIASES.get(key, _ALIASES.get(key.replace("-", "_"), key))


def paper_auroc(dataset: str, method: str, normal_class: str | None = None) -> float | None:
    """The paper's AUROC % for (dataset, method), or None where it reports none.

    dataset "<in>-vs-<out>" (our OOD rows) reads Table 6. With normal_class,
    returns the per-class figure (only CIFAR-10 has them, Table 3).
    """
    ds, m = paper_dataset_key(dataset), str(method).strip().lower()
    if "-vs-" in ds:
        ind, ood = ds.split("-vs-", 1)
        return PAPER_OOD.get((paper_dataset_key(ind), paper_dataset_key(ood), m))
    if normal_class is not None:
        return PAPER_CIFAR10_PER_CLASS.get((str(normal_class), m)) if ds == "cifar10" else None
    return PAPER_AUROC.get((ds, m))


def paper_siwm(method: str, metric: str) -> float | None:
    """The paper's SiW-M figure in % for metric in auroc / eer / apcer_at_5bpcer (Table 5)."""
    return PAPER_SIWM.get(str(method).strip().lower(), {}).get(metric)
