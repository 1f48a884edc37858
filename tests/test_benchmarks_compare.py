"""benchmarks/compare.py: committed benchmark figures vs a rerun."""

import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_compare", Path(__file__).parents[1] / "benchmarks" / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def _write(folder: Path, name: str, rows: list[dict], quick=True):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"settings": {"quick": quick}, "rows": rows}))


def _profile(speedup):
    return [{"backbone": "wrn-10-1", "path": "score", "speedup": speedup}]


def test_figures_within_tolerance_match_and_far_ones_do_not(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _write(old, "profile_hot_paths_quick", _profile(1.30))
    _write(new, "profile_hot_paths_quick", _profile(1.40))
    lines, ok = compare.compare(old, new, tolerance=0.25)
    assert ok and "| yes |" in lines[-1]
    _write(new, "profile_hot_paths_quick", _profile(2.00))
    lines, ok = compare.compare(old, new, tolerance=0.25)
    assert not ok and "| NO |" in lines[-1]


def test_target_figures_match_when_both_meet_the_target(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    rows = lambda s: [{"backbone": "wrn-10-1", "method": "ours", "speedup_vs_mhrot": s}]  # noqa: E731
    _write(old, "scoring", rows(6.0))
    _write(new, "scoring", rows(3.5))  # 42% apart, both >= 3.0
    assert compare.compare(old, new, tolerance=0.25)[1]
    _write(new, "scoring", rows(2.5))  # misses the target
    lines, ok = compare.compare(old, new, tolerance=0.25)
    assert not ok and "yes, NO" in lines[-1]


def test_missing_or_incomparable_results_fail(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _write(new, "scoring_memory", [{"peak_vs_2k": 1.0}])
    old.mkdir()
    assert not compare.compare(old, new, tolerance=0.25)[1]
    _write(old, "scoring_memory", [{"peak_vs_2k": 1.0}], quick=False)
    lines, ok = compare.compare(old, new, tolerance=0.25)
    assert not ok and "not comparable" in lines[-1]
