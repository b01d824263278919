"""`genesis-jax convert`: published weights <-> the genesis_jax weights directory.

    genesis-jax convert --from=Genesis_Chest_CT.pt --to=weights/genesis_chest_ct_pt   # 'pytorch' variant
    genesis-jax convert --from=Genesis_Chest_CT.h5 --to=weights/genesis_chest_ct_h5   # 'keras' variant
    genesis-jax convert --from=weights/my_pretrained --to=my_pretrained.pt           # back to PyTorch UNet3D

The direction follows from the paths: a .pt/.pth/.h5 source is imported into a weights directory (usable as
``--init``); a weights directory (or a training workdir, whichever ``--init`` accepts) is exported to a .pt
state_dict. The work is done by genesis_jax.interop (formats) and genesis_jax.models.weights (the directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="import published Models Genesis weights (.pt, .h5) into a weights directory, or export one to .pt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from", dest="source", required=True, help="a .pt/.pth/.h5 file, or a weights directory (or training workdir)"
    )
    p.add_argument("--to", dest="destination", required=True, help="a weights directory, or a .pt/.pth file")
    p.add_argument(
        "--num-classes", type=int, default=None, help="refuse weights whose head has another number of outputs"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.add_argument("--module-prefix", action="store_true", help="export: prefix keys with 'module.' (DataParallel)")
    p.add_argument(
        "--bare-state-dict", action="store_true", help="export: write the state_dict alone, not {'epoch', 'state_dict'}"
    )
    p.set_defaults(func=run)


def _check_destination(destination: Path, overwrite: bool) -> None:
    from genesis_jax.interop import InteropError
    from genesis_jax.models.weights import is_weights_dir

    if destination.is_dir() and any(destination.iterdir()) and not is_weights_dir(destination):
        raise InteropError(f"{destination}: exists and is not a weights directory; choose another --to")
    occupied = destination.is_file() or (destination.is_dir() and any(destination.iterdir()))
    if occupied and not overwrite:
        raise InteropError(f"{destination}: already exists; pass --overwrite to replace it")


def _import(args: argparse.Namespace, source: Path, destination: Path) -> str:
    import jax
    import numpy as np

    from genesis_jax.interop import InteropError, read_published
    from genesis_jax.models.weights import save_weights

    if destination.suffix.lower() in (".pt", ".pth", ".h5", ".hdf5"):
        raise InteropError(f"{destination}: importing {source.name} writes a weights directory, not a file")
    _check_destination(destination, args.overwrite)
    variables, model_config, metadata = read_published(source, num_classes=args.num_classes)
    save_weights(destination, variables, model_config, {**metadata, "converter": "genesis-jax convert"})
    params = sum(np.size(leaf) for leaf in jax.tree.leaves(variables["params"]))
    return (
        f"wrote {destination} ({model_config['variant']} variant, base width {model_config['base_width']}, "
        f"depth {model_config['depth']}, {model_config['num_classes']} class(es), {params:,} parameters)"
    )


def _export(args: argparse.Namespace, source: Path, destination: Path) -> str:
    from genesis_jax.interop import InteropError, write_pytorch
    from genesis_jax.train.checkpointing import load_init_weights as load  # whatever --init accepts

    if destination.suffix.lower() not in (".pt", ".pth"):
        raise InteropError(
            f"{destination}: export writes a PyTorch state_dict; give a .pt or .pth file (Keras .h5 export is not "
            "supported)"
        )
    _check_destination(destination, args.overwrite)
    variables, model_config, metadata = load(source)
    if args.num_classes is not None and model_config.get("num_classes") != args.num_classes:
        raise InteropError(
            f"{source}: the model has {model_config.get('num_classes')} class(es), but {args.num_classes} were expected"
        )
    epoch = metadata.get("epoch", 0)
    write_pytorch(
        variables,
        model_config,
        destination,
        epoch=epoch if isinstance(epoch, int) else 0,
        module_prefix=args.module_prefix,
        bare=args.bare_state_dict,
        source=str(source),
    )
    variant = model_config.get("variant", "pytorch")
    load_as = "" if variant == "pytorch" else (" (in PyTorch: UNet3D with nn.BatchNorm3d(eps=1e-3, momentum=0.01) for "
                                               "ContBatchNorm3d, in eval mode)")
    return (f"wrote {destination} (PyTorch UNet3D state_dict, {variant} variant{load_as}, base width "
            f"{model_config.get('base_width', 32)})")


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.interop import InteropError, published_format
    from genesis_jax.models.weights import CheckpointError

    source, destination = Path(args.source).expanduser(), Path(args.destination).expanduser()
    try:
        if source.is_dir():
            message = _export(args, source, destination)
        elif not source.exists():
            raise InteropError(f"{source}: no such file or directory")
        else:
            published_format(source)  # refuses an unknown suffix before anything is written
            message = _import(args, source, destination)
    except (InteropError, CheckpointError) as err:
        print(f"genesis-jax convert: error: {err}", file=sys.stderr)
        return 1
    print(message)
    return 0
