"""SweepConfig: built once from the flags or in Python, checked once, defaults from DetectorConfig (issue 22)."""

from __future__ import annotations

import pytest

from mtssad.cli import build_parser
from mtssad.config import DetectorConfig
from mtssad.distributed.cli import sweep_config_from_args
from mtssad.distributed.sweep_config import SweepConfig, grid_label, parse_grid
from mtssad.errors import UsageError


def _flags(*extra):
    return build_parser().parse_args(["sweep", "--out", "/tmp/x", *extra])


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1])
def test_a_sweep_without_validation_data_is_refused_with_one_clear_message(bad):
    with pytest.raises(UsageError, match=rf"a sweep selects on validation data: --val-fraction must be in \(0, 1\); "
                                         rf"got {bad}"):
        SweepConfig(val_fraction=bad)


def test_the_grid_is_parsed_once_at_the_flag_and_stays_a_tuple():
    args = _flags("--grid-search", "2x2", "3X4", "--k-search", "3", "6")
    assert args.grid_search == [(2, 2), (3, 4)]
    config = sweep_config_from_args(args)
    assert config.grids == ((2, 2), (3, 4)) and config.ks == (3, 6)
    assert SweepConfig(grids=["2x2", (3, 3)]).grids == ((2, 2), (3, 3))  # Python callers may spell it as the rows do
    assert parse_grid("3x3") == (3, 3) and grid_label((3, 3)) == "3x3"
    with pytest.raises(SystemExit):
        _flags("--grid-search", "3y3")


def test_the_sweep_defaults_are_detector_configs_grid_and_k():
    config = sweep_config_from_args(_flags())
    assert config.grids == (DetectorConfig.grid,) and config.ks == (DetectorConfig.k,)
    assert SweepConfig().ks == (DetectorConfig.k,) and SweepConfig().grids == (DetectorConfig.grid,)
    assert config.params["k"] == DetectorConfig.k and config.params["progress"] is False
    assert config.task_search is True and config.num_workers is None  # the command line's own, named in --help


def test_resource_flags_are_checked_with_the_flag_in_the_message():
    for extra, pattern in [(("--num-workers", "0"), "--num-workers must be >= 1; got 0"),
                           (("--cpus-per-trial", "0"), "--cpus-per-trial must be > 0; got 0.0"),
                           (("--gpus-per-trial", "1"), "--gpus-per-trial needs --use-gpu")]:
        with pytest.raises(UsageError, match=pattern):
            sweep_config_from_args(_flags(*extra))
