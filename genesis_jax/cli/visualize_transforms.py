"""`genesis-jax visualize-transforms`: a PNG grid of the restoration deformations on CT cubes.

Rows are samples (a cube and a key each); columns are the original cube, each deformation alone (flip, local
pixel shuffling, non-linear intensity map, in-painting, out-painting) and the composed input at the published rates,
all shown as the cube's middle axial slice. The cubes come from ``--cube`` (a .npy of (X, Y, Z) or (N[, 1], X, Y,
Z) cubes in [0, 1], or a NIfTI/MetaImage file or DICOM directory in HU), else from the real chest CT sample
(TotalSegmentator sdist, fetched once into the cache), else, offline or with ``--synthetic``, from the synthetic
CT phantom.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CUBE_SHAPE = (64, 64, 32)
COLUMNS = ("original", "flip", "local_shuffle", "nonlinear", "in_painting", "out_painting", "composed input")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "visualize-transforms",
        help="PNG grid of the restoration deformations (each alone and composed) on CT cubes",
        description="Example: genesis-jax visualize-transforms --out grid.png --num-samples 4",
    )
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--num-samples", type=int, default=4, help="rows of the grid (default 4)")
    p.add_argument("--cube", type=Path, default=None,
                   help=".npy cube(s) in [0, 1], or a CT volume (NIfTI, .mhd, DICOM directory) in HU")
    p.add_argument("--synthetic", action="store_true", help="use the synthetic CT phantom, not a real CT")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and of the deformations")
    p.add_argument("--flip-mode", choices=("all", "published"), default="all", help="flip axis draw (default all)")
    p.set_defaults(func=run)


def _crops(volume01: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` crops of CUBE_SHAPE (or the volume's size where smaller) from the middle half of the volume."""
    shape = tuple(min(c, n) for c, n in zip(CUBE_SHAPE, volume01.shape))
    rng = np.random.default_rng(seed)
    cubes = []
    for _ in range(count):
        corner = []
        for n, c in zip(volume01.shape, shape):
            lo, hi = (n - c) // 4, (n - c) - (n - c) // 4
            corner.append(int(rng.integers(lo, hi + 1)))
        cubes.append(volume01[tuple(slice(o, o + c) for o, c in zip(corner, shape))])
    return np.stack(cubes).astype(np.float32)


def _cubes_from_file(path: Path, count: int, seed: int) -> np.ndarray:
    from genesis_jax.data.normalize import normalize_ct
    from genesis_jax.data.readers import read_volume

    if path.suffix == ".npy":
        array = np.load(path)
        if array.ndim == 5 and array.shape[1] == 1:  # the published (N, 1, X, Y, Z) layout
            array = array[:, 0]
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise ValueError(f"{path}: expected a cube (X, Y, Z) or cubes (N[, 1], X, Y, Z), got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.floating) or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(
                f"{path}: .npy cubes must be float in [0, 1] (normalised CT), found dtype {array.dtype}, range "
                f"[{array.min()}, {array.max()}]; pass a NIfTI/DICOM volume in HU instead to have it normalised"
            )
        return np.stack([array[i % array.shape[0]] for i in range(count)]).astype(np.float32)
    return _crops(normalize_ct(read_volume(path).array), count, seed)


def _load_cubes(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    from genesis_jax.data.normalize import normalize_ct

    if args.cube is not None:
        return _cubes_from_file(args.cube, args.num_samples, args.seed), f"cubes from {args.cube}"
    if not args.synthetic:
        from genesis_jax.data.readers import read_volume
        from genesis_jax.data.samples import SampleDataUnavailable, fetch_samples

        try:
            sample = fetch_samples()["ct_chest"]
            volume = normalize_ct(read_volume(sample["image"]).array)
            return _crops(volume, args.num_samples, args.seed), f"real chest CT ({sample['description']})"
        except SampleDataUnavailable as err:
            print(f"genesis-jax visualize-transforms: no real CT available ({err}); using the synthetic phantom",
                  file=sys.stderr)
    from genesis_jax.data.phantom import synthetic_ct

    volume = normalize_ct(synthetic_ct((128, 128, 96), seed=args.seed)["image"])
    return _crops(volume, args.num_samples, args.seed), "synthetic CT phantom"


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    import jax

    from genesis_jax.transforms import default_config, restoration_pair, single_deformations
    from genesis_jax.visualize import save_png, show_grid

    if args.num_samples < 1:
        print("genesis-jax visualize-transforms: --num-samples must be >= 1", file=sys.stderr)
        return 2
    try:
        cubes, source = _load_cubes(args)
    except (ValueError, OSError) as err:
        print(f"genesis-jax visualize-transforms: {err}", file=sys.stderr)
        return 2
    config = default_config()
    config.flip_mode = args.flip_mode
    keys = jax.random.split(jax.random.key(args.seed), (cubes.shape[0], 2))

    rows = []
    for row, cube in enumerate(cubes):
        alone = single_deformations(keys[row, 0], cube, config)
        composed, _ = restoration_pair(keys[row, 1], cube, config)
        images = [cube, *(alone[name] for name in COLUMNS[1:-1]), composed]
        rows.append({name.replace("_", " "): np.asarray(image) for name, image in zip(COLUMNS, images)})
    fig = show_grid(rows, size=2.0, pyplot=False, title=f"Models Genesis deformations, middle axial slice of "
                    f"{'x'.join(map(str, cubes.shape[1:]))} cubes; {source}")
    save_png(fig, args.out, dpi=110)
    print(f"wrote {args.out} ({cubes.shape[0]} samples x {len(COLUMNS)} columns; {source})")
    return 0
