"""Files that are not usable CorrDiff checkpoints give one-line CheckpointErrors naming the file and the problem,
and loading runs no code from them."""

import io
import json
import os
import pickle
import re
import tarfile
import zipfile

import pytest
import torch

from corrdiff.data import ChannelStats, Normalization
from corrdiff.errors import CheckpointError
from corrdiff.interop.convert import convert
from corrdiff.interop.mdlus import read_mdlus, write_mdlus
from tests.interop.physicsnemo_fixtures import FIXTURES, stats


class RunsCode:
    """A pickle that would call a function when loaded (a harmless one)."""

    def __reduce__(self):
        return (os.getpid, ())


def rewrite(tmp_path, source: str, name: str = "bad.mdlus", args=None, state=None, class_name=None, module=None,
            container="zip"):
    """A copy of fixture `source` with some of its parts replaced."""
    original = read_mdlus(FIXTURES / f"{source}.mdlus")
    args = original.args | (args or {})
    return write_mdlus(tmp_path / name, class_name or original.class_name, module or original.module, args,
                       original.metadata, original.state if state is None else state, container)


def zip_with(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "bad.mdlus"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def expect_error(path, pattern: str, kind: str = "diffusion", channels=None):
    with pytest.raises(CheckpointError) as info:
        convert(path, kind, channels or stats())
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert re.search(pattern, message), message
    return message


def test_not_an_archive(tmp_path):
    path = tmp_path / "bad.mdlus"
    path.write_bytes(b"\x00not a checkpoint\n" * 10)
    expect_error(path, "neither a zip nor a tar")


def test_missing_model_pt(tmp_path):
    path = zip_with(tmp_path, {"args.json": b'{"__name__": "UNet", "__args__": {}}', "metadata.json": b"{}"})
    expect_error(path, "has no model.pt")


def test_missing_file(tmp_path):
    expect_error(tmp_path / "absent.mdlus", "no such file")


def with_model_pt(tmp_path, model_pt: bytes):
    """The diffusion fixture's args.json and metadata.json around another model.pt."""
    original = read_mdlus(FIXTURES / "diffusion.mdlus")
    args = json.dumps({"__name__": original.class_name, "__module__": original.module, "__args__": original.args})
    return zip_with(tmp_path, {"args.json": args.encode(), "metadata.json": b"{}", "model.pt": model_pt})


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    expect_error(with_model_pt(tmp_path, pickle.dumps({"weight": RunsCode()}, protocol=2)), "refused to load")


def test_non_tensor_content_is_refused(tmp_path):
    buffer = io.BytesIO()
    torch.save([1, 2, 3], buffer)
    expect_error(with_model_pt(tmp_path, buffer.getvalue()), "mapping of parameter names to tensors")


def test_tar_links_are_not_followed(tmp_path):
    path = tmp_path / "bad.mdlus"
    with tarfile.open(path, "w") as archive:
        link = tarfile.TarInfo("model.pt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        for name, data in (("args.json", b"{}"), ("metadata.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    expect_error(path, "has no model.pt")


def test_unknown_class(tmp_path):
    expect_error(rewrite(tmp_path, "diffusion", class_name="DhariwalUNet"), "unsupported class 'DhariwalUNet'")


def test_foreign_module(tmp_path):
    expect_error(rewrite(tmp_path, "diffusion", module="mypackage.nets"), "not a PhysicsNeMo CorrDiff network")


def test_wrong_kind(tmp_path):
    expect_error(FIXTURES / "regression.mdlus", "holds a regression network", kind="diffusion")


@pytest.mark.parametrize("option, value", [
    ("encoder_type", "residual"), ("decoder_type", "skip"), ("resample_filter", [1, 3, 3, 1]),
    ("label_dim", 3), ("channel_mult_noise", 2), ("additive_pos_embed", True), ("bottleneck_attention", False),
    ("act", "gelu"), ("lead_time_mode", True)])
def test_unsupported_option_is_named(tmp_path, option, value):
    expect_error(rewrite(tmp_path, "diffusion", args={option: value}), f"option {option}=")


@pytest.mark.parametrize("args, pattern", [
    ({"model_type": "DhariwalUNet"}, "model_type 'DhariwalUNet'"),
    ({"gridtype": "spherical"}, "gridtype 'spherical'"),
    ({"embedding_type": "zero"}, "needs a noise embedding"),
    ({"attn_resolutions": [5]}, r"attn_resolutions \[5\]"),
    ({"new_option": 1}, "unknown SongUNetPosEmbd option 'new_option'"),
    ({"img_in_channels": 10}, "img_in_channels=10 does not fit"),
    ({"model_channels": 16}, "do not fit|has shape"),
])
def test_architecture_problems_are_named(tmp_path, args, pattern):
    expect_error(rewrite(tmp_path, "diffusion", args=args), pattern)


def test_channel_counts_that_do_not_fit(tmp_path):
    four_inputs = Normalization(ChannelStats(list("abcd"), [0] * 4, [1] * 4), stats().target)
    expect_error(FIXTURES / "diffusion.mdlus", "img_in_channels=7 does not fit", channels=four_inputs)
    three_targets = Normalization(stats().input, ChannelStats(list("xyz"), [0] * 3, [1] * 3))
    expect_error(FIXTURES / "diffusion.mdlus", "predicts 2 channels", channels=three_targets)


def test_missing_and_extra_weights(tmp_path):
    state = dict(read_mdlus(FIXTURES / "diffusion.mdlus").state)
    state.pop("model.enc.24x24_block1.conv1.weight")
    expect_error(rewrite(tmp_path, "diffusion", state=state), "missing encoder.1.conv1.weight")
    state = dict(read_mdlus(FIXTURES / "diffusion.mdlus").state)
    state["model.map_label.weight"] = state["model.map_layer1.weight"]
    expect_error(rewrite(tmp_path, "diffusion", state=state, name="extra.mdlus"), "no place .* for map_label.weight")
