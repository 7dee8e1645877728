"""PhysicsNeMo's `.mdlus` checkpoint files, read and written without PhysicsNeMo and without running code.

A `.mdlus` file, as `physicsnemo.Module.save` writes it, is an archive of three members:
  args.json      {"__name__": class, "__module__": module, "__args__": {constructor arguments}}
  metadata.json  {"physicsnemo_version": ..., "mdlus_file_version": ...}
  model.pt       the module's state dict, written by `torch.save`
PhysicsNeMo ≥ 2 writes a zip archive; Modulus and early PhysicsNeMo releases (which wrote the published CorrDiff
checkpoints) a tar archive with the same members. Both are read here. model.pt is a pickle: it is only ever
opened with `torch.load(weights_only=True)`, which builds tensors and plain containers and refuses anything
else, and it must hold a flat {name: tensor} mapping. Nothing is extracted to disk.

An untrusted file is bounded before anything is allocated: each member's declared size must be under
`MAX_MEMBER_BYTES` and at most `MAX_INFLATION` times what it takes in the file (a 3 MB archive that inflates to
3 GiB is refused from its header), and members are read in blocks, stopping at the declared size.
"""

import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from corrdiff.errors import CheckpointError
from corrdiff.file_integrity import atomic_file

MEMBERS = ("args.json", "metadata.json", "model.pt")
MAX_JSON_BYTES = 1 << 20  # args.json and metadata.json are a few kB; anything larger is not a PhysicsNeMo file
MAX_MEMBER_BYTES = 16 << 30  # 16 GiB: model.pt of 4 billion float32 parameters (CorrDiff's are 80 million, 320 MB)
MAX_INFLATION = 20  # uncompressed / stored: torch's tensor bytes hardly compress (zip stores them as they are)
INFLATION_SLACK = 1 << 20  # bytes any member may take regardless of the ratio (small JSON members compress well)
READ_BLOCK = 1 << 22


@dataclass
class MdlusFile:
    """What a `.mdlus` file holds: the class it was saved from, its constructor arguments, metadata and weights."""

    path: Path
    class_name: str
    module: str
    args: dict
    metadata: dict
    state: dict[str, torch.Tensor]
    container: str = "zip"
    """"zip" (PhysicsNeMo ≥ 2) or "tar" (Modulus and early PhysicsNeMo)."""
    extra: dict = field(default_factory=dict)
    """Top-level keys of args.json besides the class (nested modules): refused by the importer."""

    @property
    def version(self) -> str:
        """The checkpoint format version the saving class recorded ("0.1.0" when absent)."""
        return str(self.metadata.get("mdlus_file_version", "0.1.0"))


def _fail(path: Path, message: str) -> CheckpointError:
    return CheckpointError(f"{path}: {message}")


def _check_declared(path: Path, name: str, declared: int, stored: int) -> None:
    """Refuse a member whose declared size is above the ceiling or far above what it takes in the file."""
    if declared > MAX_MEMBER_BYTES:
        raise _fail(path, f"{name} declares {declared / 2**30:.1f} GiB, above the {MAX_MEMBER_BYTES / 2**30:.0f} GiB "
                          "a checkpoint member may hold; not read")
    if declared > MAX_INFLATION * max(stored, 1) + INFLATION_SLACK:
        raise _fail(path, f"{name} would inflate from {stored} to {declared} bytes ({declared / max(stored, 1):.0f}×, "
                          f"more than the {MAX_INFLATION}× of any weights file); not read")


def _read_bounded(stream, path: Path, name: str, declared: int) -> bytes:
    """The member's bytes, read in blocks; refused as soon as it holds more than it declared."""
    chunks, total = [], 0
    while block := stream.read(min(READ_BLOCK, declared + 1 - total)):
        total += len(block)
        if total > declared:
            raise _fail(path, f"{name} holds more than the {declared} bytes its header declares; not read")
        chunks.append(block)
    return b"".join(chunks)


