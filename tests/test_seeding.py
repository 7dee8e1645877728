"""A time's seed depends on the seed and the valid time only, to the second, however the time is written."""

import numpy as np

from corrdiff.seeding import derive_seed, time_seed


def test_a_time_seed_is_the_seed_and_the_whole_seconds_since_1970():
    stamp = np.datetime64("2021-01-02T03:00:00", "ns")
    seconds = int(stamp.astype("datetime64[s]").astype("int64"))
    assert time_seed(7, stamp) == derive_seed(7, seconds)
    assert time_seed(7, "2021-01-02T03:00") == time_seed(7, np.datetime64("2021-01-02T03:00:00.4"))  # same second
    assert time_seed(7, stamp) != time_seed(8, stamp) != time_seed(7, stamp + np.timedelta64(1, "s"))
    assert 0 <= time_seed(0, "1969-12-31T23:59:59") < 2**63  # before 1970 too
