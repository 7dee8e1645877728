"""Seeds derived from integers, so that every random draw is a function of what it belongs to.

Training draws the samples of step s from `derive_seed(seed, epoch)` and the noise of micro-batch m from
`derive_seed(seed, s, m)`; generation draws member k of time t from `derive_seed(time_seed(seed, t), k)`. A draw
therefore does not depend on the batch, the process or the order it is made in.
"""

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends only on the given integers (NumPy's SeedSequence hash)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def time_seed(seed: int, time) -> int:
    """The seed of valid time `time` (datetime64 or ISO text) in a generation seeded with `seed`: from the whole
    seconds since 1970, so that a time's members are the same whichever times are generated with it."""
    seconds = int(np.datetime64(time, "ns").astype("datetime64[s]").astype("int64")) % 2**64
    return derive_seed(seed, seconds)


def generator(seed: int, device=None) -> torch.Generator:
    """A torch.Generator on `device` (CPU by default) seeded with `seed`."""
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(int(seed))


def member_generator(seed: int, member: int, device=None) -> torch.Generator:
    """The generator of ensemble member `member`: its stream depends only on (seed, member)."""
    return generator(derive_seed(seed, member), device)


class Draws:
    """The generators of one unit of work (a micro-batch, say), both seeded with the same seed.

    `host` draws on the CPU (e.g. patch offsets), `device` draws tensors on the compute device (noise levels,
    noise); on a CPU they are one generator, so the draws follow each other in one stream.
    """

    def __init__(self, seed: int, device=None):
        device = torch.device(device if device is not None else "cpu")
        self.host = generator(seed)
        self.device = self.host if device.type == "cpu" else generator(seed, device)
