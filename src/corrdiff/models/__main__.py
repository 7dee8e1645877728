"""`python -m corrdiff.models --summary NAME`: parameter counts of a preset's two networks."""

import argparse

from corrdiff.diffusion import diffusion_network
from corrdiff.models.presets import count_parameters, presets


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m corrdiff.models", description=__doc__)
    parser.add_argument("--summary", metavar="PRESET", choices=sorted(presets), required=True)
    args = parser.parse_args()
    config = presets[args.summary]
    height, width = config.img_shape
    print(f"preset {args.summary!r}: {height}×{width}, {config.in_channels} inputs, {config.out_channels} outputs")
    regression = count_parameters(config.build_regression())
    diffusion = count_parameters(diffusion_network(config))
    print(f"regression UNet: {regression:,} parameters")
    print(f"diffusion UNet:  {diffusion:,} parameters")


if __name__ == "__main__":
    main()
