"""Weights of PhysicsNeMo's SongUNet as corrdiff's SongUNet, and back (the layouts are in `interop.physicsnemo`).

PhysicsNeMo keeps its blocks in two ordered dicts named by resolution (`enc.16x16_block0`, `dec.8x8_up`, …),
corrdiff in two lists (`encoder.3`, `decoder.0`, …) built in the same order; `block_pairs` lists the matching
names. Inside a block the parameter names are the same except attention, which old Modulus checkpoints kept
at the block's root (`norm2`, `qkv`, `proj`) rather than under `attn.`.
"""

import torch

from corrdiff.errors import CheckpointError
from corrdiff.interop.physicsnemo import check_group_norms, Layout, RESAMPLE_FILTER
from corrdiff.models import UNetConfig
from corrdiff.networks import network_for

LEGACY_ATTENTION = {"norm2.": "attn.norm.", "qkv.": "attn.qkv.", "proj.": "attn.proj."}


def block_pairs(levels: int, num_blocks: int, height: int) -> list[tuple[str, str]]:
    """(PhysicsNeMo name, corrdiff name) of every UNet block, encoder then decoder, in forward order."""
    pairs, encoder, decoder = [], 0, 0
    for level in range(levels):
        res = height >> level
        names = ([f"{res}x{res}_down"] if level else []) + [f"{res}x{res}_block{i}" for i in range(num_blocks)]
        for name in names:
            pairs.append((f"enc.{name}", f"encoder.{encoder}"))
            encoder += 1
    for level in reversed(range(levels)):
        res = height >> level
        names = ["in0", "in1"] if level == levels - 1 else ["up"]
        for name in names + [f"block{i}" for i in range(num_blocks + 1)]:
            pairs.append((f"dec.{res}x{res}_{name}", f"decoder.{decoder}"))
            decoder += 1
    return pairs


def _qkv_order(channels: int) -> torch.Tensor:
    """Rows of PhysicsNeMo's qkv conv (one head: channel c of q, k, v at 3c, 3c+1, 3c+2) in corrdiff's order (q, k, v)."""
    return torch.arange(3 * channels).reshape(channels, 3).T.reshape(-1)


def _swap_halves(weight: torch.Tensor) -> torch.Tensor:
    """Columns (sin, cos) ↔ (cos, sin): PhysicsNeMo swaps the halves of its noise embedding before map_layer0."""
    half = weight.shape[1] // 2
    return torch.cat([weight[:, half:], weight[:, :half]], dim=1)


def _input_columns(layout: Layout, total: int) -> list[int]:
    """Columns of PhysicsNeMo's first convolution, in the order of corrdiff's inputs."""
    out, cond = layout.unet.out_channels, layout.unet.in_channels
    columns = list(range(total))
    if layout.kind == "regression":  # PhysicsNeMo's regression input starts with `out` zero channels
        return columns[out:]
    if layout.mean_first:  # [x, μ, y, grid] -> [x, y, μ, grid]
        return columns[:out] + columns[2 * out : 2 * out + cond] + columns[out : 2 * out] + columns[2 * out + cond :]
    return columns


def _tidy(state: dict[str, torch.Tensor], where) -> dict[str, torch.Tensor]:
    """PhysicsNeMo's weights without the wrapper's `model.` prefix, with attention under `attn.`, filters checked."""
    tidy = {}
    for key, value in state.items():
        key = key[len("model."):] if key.startswith("model.") else key
        head, _, leaf = key.rpartition(".")
        block, _, param = head.rpartition(".")
        if block.startswith(("enc.", "dec.")) and block.count(".") == 1 and f"{param}." in LEGACY_ATTENTION:
            key = f"{block}.{LEGACY_ATTENTION[param + '.']}{leaf}"
        if key.endswith("resample_filter"):
            if value.shape != RESAMPLE_FILTER.shape or not torch.allclose(value.float(), RESAMPLE_FILTER):
                raise CheckpointError(f"{where}: {key} is not the [1, 1] resampling filter corrdiff uses")
            continue
        tidy[key] = value
    return tidy


def _noise_shift(pn: dict[str, torch.Tensor], layout: Layout) -> torch.Tensor | None:
    """The constant embedding (emb_channels,) PhysicsNeMo's regression network computes at its zero noise level,
    float64; None for embedding_type "zero". Takes the mapping weights out of `pn`."""
    if layout.embedding_type == "zero":
        return None
    try:
        layer0_w, layer0_b = pn.pop("map_layer0.weight").double(), pn.pop("map_layer0.bias").double()
        layer1_w, layer1_b = pn.pop("map_layer1.weight").double(), pn.pop("map_layer1.bias").double()
    except KeyError as err:
        raise CheckpointError(f"no {err.args[0]} for embedding_type={layout.embedding_type!r}") from None
    pn.pop("map_noise.freqs", None)
    half = layer0_w.shape[1] // 2
    # At label 0 both embeddings give cos = 1, sin = 0; after PhysicsNeMo's swap the input is (0…0, 1…1).
    label = torch.cat([torch.zeros(half), torch.ones(half)]).double()
    hidden = torch.nn.functional.silu(layer0_w @ label + layer0_b)
    return torch.nn.functional.silu(layer1_w @ hidden + layer1_b)