def _members_from_zip(path: Path) -> dict[str, bytes]:
    found = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename in MEMBERS and info.filename not in found:
                _check_declared(path, info.filename, info.file_size, info.compress_size)
                with archive.open(info) as stream:
                    found[info.filename] = _read_bounded(stream, path, info.filename, info.file_size)
    return found


def _members_from_tar(path: Path) -> dict[str, bytes]:
    found = {}
    stored = path.stat().st_size  # a compressed tar (.tar.gz) inflates as a whole
    with tarfile.open(path) as archive:
        for member in archive:  # one header at a time: a bomb's members are never all listed in memory
            name = member.name[2:] if member.name.startswith("./") else member.name
            if name in MEMBERS and member.isfile():  # links and devices are never followed
                _check_declared(path, name, member.size, stored)
                found[name] = _read_bounded(archive.extractfile(member), path, name, member.size)
    return found


def _read_members(path: Path) -> tuple[dict[str, bytes], str]:
    if not path.is_file():
        raise _fail(path, "no such file")
    # Tar first, as PhysicsNeMo does: an old tar checkpoint can also look like a zip file.
    try:
        if tarfile.is_tarfile(path):
            return _members_from_tar(path), "tar"
        if zipfile.is_zipfile(path):
            return _members_from_zip(path), "zip"
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise _fail(path, f"damaged archive ({' '.join(str(err).split())[:200]})") from None
    raise _fail(path, "not a PhysicsNeMo checkpoint (neither a zip nor a tar archive)")


def _json_member(path: Path, members: dict[str, bytes], name: str) -> dict:
    data = members[name]
    if len(data) > MAX_JSON_BYTES:
        raise _fail(path, f"{name} is {len(data)} bytes, too large for a PhysicsNeMo {name}")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _fail(path, f"{name} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise _fail(path, f"{name} holds a {type(value).__name__}, expected a JSON object")
    return value


def load_state_dict(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """The {name: tensor} mapping pickled in `data`, unpickled with weights_only=True; a CheckpointError otherwise."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # the safe unpickler raises UnpicklingError, RuntimeError or others on foreign content
        message = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{where}: refused to load: not a plain tensor state dict ({type(err).__name__}: "
                              f"{message})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"{where}: expected a mapping of parameter names to tensors, found "
                              f"{type(state).__name__}")
    return dict(state)


def read_mdlus(path: str | Path) -> MdlusFile:
    """The contents of a PhysicsNeMo `.mdlus` file (zip or tar); a one-line CheckpointError naming it if unusable."""
    path = Path(path)
    members, container = _read_members(path)
    missing = [name for name in MEMBERS if name not in members]
    if missing:
        raise _fail(path, f"not a PhysicsNeMo checkpoint: the {container} archive has no {', '.join(missing)}")
    args = _json_member(path, members, "args.json")
    metadata = _json_member(path, members, "metadata.json")
    if not isinstance(args.get("__name__"), str) or not isinstance(args.get("__args__"), dict):
        raise _fail(path, "args.json names no class (expected __name__, __module__ and __args__)")
    state = load_state_dict(members["model.pt"], f"{path} (model.pt)")
    extra = {k: v for k, v in args.items() if k not in ("__name__", "__module__", "__args__")}
    return MdlusFile(path, args["__name__"], str(args.get("__module__", "")), dict(args["__args__"]), metadata,
                     state, container, extra)


def write_mdlus(path: str | Path, class_name: str, module: str, args: dict, metadata: dict,
                state: dict[str, torch.Tensor], container: str = "zip") -> Path:
    """Write a `.mdlus` file as `physicsnemo.Module.save` does (zip; or tar, the older layout); returns its path."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buffer)
    payload = {"model.pt": buffer.getvalue(),
               "args.json": json.dumps({"__name__": class_name, "__module__": module, "__args__": args}).encode(),
               "metadata.json": json.dumps(metadata).encode()}
    if container not in ("zip", "tar"):
        raise ValueError(f"container must be 'zip' or 'tar', got {container!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        if container == "zip":
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
                for name, data in payload.items():
                    archive.writestr(name, data)
        else:
            with tarfile.open(tmp, "w") as archive:
                for name, data in payload.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return path
