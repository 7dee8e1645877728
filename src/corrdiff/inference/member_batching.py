"""How many ensemble members the denoiser takes at once: all on a CPU, as many as fit on a GPU (measured),
halved on out-of-memory. Members depend on (seed, time, member) only (as time series, also on their starting
noise, which is split with them), so the batch never changes a value."""

import logging

import torch

from corrdiff.errors import OutputError

log = logging.getLogger(__name__)


class MemberBatching:
    """How many members the denoiser takes at once: `configured`, else all of them on a CPU, and on a GPU as many
    as its free memory holds, measured at the first time (sampled one member at a time). Out of memory halves
    the number and samples the time again (members depend on (seed, time, member) only, so nothing changes)."""

    def __init__(self, configured: int | None, members: int, device: torch.device):
        self.members, self.device = members, torch.device(device)
        self.size = configured or (None if self.device.type == "cuda" else members)

    def run(self, sample):
        """`sample(batch_size)` -> its result, retried with half the batch on out-of-memory."""
        while True:
            measuring = self.size is None
            try:
                if measuring:
                    torch.cuda.reset_peak_memory_stats(self.device)
                    before = torch.cuda.memory_allocated(self.device)
                result = sample(1 if measuring else self.size)
                if measuring:
                    per_member = max(torch.cuda.max_memory_allocated(self.device) - before, 1)
                    free, _ = torch.cuda.mem_get_info(self.device)
                    self.size = fitting_batch(free, per_member, self.members)
                    log.info(f"generate: {self.size} member(s) at once fit the GPU's free memory "
                             f"({per_member / 2**20:.0f} MiB each)")
                return result
            except torch.OutOfMemoryError:
                current = 1 if measuring else self.size
                if current <= 1:
                    raise OutputError("out of GPU memory with one member at a time; use patches "
                                      "(generate.patch_shape) or a device with more memory") from None
                self.size = max(1, current // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning(f"generate: out of memory with {current} members at once; retrying with {self.size} "
                            "(set generate.member_batch to choose)")


def fitting_batch(free_bytes: int, per_member_bytes: int, members: int, headroom: float = 0.8) -> int:
    """Members that fit `headroom` of the free memory at `per_member_bytes` each: between 1 and `members`."""
    return int(max(1, min(members, headroom * free_bytes // per_member_bytes)))
