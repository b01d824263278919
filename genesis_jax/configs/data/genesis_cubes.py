"""Genesis pre-training cubes: the published extraction rule on any volumes (`:tiny`, `:samples`, `:directory`).

Run:
  genesis-jax data prepare --config=data/genesis_cubes:tiny
      6 synthetic phantoms (128^3) -> about 130 cubes of 32x32x16 in ~10 s on a 2-core CPU; prints scans read,
      skipped (with reasons), cubes written per split and bytes, and the dataset directory.
  genesis-jax data prepare --config=data/genesis_cubes:samples
      the real TotalSegmentator sample CTs (downloaded once from PyPI, ~38 MB), resampled to 1.5 mm, 64x64x32 cubes
      with the foreground test (see below): 32 train cubes (ct_abdomen) and 32 validation cubes (ct_chest); the
      DICOM sample (20 slices) is skipped as too small for a 32-slice cube plus margins, and the summary says so.
  genesis-jax data prepare --config=data/genesis_cubes:directory --config.data.manual_dir=/path/to/cts
      every NIfTI / .mhd / DICOM series below the directory, published rule and constants, split by scan.
Python: ``genesis_jax.data.pipeline.cube_source(config.data)`` gives the cubes in memory (storage='memory') or from
the prepared ArrayRecord dataset (storage='tfds').
"""

import ml_collections

from genesis_jax.configs.common import parse_arg

PUBLISHED_CUBES = dict(
    cube_shape=(64, 64, 32),   # (x, y, z); z is the short, axial axis
    margins=(100, 100, 30),    # x/y margin 100 and z margin 30 voxels
    criterion="tissue",        # the published tissue test ('foreground' for MR / other anatomy)
    tissue_threshold=0.425,    # (-150 HU + 1000) / 2000
    max_tissue_fraction=0.15,  # reject cubes whose tissue score exceeds 15% of the voxels
    depth_lookahead=3,
    cubes_per_scan=32,
    max_attempts=1600,         # 50 x cubes_per_scan
    foreground_threshold=0.05,
    min_foreground_fraction=0.5,
)


def data_config(**overrides) -> ml_collections.ConfigDict:
    """The ``config.data`` block shared by every data config (fields documented inline)."""
    data = ml_collections.ConfigDict(dict(
        builder="genesis_cubes",     # a name in genesis_jax.data.builders.BUILDERS
        name="default",              # the prepared dataset's config name (its directory)
        source="directory",          # where volumes come from: 'synthetic' | 'samples' | 'directory'
        storage="memory",            # 'memory' (build in RAM now) | 'tfds' (read the prepared ArrayRecord data)
        split="train",
        manual_dir="",               # input directory (source='directory' and downstream builders)
        data_dir="",                 # TFDS root; '' = $GENESIS_JAX_CACHE/tensorflow_datasets
        modality="ct",
        hu_min=-1000.0,
        hu_max=1000.0,
        mr_method="minmax",          # MR: 'minmax' (published) or 'percentile'
        mr_percentiles=(0.5, 99.5),
        target_spacing=(),           # () = native voxel grid (published); e.g. (1.5, 1.5, 1.5) mm
        cubes=dict(PUBLISHED_CUBES),
        seed=0,
        validation_fraction=0.2,     # share of scans held out (split by scan)
        on_error="skip",             # 'skip' (log + report the scan) or 'raise'
        overwrite=False,             # prepare: rebuild an existing dataset
        memory_buffer_mb=64,         # prepare: in-memory write buffer before spilling to disk (bounds peak RSS)
        organ="liver",               # fine-tuning target in memory (samples / synthetic)
        synthetic=dict(num_scans=6, shape=(96, 96, 96)),   # phantoms (source='synthetic')
        samples=dict(train=("ct_abdomen", "ct_dicom"), validation=("ct_chest",), test=()),
    ))
    data.update(overrides)
    return data


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, preset=("directory", "tiny", "samples"))
    config = ml_collections.ConfigDict()
    if opts.preset == "tiny":
        cubes = dict(PUBLISHED_CUBES, cube_shape=(32, 32, 16), margins=(8, 8, 4), cubes_per_scan=24,
                     max_attempts=800)
        config.data = data_config(name="tiny", source="synthetic", cubes=cubes, validation_fraction=0.34,
                                  synthetic=dict(num_scans=6, shape=(128, 128, 128)))
    elif opts.preset == "samples":
        # The published tissue test keeps air/lung-rich cubes: at 1.5 mm it accepts 0 of 1,600 candidates on the
        # abdominal sample and 18 on the chest one, so these mixed-anatomy samples use the foreground test
        # (>= 50% of voxels above -400 HU), which gives the full 32 cubes on both.
        cubes = dict(PUBLISHED_CUBES, margins=(16, 16, 8), criterion="foreground", foreground_threshold=0.3,
                     min_foreground_fraction=0.5)
        config.data = data_config(name="samples", source="samples", target_spacing=(1.5, 1.5, 1.5), cubes=cubes)
    else:
        config.data = data_config()
    return config