def _target(key: str, renames: dict[str, str]) -> str | None:
    head, _, leaf = key.rpartition(".")
    for pn_block, block in renames.items():
        if head == pn_block or head.startswith(pn_block + "."):
            return f"{block}{head[len(pn_block):]}.{leaf}"
    return None


def to_corrdiff(state: dict[str, torch.Tensor], layout: Layout, where) -> dict[str, torch.Tensor]:
    """PhysicsNeMo weights `state` as the state dict of corrdiff's network for `layout`, float32.

    A CheckpointError naming `where` when a weight is missing, left over, or of another shape.
    """
    unet, kind = layout.unet, layout.kind
    with torch.device("meta"):  # shapes only: args.json may describe any size, checked before anything is allocated
        described = network_for(unet, kind, layout.sigma_data)
    song_shapes = described if kind == "regression" else described.net
    _check_size(song_shapes, state, where)
    wanted = song_shapes.state_dict()
    pn = _tidy(state, where)
    h = layout.pn_height
    renames = {f"enc.{h}x{h}_conv": "input_conv", f"dec.{h}x{h}_aux_norm": "out_norm",
               f"dec.{h}x{h}_aux_conv": "out_conv"}
    renames |= dict(block_pairs(len(unet.channel_mult), unet.num_blocks, h))
    try:
        shift = _noise_shift(pn, layout) if kind == "regression" else None
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {err}") from None
    mine, affines = {}, {}
    for key in list(pn):
        target = _target(key, renames)
        if target is None:
            continue
        value = pn.pop(key)
        if target.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            value = value[_qkv_order(value.shape[0] // 3)]
        elif target == "input_conv.weight":
            value = value[:, _input_columns(layout, value.shape[1])]
        if kind == "regression" and ".affine." in target:
            affines[target] = value
            continue
        mine[target] = value
    for name in {t.rsplit(".affine.", 1)[0] for t in affines}:
        added = affines[f"{name}.affine.bias"].double()
        if shift is not None:
            added = added + affines[f"{name}.affine.weight"].double() @ shift
        bias = mine.get(f"{name}.conv0.bias")
        if bias is not None:
            mine[f"{name}.conv0.bias"] = bias.double() + added
    if kind == "diffusion":
        for name in ("map_layer0.weight", "map_layer0.bias", "map_layer1.weight", "map_layer1.bias"):
            mine[name] = pn.pop(name, None)
        if mine["map_layer0.weight"] is not None:
            mine["map_layer0.weight"] = _swap_halves(mine["map_layer0.weight"])
    freqs = pn.pop("map_noise.freqs", None) if kind == "diffusion" else None
    if unet.noise_embedding == "fourier":
        mine["map_noise.freqs"] = freqs
    if unet.grid_embedding == "learned":
        mine["grid.grid"] = pn.pop("pos_embd", None) if layout.grid is None else layout.grid
    state = _checked(mine, list(pn), wanted, song_shapes, kind, where)
    # The weights fit: the real network is now no larger than they are.
    net = network_for(unet, kind, layout.sigma_data)
    song = net if kind == "regression" else net.net
    positional = song.map_noise.freqs if kind == "diffusion" and unet.noise_embedding == "positional" else None
    if freqs is not None and positional is not None and (
            freqs.shape != positional.shape or not torch.allclose(freqs.float(), positional, rtol=1e-6, atol=0)):
        raise CheckpointError(f"{where}: map_noise.freqs are not the positional embedding's frequencies")
    return state


MAX_PARAMETERS = 4_000_000_000  # what a checkpoint's args.json may ask for (CorrDiff's networks have ~80 million)


def _check_size(described: torch.nn.Module, state: dict[str, torch.Tensor], where) -> None:
    """Refuse, before building it, a network args.json describes that is above the ceiling or far larger than the
    weights the file holds (a hostile or mistaken args.json would otherwise allocate gigabytes first)."""
    asked = sum(p.numel() for p in described.parameters())
    held = sum(t.numel() for t in state.values())
    if asked > MAX_PARAMETERS:
        raise CheckpointError(f"{where}: args.json describes a network of {asked:,} parameters, above the ceiling of "
                              f"{MAX_PARAMETERS:,}; not built")
    if asked > 2 * held + 1_000_000:
        raise CheckpointError(f"{where}: args.json describes a network of {asked:,} parameters, but the file holds "
                              f"{held:,} weights; the arguments do not belong to these weights (not built)")


def _checked(mine, leftover, wanted, song, kind, where) -> dict[str, torch.Tensor]:
    """`mine` in `wanted`'s order as float32, once every weight is placed and of the right shape."""
    missing = [k for k in wanted if mine.get(k) is None]
    if leftover or missing:
        detail = "; ".join(filter(None, [f"no place in corrdiff's network for {', '.join(leftover[:3])}" if leftover
                                         else "", f"missing {', '.join(missing[:3])}" if missing else ""]))
        raise CheckpointError(f"{where}: the weights do not fit the network args.json describes ({detail})")
    bad = [k for k, v in wanted.items() if tuple(mine[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{where}: {bad[0]} has shape {tuple(mine[bad[0]].shape)}, the network args.json "
                              f"describes needs {tuple(wanted[bad[0]].shape)}")
    try:
        check_group_norms(song)
    except ValueError as err:
        raise CheckpointError(f"{where}: {err}") from None
    state = {k: mine[k].to(torch.float32).contiguous() for k in wanted}
    return state if kind == "regression" else {f"net.{k}": v for k, v in state.items()}


def to_physicsnemo(weights: dict[str, torch.Tensor], unet: UNetConfig, kind: str) -> dict[str, torch.Tensor]:
    """corrdiff weights of a `kind` network on `unet` as the state dict of PhysicsNeMo's wrapper (`model.` keys).

    The wrapper is CorrDiffRegressionUNet (embedding_type "zero": its noise shift is zero, so each affine is
    zero) or EDMPrecondSuperResolution, over SongUNetPosEmbd with a learnable grid holding corrdiff's grid.
    """
    net = network_for(unet, kind, 0.5)
    net.load_state_dict(weights)
    song = net if kind == "regression" else net.net
    h = unet.img_shape[0]
    renames = {"input_conv": f"enc.{h}x{h}_conv", "out_norm": f"dec.{h}x{h}_aux_norm",
               "out_conv": f"dec.{h}x{h}_aux_conv"}
    renames |= {mine: theirs for theirs, mine in block_pairs(len(unet.channel_mult), unet.num_blocks, h)}
    out = {}
    for key, value in song.state_dict().items():
        value = value.detach().clone()
        block, rest = _split_block(key)
        if block is None:
            out[key] = value
            continue
        target = f"{renames[block]}.{rest}"
        if rest.startswith("attn.qkv."):
            value = value[torch.argsort(_qkv_order(value.shape[0] // 3))]
        out[target] = value
    for pn_block, block in ((renames[b], b) for b in renames if b.startswith(("encoder.", "decoder."))):
        module = song.get_submodule(block)
        if kind == "regression":
            out[f"{pn_block}.affine.weight"] = torch.zeros(module.out_channels, unet.model_channels * unet.channel_mult_emb)
            out[f"{pn_block}.affine.bias"] = torch.zeros(module.out_channels)
        if module.up or module.down:
            out[f"{pn_block}.conv0.resample_filter"] = RESAMPLE_FILTER.clone()
            out[f"{pn_block}.skip.resample_filter"] = RESAMPLE_FILTER.clone()
    first = f"enc.{h}x{h}_conv.weight"
    out[first] = _physicsnemo_input(out[first], unet, kind)
    out.pop("grid.grid", None)
    if unet.grid_embedding != "none":  # PhysicsNeMo's learnable grid holds corrdiff's, whichever kind it is
        out["pos_embd"] = song.grid.grid.detach().clone()
    if kind == "diffusion":
        out["map_layer0.weight"] = _swap_halves(out["map_layer0.weight"])
        out["map_noise.freqs"] = song.map_noise.freqs.detach().clone()
    return {f"model.{k}": v.contiguous() for k, v in out.items()}


def _split_block(key: str) -> tuple[str | None, str]:
    for prefix in ("encoder.", "decoder."):
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            return prefix + index, rest
    for name in ("input_conv", "out_norm", "out_conv"):
        if key.startswith(name + "."):
            return name, key[len(name) + 1:]
    return None, key


def _physicsnemo_input(weight: torch.Tensor, unet: UNetConfig, kind: str) -> torch.Tensor:
    """corrdiff's first convolution with PhysicsNeMo's input columns: zero-input columns, or μ before y."""
    out, cond = unet.out_channels, unet.in_channels
    if kind == "regression":
        return torch.cat([torch.zeros(weight.shape[0], out, *weight.shape[2:]), weight], dim=1)
    if unet.condition_on_mean:  # [x, y, μ, grid] -> [x, μ, y, grid]
        return torch.cat([weight[:, :out], weight[:, out + cond : 2 * out + cond], weight[:, out : out + cond],
                          weight[:, 2 * out + cond :]], dim=1)
    return weight
