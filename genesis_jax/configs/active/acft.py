"""Active, continual fine-tuning (ACFT(HQ) with AIFT scores) of a Genesis-encoder classifier (``:resenc``: on
nnU-Net's ResEnc encoder instead), human in the loop.

Run (one round; `:tiny` is a CPU-sized network on a synthetic 3D pool, each command takes well under a minute):
  genesis-jax al select --config=active/acft:tiny --workdir=/tmp/al --budget=8
      -> /tmp/al/selections/round_0000.{csv,json,png}: 8 candidate ids with scores, an empty 'label' column
         and a thumbnail sheet (central slices)
  (fill in the 'label' column: 0/1 or negative/positive)
  genesis-jax al label --workdir=/tmp/al --file=/tmp/al/selections/round_0000.csv   # idempotent
  genesis-jax al step --config=active/acft:tiny --workdir=/tmp/al
      -> fine-tunes M_0 into M_1 (models/round_0001), scores the remaining pool (scores/round_0001.npz)
  genesis-jax al status --workdir=/tmp/al

Default (no variant): the published constants (alpha = 1/4, omega = 5, Matlab score convention, 24 patches per
candidate: scales 1.0/1.2/1.5 x 8 flips/rotations with 10% random translations) on 32^3 patches of a full-width (32) Genesis encoder; set --config.init to a Models Genesis weights
directory for a pre-trained M_0 and --config.pool.kind=npz --config.pool.path=... for your own candidates (an .npz
with 'ids' (n,), 'contexts' (n, *spatial[, C]) of normalised [0, 1] intensities, optionally 'labels'), or
`--dataset=DIR --label=NAME` for candidates cut from a prepared dataset folder. The work directory keeps its pool
settings: later rounds need no pool override. This size needs a GPU.

:resenc  the classification head on the encoder of nnU-Net's ResEnc-L (models/resenc:nnssl; the boxes resampled to
64^3 patches, a 2^3 bottleneck; ``:resenc,tiny`` models/resenc:tiny, 8^3 patches) as an ``encoder_classifier``: --config.init takes the weights of
pretrain/resenc_genesis, pretrain/resenc_mim or an nnU-Net / nnssl checkpoint imported with `genesis-jax convert`
(its encoder and stem by the weights' adaptation record). Instance norm: nothing to calibrate. E.g.
  genesis-jax al select --config=active/acft:resenc,tiny --workdir=/tmp/al_resenc --budget=8 \
      --config.init=/tmp/resenc_mim_tiny/weights

Learning rates (both variants, as published): the continual rate of ACFT (``learner.learning_rate``: 1e-4, tiny
3e-4) is 1/10 of the restart rate from M_0 (``learner.restart_lr_factor=10``: 1e-3, tiny 3e-3). A round whose
H u Q holds one class only mixes in earlier labelled candidates of the missing class (genesis_jax.active.learner).
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.models import resenc


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False, backbone=("genesis", "resenc"))
    tiny = opts.tiny
    c = ml_collections.ConfigDict()
    c.workdir = "/tmp/genesis_jax_al"
    c.seed = 0
    c.prng_impl = "rbg"  # fast to compile on CPU; any jax PRNG implementation name
    c.init = ""  # '' = fresh M_0; or a genesis_jax weights directory (classifier, or a segmentation network's encoder)
    c.class_names = ("negative", "positive")
    head = dict(num_classes=2, hidden=16 if tiny else 1024, activation="none")  # logits; the learner's softmax
    if opts.backbone == "resenc":
        backbone = resenc.get_config("tiny" if tiny else "nnssl").model
        c.model = ml_collections.ConfigDict(dict(name="encoder_classifier", backbone=backbone, **head))
    else:
        c.model = ml_collections.ConfigDict(
            dict(
                name="genesis_classifier",
                variant="keras",  # inference with running BatchNorm statistics: each patch predicted on its own
                ndim=3,
                base_width=2 if tiny else 32,
                depth=2 if tiny else 4,
                in_channels=1,
                dtype="float32",
                **head,
            )
        )
    size = 6 if tiny else 32
    c.pool = ml_collections.ConfigDict(
        # kind: 'synthetic' | 'npz' (path: ids, contexts in [0, 1], labels?) | 'dataset' (path: a prepared dataset
        # folder, label: the positive label; `al --dataset=DIR --label=NAME` sets these)
        dict(kind="synthetic", path="", label="", n=200 if tiny else 2000, context_size=10 if tiny else 48,
             positive_fraction=0.15, hard_fraction=0.25, seed=0, prefix="syn")
    )
    c.patches = ml_collections.ConfigDict(
        dict(
            # ResEnc: the box resampled to twice the network's 2^(stages-1) (32; tiny 4): on one bottleneck voxel its
            # instance norm would output a constant (PyTorch refuses to train on it)
            patch_shape=(2 * (4 if tiny else 32) if opts.backbone == "resenc" else size,) * 3,
            box_shape=(size,) * 3,
            scales=(1.0, 1.25) if tiny else (1.0, 1.2, 1.5),
            translation=0.1,
            translation_mode="random",
            flips_rotations=2 if tiny else 8,
            seed=0,
        )
    )
    c.scores = ml_collections.ConfigDict(dict(alpha=0.25, lambda1=1.0, lambda2=1.0, convention="matlab"))
    c.selection = ml_collections.ConfigDict(dict(method="randomized", omega=5))
    c.learner = ml_collections.ConfigDict(
        dict(
            strategy="acft_hq",
            # the CONTINUAL rate (acft_*: fine-tuning the previous model); a restart from M_0 (aft_lq, random/RFT)
            # trains at learning_rate * restart_lr_factor. Published: the continual rate is 1/10 of the restart one.
            # tiny: 3e-3 is the rate a tiny network needs from scratch in a few dozen steps, so continual 3e-4.
            learning_rate=3e-4 if tiny else 1e-4,
            restart_lr_factor=10.0,
            epochs=5.0,
            batch_size=16 if tiny else 32,
            min_steps=60 if tiny else 20,  # fewer leave a tiny network at chance (loss ln 2) after a round
            max_steps=200 if tiny else 2000,
            bucket_min=32,
            calibration_size=64 if tiny else 256,
            chunk_size=128 if tiny else 512,
            device_batch=32 if tiny else 16,
            class_balanced=tiny,  # the tiny pools are 15% positive; the published recipe samples plainly
        )
    )
    return c
