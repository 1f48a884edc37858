"""The sweep's search space: which (normal class, method, grid, k) configs exist, grouped into class trials.

    specs, skipped = sweep_trials([0, 1], ["ours"], [(2, 2), (3, 3)], [3, 6], image_side=(32, 32), task_search=True)
    trials = class_trials(specs)   # one class trial per (class, method): its configs, trained one after another

With task_search, the task set is searched like grid and k: a method whose heads are chosen by
`tasks` (`ours`) gets, after its (grid, k) configs, one config with the geometric heads alone
(no jigsaw), trained and selected on the same validation data in the same class trial. The
paper warns that an unsuited task can lower the score (eq. 6's plain mean); on glyphs the
jigsaw head was "too easy" on 29 of 30 runs.

Pure Python: no Ray, no torch; the search space is data, not code.
"""

from __future__ import annotations

from ..config import jigsaw_k_problem
from ..transforms import check_image_fits
from .sweep_config import grid_label, parse_grid


def sweep_trials(classes, methods, grids, ks, *, image_side: tuple[int, int], margin: int = 2,
                 params: dict | None = None, task_search: bool = False):
    """The config specs (dicts: normal_class, method, grid "NxM" or None, k or None[, tasks]) and the skipped combos.

    grids: (n_h, n_w) tuples (SweepConfig.grids); a spec spells its grid as the rows do ("3x3"): specs travel
    through Tune into checkpoints and the resume identity, whose spelling must not change under a resumed sweep.

    A jigsaw method needs 2 <= k < (n_h * n_w)! and patches of >= 1 px after the margin; a method
    without a jigsaw head (params' `tasks` included) gets one config per class (grid and k do not apply).
    task_search: methods whose heads `tasks` chooses also get a config of their heads without the
    jigsaw head (`tasks`: the head names; grid and k None), last in their class trial.
    """
    from ..methods import method_names, trains_jigsaw

    known = method_names()
    specs, skipped = [], []
    for m in methods:
        if m not in known:
            raise ValueError(f"unknown method {m!r}; expected one of {known}")
    for c in classes:
        for m in methods:
            if not trains_jigsaw(m, params or {}):
                specs.append({"normal_class": int(c), "method": m, "grid": None, "k": None})
                continue
            for g in grids:
                n_h, n_w = parse_grid(g)
                for k in ks:
                    why = jigsaw_k_problem((n_h, n_w), k)
                    if why is None:
                        try:
                            check_image_fits(image_side, (n_h, n_w), margin)
                        except ValueError as e:
                            why = str(e)
                    if why:
                        if c == classes[0]:
                            skipped.append((m, grid_label((n_h, n_w)), k, why))
                        continue
                    specs.append({"normal_class": int(c), "method": m, "grid": grid_label((n_h, n_w)), "k": int(k)})
            heads = searched_tasks(m, params or {}) if task_search else None
            if heads and any(s["normal_class"] == int(c) and s["method"] == m for s in specs):
                specs.append({"normal_class": int(c), "method": m, "grid": None, "k": None, "tasks": list(heads)})
    return specs, skipped


def searched_tasks(method: str, params: dict) -> tuple[str, ...] | None:
    """The heads of the task search's extra config for `method`: its trained heads minus jigsaw; None when
    the method's heads are fixed (not in TASKS_METHODS), it has no jigsaw head, or jigsaw is its only head."""
    from ..config import ALL_TASKS, expand_tasks
    from ..methods import TASKS_METHODS, trains_jigsaw

    if method not in TASKS_METHODS or not trains_jigsaw(method, params):
        return None
    rest = tuple(h for h in expand_tasks(params.get("tasks") or ALL_TASKS) if h != "jigsaw")
    return rest or None


def class_trials(specs: list[dict]) -> list[dict]:
    """Group config specs into class trials: {"normal_class", "method", "configs": [{"grid", "k"[, "tasks"]}, ...]}.

    Order is kept (first appearance of each (class, method); configs in spec order), so a trial
    trains its configs in the order the user listed grids and k.
    """
    trials: dict[tuple, dict] = {}
    for spec in specs:
        key = (spec["normal_class"], spec["method"])
        trial = trials.setdefault(key, {"normal_class": spec["normal_class"], "method": spec["method"], "configs": []})
        config = {"grid": spec["grid"], "k": spec["k"]}
        if spec.get("tasks"):  # only the task search's configs carry it: other configs' identity is unchanged
            config["tasks"] = list(spec["tasks"])
        trial["configs"].append(config)
    return list(trials.values())


def config_label(cfg: dict) -> str:
    """'2x2 k=3' for a jigsaw config, 'no jigsaw (vertical,horizontal,rotation)' for the task search's, '-' else."""
    if cfg.get("grid"):
        return f"{cfg['grid']} k={cfg['k']}"
    tasks = cfg.get("tasks") or cfg.get("heads")
    if tasks and cfg.get("task_search", True) and "jigsaw" not in tasks:
        return "no jigsaw (" + (tasks if isinstance(tasks, str) else ",".join(tasks)) + ")"
    return "-"
