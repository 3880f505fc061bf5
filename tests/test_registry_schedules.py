import pytest
import torch

from magvit.data import DATASETS
from magvit.errors import ConfigError
from magvit.registry import Registry
from magvit.schedules import MASK_SCHEDULES, mask_ratio


def test_registry_rejects_duplicates_and_unknown_names():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError):
        reg.register("a")(lambda: 2)
    with pytest.raises(ConfigError, match="unknown thing 'b'; choose one of: a"):
        reg["b"]
    assert reg.build("a") == 1 and list(reg) == ["a"]


def test_dataset_registry_is_complete():
    assert {"moving_digits", "bundled_clips", "video_folder", "image_folder"} <= set(DATASETS)


@pytest.mark.parametrize("name", MASK_SCHEDULES.names())
def test_schedules_fall_from_one_to_zero(name):
    r = torch.linspace(0, 1, 101)
    g = mask_ratio(name, r, 256)
    assert g[0] >= 0.99 and g[-1] <= 1e-6
    assert torch.all(g[1:] <= g[:-1] + 1e-12), "a mask schedule never increases"


def test_schedule_shapes():
    # concave schedules mask more than linear at every r, convex ones less (MaskGIT section 4.4)
    r = torch.linspace(0.05, 0.95, 19)
    lin = mask_ratio("linear", r, 256)
    assert torch.all(mask_ratio("cosine", r, 256) > lin) and torch.all(mask_ratio("square", r, 256) > lin)
    assert torch.all(mask_ratio("sqrt", r, 256) < lin)
    assert {"cosine", "linear", "square", "cubic", "sqrt", "log", "exp", "arccos"} == set(MASK_SCHEDULES)
