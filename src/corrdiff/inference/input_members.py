"""Downscaling every member of an ensemble input (`member: all`): K diffusion members per input member.

An ensemble forecast (GEFS, ECMWF ENS, ERA5's EDA) has a member dimension (`number`). With `member: all`, each
input member is opened as its own dataset (`member: <its number>`), and each time of the output holds, for input
member i (0-based, in the file's order), the diffusion members i·K … i·K + K − 1, seeded as members of one
ensemble (member m of a time depends on (seed, time, m) only). The output's `input_member` coordinate, along
`member`, gives the input member (its number in the input files) each came from. The regression mean written
beside it (`<name>_regression`) is the mean over the input members' regression means.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from corrdiff.data.readers import open_fields
from corrdiff.data.spec import DatasetSpec
from corrdiff.errors import ConfigError, DataError

INPUT_MEMBER = "input_member"
INPUT_MEMBER_ATTRS = {"long_name": "member of the ensemble input this member was downscaled from", "units": "1"}


def member_labels(spec: DatasetSpec) -> tuple | None:
    """The input members' labels when the spec's inputs say `member: all`, else None (reads the grid only)."""
    if spec.inputs.member != "all":
        return None
    stores: list = []
    try:
        fields = open_fields(spec, spec.inputs, "inputs", opened=stores)
    finally:
        for store in stores:
            store.close()
    labels = {f.name: f.members for f in fields}
    first = fields[0]
    if first.members is None:
        raise DataError(f"{first.file}: `member: all`: input {first.name!r} has no ensemble dimension; leave "
                        "`member` out")
    for name, found in labels.items():
        if found != first.members:
            raise DataError(f"{first.file}: `member: all`: inputs {first.name!r} and {name!r} have different members "
                            f"({list(first.members)[:5]} … against {list(found or ())[:5]} …); give files with the "
                            "same members")
    return first.members


def with_member(spec: DatasetSpec, label) -> DatasetSpec:
    """`spec` reading input member `label` alone."""
    return spec.model_copy(update={"inputs": spec.inputs.model_copy(update={"member": label})})


@dataclass
class InputMembers:
    """One dataset per input member (the same times, grid and channels), read as one: attributes are the first's."""

    datasets: list
    labels: tuple

    def __post_init__(self):
        times = np.asarray(self.datasets[0].times)
        for label, dataset in zip(self.labels[1:], self.datasets[1:]):
            if not np.array_equal(np.asarray(dataset.times), times):
                raise DataError(f"input member {label} has other times than member {self.labels[0]} (NaNs dropped at "
                                "some times?); every member must have the same times")

    def __getattr__(self, name):
        if name in ("datasets", "labels"):
            raise AttributeError(name)
        return getattr(self.datasets[0], name)

    def __len__(self) -> int:
        return len(self.datasets[0])

    def close(self) -> None:
        for dataset in self.datasets:
            getattr(dataset, "close", lambda: None)()

    def coords(self, members_each: int) -> dict:
        """The `input_member` coordinate along `member`, for `ensemble_file.template`'s `coords`."""
        values = np.repeat(np.asarray(self.labels), members_each)
        return {INPUT_MEMBER: (("member",), values, dict(INPUT_MEMBER_ATTRS))}


def downscale_members(downscale_time, sampling, dataset, index: int, time,
                      latents=None) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble (members, C, H, W) and regression mean (C, H, W) of time `index` of `dataset`; for `InputMembers`,
    K members from each input member (members i·K … i·K + K − 1) and the mean of their regression means.
    `downscale_time(sampling, input, time, first_member, latents)` samples one input. `latents` (every member's
    starting noise, (members, C, H, W), for members as time series; None: their first draws): input member i's
    members start from rows i·K … i·K + K − 1, so each (input member, member) is a series of its own."""
    if not isinstance(dataset, InputMembers):
        return downscale_time(sampling, dataset[index].input, time, 0, latents)
    ensembles, means = [], []
    k = sampling.members
    for i, member_dataset in enumerate(dataset.datasets):
        ensemble, mean = downscale_time(sampling, member_dataset[index].input, time, i * k,
                                        None if latents is None else latents[i * k : (i + 1) * k])
        ensembles.append(ensemble)
        means.append(mean)
    return np.concatenate(ensembles), np.mean(means, axis=0, dtype=np.float64).astype(np.float32)


def rules_with_member(rules, member):
    """`InputRules` choosing input `member` (a number, "mean" or "all"); `rules` as they are for None."""
    if member is None:
        return rules
    if member not in ("mean", "all") and (isinstance(member, bool) or not isinstance(member, numbers.Integral)):
        raise ConfigError(f"member {member!r}: expected a member's number (e.g. 0), 'mean' or 'all'")
    return rules.model_copy(update={"inputs": rules.inputs.model_copy(update={"member": member})})


def open_members(open_one, rules):
    """`open_one(rules)` (a `CoarseInputs`), or for `member: all` an `InputMembers` of one per input member."""
    first = open_one(rules)
    labels = next((f.members for f in first.inputs if f.members is not None), None)
    if labels is None:
        return first
    first.close()
    opened = []
    try:
        for label in labels:
            opened.append(open_one(rules_with_member(rules, label)))
        return InputMembers(opened, labels)
    except BaseException:
        for dataset in opened:
            dataset.close()
        raise
