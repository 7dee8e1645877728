"""Seeds derived from integers, so that every random draw is a function of what it belongs to.

Training draws the samples of step s from `derive_seed(seed, epoch)` and the noise of micro-batch m from
`derive_seed(seed, s, m)`; generation draws member k of time t from `derive_seed(time_seed(seed, t), k)`. A draw
therefore does not depend on the batch, the process or the order it is made in.

With `sampler.arithmetic: physicsnemo`, generation seeds as PhysicsNeMo's CorrDiff does instead
(`member_generator(..., arithmetic="physicsnemo")`, `members_seed`): member k of every time draws from a generator
seeded with (seed + k) mod 2**32, as its `StackedRandomGenerator` seeds sample k of seeds 0, 1, … (its CorrDiff
example's generate.py; Earth2Studio's CorrDiff adds a base seed). Still one generator per member, independent of
the batch.
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


def member_generator(seed: int, member: int, device=None, arithmetic: str = "edm") -> torch.Generator:
    """The generator of ensemble member `member`: its stream depends only on (seed, member).

    `arithmetic` "physicsnemo": seeded with (seed + member) mod 2**32, PhysicsNeMo's `StackedRandomGenerator`."""
    if arithmetic == "physicsnemo":
        return generator((int(seed) + int(member)) % 2**32, device)
    return generator(derive_seed(seed, member), device)


def members_seed(seed: int, time, arithmetic: str = "edm") -> int:
    """The seed that time `time`'s members are drawn with (`member_generator`): `time_seed(seed, time)`, or `seed`
    itself with `arithmetic` "physicsnemo" (PhysicsNeMo's CorrDiff draws the same latents at every time)."""
    return int(seed) if arithmetic == "physicsnemo" else time_seed(seed, time)


class Draws:
    """The generators of one unit of work (a micro-batch, say), both seeded with the same seed.

    `host` draws on the CPU (e.g. patch offsets), `device` draws tensors on the compute device (noise levels,
    noise); on a CPU they are one generator, so the draws follow each other in one stream.
    """

    def __init__(self, seed: int, device=None):
        device = torch.device(device if device is not None else "cpu")
        self.host = generator(seed)
        self.device = self.host if device.type == "cpu" else generator(seed, device)
