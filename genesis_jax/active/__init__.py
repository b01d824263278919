"""Active, continual fine-tuning (AIFT, CVPR'17; ACFT, MedIA'21): augmented patch sets and their predictions on
the device (``patches``), the entropy/diversity scores with majority selection (``scores``), randomised top-omega*b
selection (``selection``), continual fine-tuning strategies (``learner``), a linear probe on cached encoder
features with a chance-loss guard (``linear_probe``, the simulation's stable learner), candidate pools (``pool``), the
crash-safe human-in-the-loop state (``state``), its entry functions (``session``; M_0 from weights by the transfer
rule of :mod:`genesis_jax.train.transfer`) and the active configs' checks (``config_checks``)."""

from genesis_jax.active.learner import STRATEGIES, ContinualLearner, misclassified, plan_round
from genesis_jax.active.linear_probe import LinearProbe, TrainingFailure, encode_patch_sets
from genesis_jax.active.patches import PatchSet, PoolPredictor, candidate_patches, make_patch_set, patch_probabilities
from genesis_jax.active.pool import CandidatePool, load_pool, save_pool, synthetic_pool
from genesis_jax.active.scores import ALPHA, MATLAB_EPS, OMEGA, aift_scores, binary_probs, majority_count
from genesis_jax.active.selection import pool_probabilities, select_candidates

__all__ = [
    "ALPHA",
    "MATLAB_EPS",
    "OMEGA",
    "STRATEGIES",
    "CandidatePool",
    "ContinualLearner",
    "LinearProbe",
    "PatchSet",
    "PoolPredictor",
    "TrainingFailure",
    "aift_scores",
    "binary_probs",
    "candidate_patches",
    "encode_patch_sets",
    "load_pool",
    "majority_count",
    "make_patch_set",
    "misclassified",
    "patch_probabilities",
    "plan_round",
    "pool_probabilities",
    "save_pool",
    "select_candidates",
    "synthetic_pool",
]
