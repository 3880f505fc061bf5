import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digit_clips():
    """Two real moving-digit clips (2, 3, 16, 32, 32) in [-1, 1]."""
    from magvit.data import MovingDigits

    ds = MovingDigits(frames=16, size=32, num_samples=2, seed=1)
    return torch.stack([ds[i]["video"] for i in range(2)])
