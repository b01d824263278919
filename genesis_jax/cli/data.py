"""`genesis-jax data`: `samples` (fetch the real sample volumes) and `prepare` (build a TFDS ArrayRecord dataset).

  genesis-jax data samples [--cache-dir DIR]
  genesis-jax data prepare --config=data/genesis_cubes:tiny [--config.data.x=y ...]
  genesis-jax data prepare --dataset=DIR [--config.data.x=y ...]   (a dataset folder; config data/dataset)
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="sample data and dataset preparation (see `genesis-jax data -h`)")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser("samples", help="download (once) and list the real TotalSegmentator sample CT/MR volumes")
    s.add_argument("--cache-dir", default=None, help="cache directory (default $GENESIS_JAX_CACHE or "
                                                      "~/.cache/genesis_jax)")
    s.set_defaults(func=run_samples)
    r = sub.add_parser("prepare", help="read volumes, extract cubes/crops and write a TFDS ArrayRecord dataset",
                       description="Examples: genesis-jax data prepare --dataset=DIR  (an nnU-Net raw dataset or "
                       "images/ + labels/ folder: volumes, split file and settings, recorded once);  "
                       "genesis-jax data prepare --config=data/genesis_cubes:tiny")
    r.add_argument("--config", default=None,
                   help="data config, e.g. data/genesis_cubes:tiny (with --dataset: default data/dataset)")
    r.add_argument("--dataset", default=None, metavar="DIR",
                   help="a dataset folder (nnU-Net v2 raw: dataset.json, imagesTr/, labelsTr/, imagesTs/; or images/ "
                   "+ labels/): prepared once, its settings recorded for every later --dataset=DIR")
    r.set_defaults(func=run_prepare, accepts_config_overrides=True)


def run_samples(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.data.readers import read_volume
    from genesis_jax.data.samples import SampleDataUnavailable, fetch_samples

    try:
        info = fetch_samples(args.cache_dir)
    except SampleDataUnavailable as err:
        print(f"genesis-jax data samples: {err}", file=sys.stderr)
        return 1
    for name, sample in info.items():
        image = read_volume(sample["image"])
        label = read_volume(sample["label"], kind="label")
        present = [int(c) for c in set(label.array.ravel().tolist()) - {0}]
        liver = next((i for i, n in sample["classes"].items() if n == "liver"), None)
        liver_text = f", liver {int((label.array == liver).sum()):,} voxels" if liver in present else ""
        print(f"{name:<11} {sample['modality'].upper()}  {'x'.join(map(str, image.shape)):<12} "
              f"spacing {'x'.join(f'{s:.3g}' for s in image.spacing)} mm  "
              f"intensity [{image.array.min():.0f}, {image.array.max():.0f}]  "
              f"{len(present)} label classes{liver_text}")
        print(f"            {sample['description']}")
        print(f"            image {sample['image']}\n            label {sample['label']}")
    print("labels are TotalSegmentator model outputs, not manual annotations")
    return 0


def run_prepare(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.config_loader import load_config
    from genesis_jax.data.builders import DatasetError
    from genesis_jax.data.prepare import prepare
    from genesis_jax.data.readers import VolumeError
    from genesis_jax.data.samples import SampleDataUnavailable

    from genesis_jax.config_loader import ConfigError
    from genesis_jax.data.folder_prepare import prepare_folder

    if args.config is None and args.dataset is None:
        raise ConfigError("give --dataset=DIR (a dataset folder) or --config=NAME (e.g. data/genesis_cubes:tiny)")
    config = load_config(args.config or "data/dataset", overrides)
    try:
        if args.dataset is not None:
            with config.unlocked():
                config.data.manual_dir = args.dataset
            summary, _ = prepare_folder(config.data)
        else:
            summary = prepare(config.data)
    except (DatasetError, VolumeError, SampleDataUnavailable) as err:
        print(f"genesis-jax data prepare: {err}", file=sys.stderr)
        return 1
    print("\n".join(summary.lines()))
    return 0
