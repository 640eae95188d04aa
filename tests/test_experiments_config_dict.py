"""`config_dict` accepts dataclass instances only (a dataclass class is not a config)."""

from __future__ import annotations

import pytest

from r2dn_control.experiments.common import config_dict
from r2dn_control.experiments.scaling import PRESETS, ScalingConfig


def test_config_dict_round_trips_tuples_as_lists() -> None:
    data = config_dict(PRESETS["test"])
    assert data["r2dn_widths"] == list(PRESETS["test"].r2dn_widths)


@pytest.mark.parametrize("bad", [ScalingConfig, {"epochs": 2}, None])
def test_config_dict_rejects_non_instances(bad) -> None:
    with pytest.raises(TypeError, match="config must be a dataclass instance"):
        config_dict(bad)
