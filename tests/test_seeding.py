"""A time's seed depends on the seed and the valid time only, to the second, however the time is written; under
arithmetic physicsnemo, member k draws from PhysicsNeMo's generator of seed + k at every time."""

import numpy as np
import torch

from corrdiff.seeding import derive_seed, member_generator, members_seed, time_seed


def test_a_time_seed_is_the_seed_and_the_whole_seconds_since_1970():
    stamp = np.datetime64("2021-01-02T03:00:00", "ns")
    seconds = int(stamp.astype("datetime64[s]").astype("int64"))
    assert time_seed(7, stamp) == derive_seed(7, seconds)
    assert time_seed(7, "2021-01-02T03:00") == time_seed(7, np.datetime64("2021-01-02T03:00:00.4"))  # same second
    assert time_seed(7, stamp) != time_seed(8, stamp) != time_seed(7, stamp + np.timedelta64(1, "s"))
    assert 0 <= time_seed(0, "1969-12-31T23:59:59") < 2**63  # before 1970 too



def test_physicsnemo_members_draw_from_seed_plus_k_at_every_time():
    """PhysicsNeMo's StackedRandomGenerator: torch.Generator().manual_seed(seed % 2**32), seeds s, s + 1, …"""
    first = lambda g: torch.randn(5, generator=g)  # noqa: E731
    assert torch.equal(first(member_generator(7, 2, arithmetic="physicsnemo")), first(torch.Generator().manual_seed(9)))
    assert torch.equal(first(member_generator(2**32 - 1, 1, arithmetic="physicsnemo")),
                       first(torch.Generator().manual_seed(0)))
    assert not torch.equal(first(member_generator(7, 2)), first(torch.Generator().manual_seed(9)))
    stamp = np.datetime64("2021-01-02T03:00:00", "ns")
    assert members_seed(7, stamp, "physicsnemo") == members_seed(7, stamp + np.timedelta64(6, "h"), "physicsnemo") == 7
    assert members_seed(7, stamp) == time_seed(7, stamp)
