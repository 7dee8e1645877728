import os

import pytest
import torch

# Two cores on CI: keep intra-op threads bounded so parallel tools don't oversubscribe.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def generator():
    """A seeded CPU generator, so every test draws the same numbers on every run."""
    return torch.Generator().manual_seed(1234)
