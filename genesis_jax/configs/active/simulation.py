"""Simulated annotation (experiments/active_learning_sim.py): AIFT selection vs random, a linear-probe learner.

The learner is ``learner.kind='linear_probe'`` (genesis_jax.active.linear_probe): an L2 softmax head on cached
features of a frozen encoder M_0, fitted to convergence by Newton steps every round; a round ending at chance loss
or with constant predictions is a training failure (recorded, never a data point). The fine-tuning learners of
genesis_jax.active.learner (ACFT) stay the human-in-the-loop ones (configs/active/acft.py, `genesis-jax al`).

Run:
  python experiments/active_learning_sim.py                       # 2D, a random encoder (the control arm)
  python experiments/active_learning_sim.py --weights=DIR         # M_0 = a Genesis weights directory's encoder
  python experiments/active_learning_sim.py --tiny                # = --config=active/simulation:tiny
Expected (default, stated before the first full run): pool 2,000 candidates (8% positive: heart of ct_chest; negatives of ct_chest and ct_abdomen,
half intensity-matched), test 1,500, 30 seeds x (a random warm start of 32 + 15 rounds of 16), then the line
`alc_difference_aift_minus_random: <d> (95% CI <lo> to <hi>)` and last `annotation_saving_vs_random: ...`.
Expected, not promised: AIFT +0.01 to +0.03 ALC over random. `:tiny`: synthetic scans, a tiny encoder, 3 seeds
x 3 rounds, under a minute; it checks the machinery and its numbers mean nothing.
Measured (30 seeds, random encoder): `alc_difference_aift_minus_random: +0.0066 (95% CI +0.0041 to +0.0092)`
(experiments/results/active_learning_sim/run_log.txt).
"""

import ml_collections

from genesis_jax.configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    tiny = parse_arg(arg, tiny=False).tiny
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.prng_impl = "rbg"
    # M_0 when no --weights is given: a randomly initialised encoder (the control arm), 2D unless weights say 3D
    c.encoder = ml_collections.ConfigDict(dict(
        name="genesis_unet", variant="keras", ndim=2, base_width=4 if tiny else 8, depth=2 if tiny else 3,
        in_channels=1, num_classes=1, head_activation="sigmoid", dtype="float32"))
    # 3 scales x 8 flips/rotations = m = 24 patches (published), 10% random translations; alpha * m = 6 scored
    patch = dict(scales=(1.0, 1.2, 1.5), translation=0.1, translation_mode="random", flips_rotations=8, seed=0)
    c.patches = ml_collections.ConfigDict(dict(patch_shape=(8, 8) if tiny else (16, 16),
                                               box_shape=(8, 8) if tiny else (16, 16), **patch))
    # contexts for a 3D encoder (the 32x32x16 cubes at 3 mm of the demo pre-training); needs a GPU at this size
    c.patches3d = ml_collections.ConfigDict(dict(patch_shape=(8, 8, 4) if tiny else (32, 32, 16),
                                                 box_shape=(8, 8, 4) if tiny else (32, 32, 16), **patch))
    c.scores = ml_collections.ConfigDict(dict(alpha=0.25, lambda1=1.0, lambda2=1.0, convention="matlab"))
    c.selection = ml_collections.ConfigDict(dict(omega=5))
    c.learner = ml_collections.ConfigDict(dict(kind="linear_probe", l2=1e-3 if tiny else 1e-2, newton_steps=8 if tiny else 30,
                                               guard_margin=0.05, min_spread=1e-3, bucket_min=32))
    c.features = ml_collections.ConfigDict(dict(chunk_size=128 if tiny else 512, device_batch=32))
    c.sim = ml_collections.ConfigDict(dict(
        scans="synthetic" if tiny else "ct_chest:heart,ct_abdomen",  # sample:positive organ (none: negatives only)
        spacing_mm=3.0,  # the encoder's pre-training spacing
        hu_window=(-1000.0, 1000.0),  # the encoder's pre-training window, mapped to [0, 1]
        body_hu=-500.0,  # candidate centres lie where HU > this
        grid_step=2 if tiny else 4,  # voxels between candidate centres (12 mm): the spatial de-duplication
        block=8,  # z blocks (voxels): even ones give the pool, odd ones the test set
        pool_n=200 if tiny else 2000,
        test_n=100 if tiny else 1500,
        positive_fraction=0.1 if tiny else 0.08,
        hard_fraction=0.5,
        warm_start=8 if tiny else 32,
        rounds=3 if tiny else 15,
        budget=4 if tiny else 16,
        seeds=3 if tiny else 30,
        arms="random,aift,balanced_oracle",
        bootstrap=200 if tiny else 10_000,
        out="runs/active_learning_sim_tiny" if tiny else "experiments/results/active_learning_sim",
    ))
    return c
