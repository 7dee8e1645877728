"""Checkpoints of other CorrDiff implementations: NVIDIA PhysicsNeMo's (and Modulus's) `.mdlus` files and
Earth2Studio's model packages, imported as corrdiff run folders and exported back.

- `mdlus.py`: the `.mdlus` archive (zip or tar of args.json, metadata.json, model.pt), read safely;
- `physicsnemo.py`: PhysicsNeMo's architecture options as a corrdiff `UNetConfig` (or a refusal naming the option);
- `weights.py`: the weights, name by name, in both directions;
- `earth2studio.py`: channel names, normalisation and the fine grid from files or an Earth2Studio package;
- `convert.py`: the run folder written through `corrdiff.checkpoint`, and the export.
docs/interop.md says what is supported and how exactly the imported networks reproduce the reference.
"""

from corrdiff.interop.convert import export_physicsnemo, import_physicsnemo, Imported
from corrdiff.interop.earth2studio import Package, read_grid, read_package, read_stats
from corrdiff.interop.mdlus import read_mdlus, write_mdlus

__all__ = ["export_physicsnemo", "import_physicsnemo", "Imported", "Package", "read_grid", "read_mdlus",
           "read_package", "read_stats", "write_mdlus"]
