"""Simulated annotation: AIFT scores + ACFT(HQ) vs random selection (RFT), with an oracle on labelled pools.

`:cpu2d` (the study, the script's default) and `:cpu2d,tiny` (its smoke run): the headroom pool of 2D liver vs
intensity-matched soft-tissue candidates of the sample CT, M_0 = the Genesis-2D encoder cached by
experiments/_study.py, no random first round, 10 seeds, ACFT at 1/10 of the restart rate; see
experiments/active_learning_sim.py for what is measured, the gate and the pre-registered outcome.
The older 3D variants follow.

Run:
  python experiments/active_learning_sim.py --config=active/simulation:tiny
Expected (tiny, a 3D smoke run of the loop): per pool (synthetic, and liver cubes of the sample CT when it is
cached or downloadable), the test AUC after every round of every arm and seed, the gate,
runs/active_learning_sim_tiny/{curves.png,results.json}, and the last printed line
`annotation_saving_vs_random: ...`. Tiny 3D networks trained from scratch, 40 labels and one random first round:
it checks the machinery, its numbers mean nothing.
Learning rates: those of acft.py (the continual rate 1/10 of the restart rate from M_0, as published; stated again
below). The default variant (no `:tiny`) uses the published constants and network size (acft.py default) on larger pools
and needs a GPU. Overrides: --config.sim.seeds=5 --config.sim.rounds=10 --config.sim.budget=16 ...
"""

import ml_collections

from genesis_jax.configs.active import acft
from genesis_jax.configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False, setting=("3d", "cpu2d"))
    if opts.setting == "cpu2d":
        return _cpu2d_config(opts.tiny)
    tiny = opts.tiny
    c = acft.get_config("tiny" if tiny else None)
    c.learner.restart_lr_factor = 10.0  # published: continual rate (learner.learning_rate) = restart rate / 10
    if tiny:
        c.patches.flips_rotations = 4  # 2 scales x 4 flips = 8 patches, so alpha*m = 2 patches are scored
        c.learner.epochs = 2.0
    c.sim = ml_collections.ConfigDict(
        dict(
            pools="synthetic,ct",  # comma-separated; 'ct' runs only when the sample CT data is available
            pool_n=160 if tiny else 2000,
            test_n=150 if tiny else 1000,
            ct_sample="ct_abdomen",  # genesis_jax.data.samples name; liver labels are TotalSegmentator outputs
            ct_hu_min=-160.0,  # soft-tissue window: liver vs its neighbours is a contrast of a few percent
            ct_hu_max=240.0,
            ct_positive_fraction=0.2,
            rounds=5 if tiny else 12,
            budget=8 if tiny else 16,
            seeds=3 if tiny else 5,
            # name=selection/strategy, comma-separated. aift: AIFT scores + randomised selection, fine-tuned like the
            # baseline (published AFT(LQ), isolates the effect of selection); acft_hq: the same selection with the
            # published continual ACFT(HQ); random: random queries, fine-tuned from M_0 on all labels every round
            # (the published RFT baseline).
            arms="aift=randomized/aft_lq,acft_hq=randomized/acft_hq,random=random/aft_lq",
            baseline_arm="random",
            # the arm of the last printed line. Not acft_hq: with a tiny network trained from scratch, fine-tuning
            # only on H u Q (often a single class) collapses the ranking in our runs; it is reported beside it.
            primary_arm="aift",
            # M_0 here is a random initialisation (published: ImageNet-pretrained), whose scores carry no
            # information; the active arms' first round(s) query at random instead. 0 = the published algorithm.
            initial_random_rounds=1 if tiny else 0,
            eval_centre_patch_only=tiny,  # test AUC from the centre patch (tiny, for speed) or the patch-set mean
            primary_pool="ct",  # the pool of the last printed line (falls back to the first pool run)
            out="runs/active_learning_sim_tiny" if tiny else "experiments/results/active_learning_sim_3d",
        )
    )
    return c


# Negatives of the headroom pool: soft-tissue organs of the ct_abdomen labels whose median HU (12-49) is near the
# liver's (46); their detection boxes are further resampled to the liver's box-mean intensity histogram.
SOFT_TISSUE_NEGATIVES = ("spleen", "kidney_right", "kidney_left", "stomach", "pancreas", "gallbladder", "duodenum",
                         "small_bowel", "iliopsoas_left", "iliopsoas_right", "autochthon_left", "autochthon_right",
                         "aorta", "inferior_vena_cava")


def _cpu2d_config(tiny: bool) -> ml_collections.ConfigDict:
    """The CPU study: 2D liver-vs-other-organ candidates of the sample CT, M_0 = the Genesis-2D encoder."""
    c = acft.get_config("tiny")
    study = dict(base_width=2, depth=2) if tiny else dict(base_width=8, depth=3)  # experiments/_study.py sizes
    c.model.update(dict(ndim=2, hidden=16, **study))
    c.patches.update(dict(patch_shape=(12, 12), box_shape=(12, 12), scales=(1.0, 1.25), flips_rotations=4))
    c.pool.context_size = 24
    # published ratio: the continual rate (ACFT) is 1/10 of the restart rate (AFT/RFT from M_0)
    c.learner.update(dict(learning_rate=3e-4, restart_lr_factor=10.0, epochs=2.0, batch_size=16, min_steps=40,
                          max_steps=200, calibration_size=64, class_balanced=True))
    if tiny:
        c.learner.update(dict(min_steps=2, max_steps=4))
    c.sim = get_config("tiny").sim  # the CT window and the arms as the 3D study has them; the rest set here
    c.sim.update(dict(
        pools="ct_matched",
        pool_n=80 if tiny else 400,
        test_n=60 if tiny else 300,
        ct_positive="liver",
        ct_negatives=",".join(SOFT_TISSUE_NEGATIVES),
        rounds=2 if tiny else 8,
        budget=4 if tiny else 8,
        seeds=2 if tiny else 10,
        # M_0 is the Genesis-2D pre-trained encoder (as published: a pre-trained M_0, no random first round)
        initial_random_rounds=0,
        init="genesis_2d",  # the cached weights of experiments/_study.py (or a weights directory, or '' = fresh)
        pretrain_steps=2 if tiny else 300,
        study_workdir="runs/studies_2d/" + ("tiny" if tiny else "full"),
        min_headroom=0.05,  # (full-pool AUC) - (AUC after the first random round) below this: uninformative
        eval_centre_patch_only=False,
        primary_pool="ct_matched",
        bootstrap=10_000,
        out="runs/studies_2d/tiny/active_learning_sim" if tiny else "experiments/results/active_learning_sim",
        ct_positive_fraction=0.3,
    ))
    return c
