import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread for the whole suite: the models are tiny, and on a loaded 2-core machine two
    OpenMP threads spin while descheduled (measured 5-10x slower); no result depends on the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digit_clips():
    """Two real moving-digit clips (2, 3, 16, 32, 32) in [-1, 1]."""
    from magvit.data import MovingDigits

    ds = MovingDigits(frames=16, size=32, num_samples=2, seed=1)
    return torch.stack([ds[i]["video"] for i in range(2)])
