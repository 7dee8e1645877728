"""`corrdiff.output_paths.clash`: how an output would touch an input, by resolved path and by device and inode, for
each kind of input a command reads (a file, a checkpoint or run folder, a model package, a Zarr store)."""

import os

import pytest

from corrdiff.errors import OutputError
from corrdiff.output_paths import check_not_an_input, clash


@pytest.fixture
def inputs(tmp_path):
    """A data file, a checkpoint folder inside a run folder, and a Zarr-like store (a folder of chunk files)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "coarse.nc").write_bytes(b"CDF")
    checkpoint = tmp_path / "run" / "diffusion" / "checkpoints" / "step-000040"
    checkpoint.mkdir(parents=True)
    for name in ("model.json", "model.safetensors", "state.json"):
        (checkpoint / name).write_text(name)
    store = tmp_path / "data" / "fine.zarr"
    (store / "t2m" / "c").mkdir(parents=True)
    (store / "t2m" / "c" / "0").write_bytes(b"chunk")
    return {"file": tmp_path / "data" / "coarse.nc", "checkpoint": checkpoint, "run": tmp_path / "run" / "diffusion",
            "store": store}


def test_the_same_path_a_path_inside_and_a_folder_holding_an_input(inputs, tmp_path):
    assert clash(inputs["file"], inputs["file"]) == "is"
    assert clash(inputs["checkpoint"] / "model.json", inputs["checkpoint"]) == "is inside"
    assert clash(inputs["checkpoint"] / "state.json", inputs["run"]) == "is inside"
    assert clash(inputs["store"] / "t2m" / "new.nc", inputs["store"]) == "is inside"
    assert clash(tmp_path / "run", inputs["checkpoint"]) == "holds"
    assert clash(tmp_path / "data", inputs["file"]) == "holds"
    assert clash(tmp_path / "run" / "ens.nc", inputs["run"]) is None  # beside a step's run folder: fine
    assert clash(tmp_path / "data" / "coarse.nc.bak", inputs["file"]) is None  # a name that merely starts alike


@pytest.mark.parametrize("kind", ["checkpoint", "run", "store"])
def test_a_symbolic_link_to_an_input_folder_counts(inputs, tmp_path, kind):
    link = tmp_path / "link"
    os.symlink(inputs[kind], link)
    assert clash(link, inputs[kind]) == "is"
    assert clash(link / "model.json", inputs[kind]) == "is inside"
    assert clash(inputs[kind] / "x.nc", link) == "is inside"  # the input named through the link


def test_a_symbolic_link_above_the_output_counts(inputs, tmp_path):
    os.symlink(tmp_path / "data", tmp_path / "data-link")
    assert clash(tmp_path / "data-link" / "coarse.nc", inputs["file"]) == "is"
    assert clash(tmp_path / "data-link" / "fine.zarr" / "x", inputs["store"]) == "is inside"


def test_a_hard_link_to_an_input_or_to_a_file_inside_an_input_folder_counts(inputs, tmp_path):
    os.link(inputs["file"], tmp_path / "alias.nc")
    assert clash(tmp_path / "alias.nc", inputs["file"]) == "is"
    os.link(inputs["checkpoint"] / "model.json", tmp_path / "model-copy.json")
    assert clash(tmp_path / "model-copy.json", inputs["checkpoint"]) == "is a hard link into"
    assert clash(tmp_path / "model-copy.json", inputs["run"]) == "is a hard link into"
    os.link(inputs["store"] / "t2m" / "c" / "0", tmp_path / "chunk")
    assert clash(tmp_path / "chunk", inputs["store"]) == "is a hard link into"
    (tmp_path / "copy.json").write_text("model.json")  # a copy is another file
    assert clash(tmp_path / "copy.json", inputs["checkpoint"]) is None


def test_the_refusal_names_the_output_how_it_touches_the_input_and_the_role(inputs, tmp_path):
    os.symlink(inputs["checkpoint"], tmp_path / "ck")
    out = tmp_path / "ck" / "model.json"
    with pytest.raises(OutputError, match=rf"--out {out} is inside the diffusion checkpoint {inputs['checkpoint']}: "
                                          "this command never writes over its own inputs"):
        check_not_an_input(out, {"the run config": [None], "the diffusion checkpoint": [inputs["checkpoint"]]})
    check_not_an_input(tmp_path / "ens.nc", {"the diffusion checkpoint": [inputs["checkpoint"]]})
