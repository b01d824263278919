"""Organ-patch classification across scans: the cheap, high-replicate companion of annotation_efficiency.py
(issue 24, item 6). Does a Genesis-pre-trained 2D encoder make an organ classifier better than the same network
randomly initialised, with few labels, on the training patient and on another patient in another contrast phase?

What it owns: the patch data (centres, classes, the gapped split), the two learners on one classifier network, the
per-replicate run cache, the tables, the plot and the last line. It reuses the annotation study's gapped slice
blocks, gate line and paired statistics (``_protocol``, ``_study``) and the active-learning simulation's probe
(``genesis_jax.active.linear_probe``: features = global average pool of the encoder's bottleneck, a softmax head
fitted to convergence with a chance-loss guard).

Design (written and committed before the full run):

- Task: 6-way classification of 2D axial 32x32 patches at 3 mm (96 mm of context, the encoder's input form,
  intensities in its pre-training window [-1000, 1000] HU -> [0, 1]) by the TotalSegmentator class of the
  patch centre: liver, spleen, stomach, vertebra (any vertebrae_*), paraspinal muscle (autochthon left/right),
  other body tissue (HU > -500, none of the five). Every class is labelled in both ct_abdomen and ct_dicom (the
  kidneys are not: ct_dicom holds none). A centre counts only when its 3x3 in-plane neighbourhood (9 mm) is one
  class (no boundary patches). Centres lie on a 12 mm in-plane grid (every 4th voxel: spatial de-duplication) on
  every slice of a set's blocks; at most 300 centres per class and set (a seeded draw; validation: 50).
- Split: ct_abdomen's slices that hold a liver, spleen or stomach centre (z 70-111) in blocks of 4 with gaps of
  2, dealt pool / test / validation / pool (``_protocol.gapped_blocks``, the annotation study's pattern). Pool = the
  labelled-patch source; validation = the only data any selection reads; in-domain test = the test blocks;
  shifted-domain test = every slice of ct_dicom (another patient, portal-venous contrast, organs 45-47 HU
  brighter; never seen by the pre-training). The two endpoints are reported separately. Caveat: the pre-training
  read ct_abdomen unlabelled, test blocks included (ct_dicom never).
- Arms: pre-trained (the gated Genesis weights' encoder; weights whose ``pretext_gate`` did not pass are refused)
  and scratch (the same network, He-uniform kernels from the replicate's seed). Both arms get the same labelled
  draws: replicate r takes k patches per class with seed r (``_study.labelled_subset``, nested in k).
- Learner (a) linear probe: the frozen encoder (BatchNorm statistics re-estimated on 256 fixed unlabelled pool
  patches, both arms), features of every patch computed once per arm and replicate (the scratch encoder is the
  replicate's), standardised with the pool's statistics, an L2 (1e-2) softmax head fitted by Newton steps to
  convergence; a fit at chance loss is a training failure and leaves the comparison (counted and reported).
  k = 1, 2, 4, 8, 16 per class and all pool patches.
- Learner (b) fine-tuning: the published classification head (GAP -> Dense 1024 + ReLU -> Dense 6) on the encoder
  (``genesis_classifier``; pre-trained: ``transfer_variables`` of the encoder, head new), all weights trained:
  Adam 1e-3, batch 16 class-balanced draws of the labelled patches with +-1 voxel random shifts, 60 steps,
  validation balanced accuracy every 15 steps after precise BatchNorm on the same 256 unlabelled pool patches,
  the best-by-validation weights tested. k = 1, 4, 16 per class and all (fewer k than the probe: CPU time).
  The budget was fixed from CPU time before any test number was seen.
- Endpoint: balanced accuracy (mean per-class recall) on each test set; per learner, endpoint and k the paired
  difference pre-trained - scratch over 20 replicates with its 95% Student-t interval and the exact two-sided
  sign-flip p; the area under the curve over log2 k (k = 1 to 16: the k common to all replicates, "all" excluded).
- Positive control (shows the protocol can see an effect): an encoder fine-tuned from scratch on every patch of
  the even pool blocks (300 steps, best by validation) vs scratch, both learners, at k = 1 drawn from the odd pool
  block (disjoint from the control's patches and from every test block).

EXPECTED OUTCOME (written and committed before the full run; issue 24's direction, expected, not promised):
linear probe in-domain: pre-trained above scratch at small k (+0.03 to +0.10 balanced accuracy at k = 1-4, the
95% CI above 0 at k = 1 or 2), the gap shrinking with k and about 0 (|d| < 0.03) with all labels; AULC positive.
Fine-tuning: the same direction, smaller and noisier (60 steps from one to a few patches per class). Shifted
domain (ct_dicom): lower accuracies for both arms and a smaller, noisier difference (the contrast shift is
unseen by both). Positive control: clearly positive at k = 1 for both learners (> +0.05, p < 0.01). What may
defeat it: random-feature probes are strong baselines on small, intensity-driven tasks; one training and one
test patient; labels are TotalSegmentator's model outputs; a tiny network pre-trained on three scans.

RESULT (the full run with --weights = the gated demo weights, 20 replicates, ~35 min of the loaded CPU; as printed,
the design unchanged after the look; experiments/results/organ_classification.md): not the expected direction.
Linear probe in-domain: about 0 at k = 1-4 (k=1 -0.003, CI -0.043 to +0.036), then positive at k = 8 (+0.038, CI
+0.019 to +0.057) and 16 (+0.044, CI +0.031 to +0.057), +0.015 with all (an unweighted probe on the imbalanced
whole pool scores below k = 16 in both arms); AULC +0.014 (CI +0.001 to +0.027). Shifted domain: the pre-trained
probe is lower (all: -0.059, CI -0.073 to -0.046). Fine-tuning in-domain: +0.006 to +0.012, no CI excludes 0;
shifted domain: +0.041 (k=1, CI +0.002 to +0.081) to +0.053 (all, CI +0.017 to +0.089). Positive control at
k = 1: probe +0.230 in-domain, fine-tuning +0.145 (both p 1.9e-06): effects of that size would have been seen.
Most fine-tuning replicates chose their last validation step (the 60-step budget is short).

Run (the full study: ~20-40 min of a loaded 2-core CPU; cached per replicate under --workdir, the same command
resumes; --no-train reports what is cached):
  python experiments/organ_classification.py --weights /path/to/gated/2d/genesis/weights
  python experiments/organ_classification.py --tiny --weights DIR   # a smoke run of the same path
  (without --weights: the protocol's gated pre-training under --workdir, shared with annotation_efficiency.py)
Writes experiments/results/organ_classification.{md,csv,json,png}; the first line is the weights' gate, the last
  pretrained_minus_scratch_linear_probe_in_domain: k=1 <d> (95% CI <lo> to <hi>, sign-flip p <p>), k=2 ..., k=all ...
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
import _study as S  # noqa: E402
import annotation_efficiency as A  # noqa: E402
import numpy as np  # noqa: E402

ORGANS: dict[str, Callable[[str], bool]] = {
    "liver": lambda n: n == "liver",
    "spleen": lambda n: n == "spleen",
    "stomach": lambda n: n == "stomach",
    "vertebra": lambda n: n.startswith("vertebrae_"),
    "paraspinal_muscle": lambda n: n in ("autochthon_left", "autochthon_right"),
}
CLASS_NAMES = (*ORGANS, "other_body")
SLAB_ORGANS = ("liver", "spleen", "stomach")  # the training slab: ct_abdomen's slices holding one of these
PATCH, SHIFT, GRID = 32, 1, 4  # patch side, random shift (voxels) in fine-tuning, centre grid step (12 mm)
BODY_HU = -500.0
SPACING = (3.0, 3.0, 3.0)
ENDPOINTS = ("in_domain", "shifted_domain")
LEARNERS = ("linear_probe", "fine_tuning")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that makes two groups comparable (part of every cache key)."""

    ks: tuple = (1, 2, 4, 8, 16, None)  # labelled patches per class; None: the whole pool
    ft_ks: tuple = (1, 4, 16, None)
    replicates: int = 20
    cap: int = 300  # centres per class and set
    val_cap: int = 50
    probe_l2: float = 1e-2
    newton_steps: int = 30
    hidden: int = 1024
    steps: int = 60
    eval_every: int = 15
    batch: int = 16
    learning_rate: float = 1e-3
    bn_patches: int = 256
    control_steps: int = 300


def tiny_recipe() -> Recipe:
    return Recipe(ks=(1, 2, None), ft_ks=(1, None), replicates=3, cap=12, val_cap=6, newton_steps=8, hidden=8,
                  steps=4, eval_every=2, batch=4, bn_patches=16, control_steps=4)


# -- data ---------------------------------------------------------------------------------------------------------
def labelled_ct(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(image01, classes), both (X, Y, Z) at 3 mm, of a sample CT: intensities in the encoder's window, and per
    voxel the index in CLASS_NAMES of its 3x3 in-plane neighbourhood when that is one class (-1: mixed, or air)."""
    from scipy import ndimage

    from genesis_jax.data import samples
    from genesis_jax.data.normalize import normalize_ct
    from genesis_jax.data.readers import resample

    volume, label = samples.load_sample(name), samples.load_sample_label(name)
    if tuple(volume.spacing) != SPACING:
        volume, label = resample(volume, SPACING), resample(label, SPACING, order=0)
    names = samples.sample_info(name)["classes"]
    classes = np.where(volume.array > BODY_HU, len(ORGANS), -1).astype(np.int16)
    for c, is_class in enumerate(ORGANS.values()):
        classes[np.isin(label.array, [i for i, n in names.items() if is_class(n)])] = c
    pure = ndimage.minimum_filter(classes, (3, 3, 1)) == ndimage.maximum_filter(classes, (3, 3, 1))
    return normalize_ct(volume.array), np.where(pure, classes, -1).astype(np.int16)


@dataclasses.dataclass
class Patches:
    """Candidates of one set: contexts (n, PATCH + 2 SHIFT, same, 1) in [0, 1], class indices, (x, y, z) centres."""

    contexts: np.ndarray
    labels: np.ndarray
    centres: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        """The unshifted PATCH x PATCH patches (what every evaluation reads)."""
        return self.contexts[:, SHIFT:SHIFT + PATCH, SHIFT:SHIFT + PATCH]

    def counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(CLASS_NAMES)).tolist()

    def members(self, c: int) -> list[int]:
        return np.flatnonzero(self.labels == c).tolist()

    def subset(self, rows: Sequence[int]) -> Patches:
        rows = np.asarray(rows, np.int64)
        return Patches(self.contexts[rows], self.labels[rows], self.centres[rows])


def cut_patches(image01: np.ndarray, classes: np.ndarray, zs: Sequence[int], cap: int, seed: int) -> Patches:
    """The grid centres of slices ``zs`` whose class is known, at most ``cap`` per class (a seeded draw)."""
    from genesis_jax.data.patches import crop_centered

    grid = np.zeros(classes.shape[:2], bool)
    grid[GRID // 2::GRID, GRID // 2::GRID] = True
    centres = np.concatenate([np.column_stack([*np.nonzero(grid & (classes[:, :, z] >= 0)), np.full(
        np.count_nonzero(grid & (classes[:, :, z] >= 0)), z)]) for z in zs])
    labels = classes[tuple(centres.T)].astype(np.int32)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([np.sort(rng.permutation(np.flatnonzero(labels == c))[:cap])
                           for c in range(len(CLASS_NAMES))])
    side = PATCH + 2 * SHIFT
    contexts = np.stack([crop_centered(image01[:, :, z], (x, y), (side, side)) for x, y, z in centres[keep]])
    return Patches(contexts[..., None].astype(np.float32), labels[keep], centres[keep])


@dataclasses.dataclass
class StudyData:
    """The four sets (pool, val, test of ct_abdomen; shifted = ct_dicom) and the ct_abdomen blocks they came from."""

    sets: dict[str, Patches]
    blocks: dict[str, list[list[int]]]
    n_shifted_slices: int

    def describe(self) -> str:
        counts = "; ".join(f"{name} {s.counts()}" for name, s in self.sets.items())
        return (f"patches per class {list(CLASS_NAMES)}: {counts}. ct_abdomen blocks of {P.BLOCK}, gaps of "
                f"{P.GAP}: pool {self.blocks['pool']}, validation {self.blocks['val']}, in-domain test "
                f"{self.blocks['test']}; shifted-domain test: all {self.n_shifted_slices} slices of ct_dicom")


@functools.lru_cache(maxsize=2)
def study_data(cap: int, val_cap: int) -> StudyData:
    image, classes = labelled_ct("ct_abdomen")
    slab = [int(z) for z in np.flatnonzero(np.isin(classes, [list(ORGANS).index(o) for o in SLAB_ORGANS])
                                           .any(axis=(0, 1)))]
    blocks = P.gapped_blocks(slab)
    sets = {role: cut_patches(image, classes, [z for b in blocks[role] for z in b], val_cap if role == "val" else cap,
                              seed=i) for i, role in enumerate(("pool", "val", "test"))}
    cross_image, cross_classes = labelled_ct("ct_dicom")
    sets["shifted"] = cut_patches(cross_image, cross_classes, range(cross_image.shape[2]), cap, seed=3)
    for name, s in sets.items():
        if min(s.counts()) < 1:
            raise ValueError(f"{name}: a class has no patch ({dict(zip(CLASS_NAMES, s.counts()))})")
    return StudyData(sets, blocks, cross_image.shape[2])


# -- the network ----------------------------------------------------------------------------------------------------
def classifier_config(backbone: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The published classifier (genesis_classifier) on the weights' Genesis U-Net encoder, logits out."""
    cfg = {k: v for k, v in backbone.items() if k not in ("name", "num_classes", "head_activation")}
    return {**cfg, "name": "genesis_classifier", "num_classes": len(CLASS_NAMES), "hidden": recipe.hidden,
            "activation": None}


def encoder_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """The classifier's backbone as Genesis U-Net variables (the probe's frozen encoder)."""
    return {"params": variables["params"]["backbone"], "batch_stats": variables["batch_stats"]["backbone"]}


@functools.lru_cache(maxsize=4)
def _init_fn(cfg_items: tuple, scratch: bool) -> Callable:
    import jax
    import jax.numpy as jnp

    from genesis_jax.models import build_model
    from genesis_jax.train.transfer import scratch_model_config

    cfg = dict(cfg_items)
    model = build_model(scratch_model_config(cfg, "he_uniform") if scratch else cfg)
    return jax.jit(lambda key: model.init({"params": key, "dropout": key}, jnp.zeros((1, PATCH, PATCH, 1)), train=False))


def initial_variables(cfg: dict[str, Any], init: P.Init, seed: int) -> dict[str, Any]:
    """Replicate ``seed``'s classifier variables: scratch (He-uniform), the encoder of a weights directory
    (``transfer_variables``, classification: the head new), or the backbone of a saved classifier (the control)."""
    import jax
    from flax import serialization

    fresh = jax.device_get(_init_fn(tuple(sorted(cfg.items())), init.kind == "scratch")(jax.random.key(int(seed))))
    fresh = {"params": dict(fresh["params"]), "batch_stats": dict(fresh["batch_stats"])}
    if init.kind == "variables":
        stored = serialization.msgpack_restore(Path(init.path).read_bytes())
        fresh["params"]["backbone"] = stored["params"]["backbone"]
        fresh["batch_stats"]["backbone"] = stored["batch_stats"]["backbone"]
    elif init.kind == "weights":
        from genesis_jax.models import adaptation_record
        from genesis_jax.models.weights import init_adaptation_record, load_weights
        from genesis_jax.train.transfer import transfer_variables

        source, source_config, _ = load_weights(init.path)
        record, _ = init_adaptation_record(init.path, source_config)
        fresh = transfer_variables(fresh, source, "classification", False, init.name,
                                   target_record=adaptation_record(cfg), source_record=record)[0]
    return fresh


@functools.lru_cache(maxsize=4)
def _program(cfg_items: tuple, recipe: Recipe):
    """(optimiser, train_step, precise_stats, predict, features): the jitted pieces every run shares."""
    import jax
    import jax.numpy as jnp
    import optax

    from genesis_jax.active.linear_probe import encode_patch_sets, gap_feature_fn
    from genesis_jax.active.patches import make_patch_set
    from genesis_jax.models import build_model

    cfg = dict(cfg_items)
    model = build_model(cfg)
    unet = build_model({k: v for k, v in cfg.items() if k not in ("hidden", "activation")} | {
        "name": "genesis_unet", "num_classes": 1})
    tx = optax.adam(recipe.learning_rate)
    n_classes = len(CLASS_NAMES)
    update, precise_stats = P.bn_training(
        model, tx, lambda y, logits: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())

    @jax.jit
    def train_step(params, stats, opt_state, key, contexts, labels, labelled, n):
        """One step on ``recipe.batch`` class-balanced draws from the first ``n`` of ``labelled`` (indices into
        ``contexts``, padded to one length so every k runs the same compiled step), each shifted at random."""
        k_cls, k_pick, k_shift, k_drop = jax.random.split(key, 4)
        wanted = jax.random.randint(k_cls, (recipe.batch,), 0, n_classes)
        ok = (jnp.arange(labelled.shape[0]) < n)[None] & (labels[labelled][None] == wanted[:, None])
        rows = labelled[jax.random.categorical(k_pick, jnp.where(ok, 0.0, -1e9))]
        offsets = jax.random.randint(k_shift, (recipe.batch, 2), 0, 2 * SHIFT + 1)
        x = jax.vmap(lambda r, o: jax.lax.dynamic_slice(contexts[r], (o[0], o[1], 0), (PATCH, PATCH, 1)))(rows, offsets)
        y = labels[rows]
        return update(params, stats, opt_state, x, y, k_drop)

    @jax.jit
    def predict(params, stats, patches):
        return jnp.argmax(model.apply({"params": params, "batch_stats": stats}, patches, train=False), axis=-1)

    patch_set, feature_fn = make_patch_set((PATCH, PATCH)), gap_feature_fn(unet)

    def features(variables, patches):
        """(n, 1, D) GAP bottleneck features of the frozen encoder (the probe's input form)."""
        return encode_patch_sets(feature_fn, encoder_variables(variables), patches, patch_set, 512, 128)

    return tx, train_step, precise_stats, predict, features


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """The mean over classes of the share of that class's patches predicted as it (per-class recall)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in np.unique(labels)]))


def labelled_rows(pool: Patches, k: int | None, seed: int) -> list[int]:
    """Replicate ``seed``'s labelled pool rows: k per class (nested in k), every row when k is None."""
    return sorted(r for c in range(len(CLASS_NAMES)) for r in S.labelled_subset(pool.members(c), k, seed))


# -- run cache ------------------------------------------------------------------------------------------------------
def cached_runs(path: Path, key: dict[str, Any], replicates: int, run_one: Callable[[int], dict], train: bool
                ) -> tuple[list[dict[str, Any]], bool]:
    """Per-replicate results of one group, cached in ``path`` under ``key`` and written after every replicate (an
    interrupted group resumes at its next replicate; ``train=False``: only what is cached)."""
    key = json.loads(json.dumps(key, default=str))
    results: list[dict[str, Any]] = []
    if path.is_file():
        stored = json.loads(path.read_text())
        results = stored["results"] if stored["key"] == key else []
    if len(results) >= replicates or not train:
        return results[:replicates], True
    path.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(len(results), replicates):
        results.append(run_one(seed))
        path.write_text(json.dumps({"key": key, "results": results}, default=float))
    return results, False


class Study:
    """One classifier configuration on the study data: the probe and fine-tuning runs of any init."""

    def __init__(self, data: StudyData, backbone: dict[str, Any], recipe: Recipe, workdir: Path):
        import jax.numpy as jnp

        self.data, self.recipe, self.workdir = data, recipe, Path(workdir)
        self.cfg = classifier_config(backbone, recipe)
        self.program = _program(tuple(sorted(self.cfg.items())), recipe)
        pool = data.sets["pool"]
        rows = np.random.default_rng(12345).choice(len(pool.labels), min(recipe.bn_patches, len(pool.labels)),
                                                   replace=False)
        self.bn_patches = jnp.asarray(pool.centre[np.sort(rows)])  # unlabelled: the same for every run
        self.device = {name: (jnp.asarray(s.contexts), jnp.asarray(s.centre), jnp.asarray(s.labels))
                       for name, s in data.sets.items()}

    def key(self, learner: str, init: P.Init, k: int | None, pool_rows: Sequence[int] | None) -> dict[str, Any]:
        return {"learner": learner, "init": dataclasses.asdict(init), "k": k, "recipe": dataclasses.asdict(self.recipe),
                "cfg": self.cfg, "counts": {n: s.counts() for n, s in self.data.sets.items()},
                "blocks": self.data.blocks, "pool_rows": None if pool_rows is None else list(pool_rows)}

    def encoder(self, init: P.Init, seed: int) -> dict[str, Any]:
        """The replicate's variables with precise BatchNorm statistics on the unlabelled pool patches."""
        _, _, precise_stats, _, _ = self.program
        v = initial_variables(self.cfg, init, seed)
        return {"params": v["params"], "batch_stats": precise_stats(v["params"], v["batch_stats"], self.bn_patches)}

    # -- (a) the linear probe ---------------------------------------------------------------------------------
    def probe(self, init: P.Init, name: str, ks: Sequence[int | None], pool_rows: Sequence[int] | None = None,
              train: bool = True) -> tuple[dict[Any, list[dict]], bool]:
        """{k: per-replicate results} of the probe on ``init``'s frozen encoder; the pool restricted to
        ``pool_rows`` (the control) when given. A fit the guard rejects is recorded with its failure."""
        from genesis_jax.active.linear_probe import LinearProbe, TrainingFailure

        recipe = self.recipe
        probe = LinearProbe(len(CLASS_NAMES), recipe.probe_l2, recipe.newton_steps)
        pool = self.data.sets["pool"] if pool_rows is None else self.data.sets["pool"].subset(pool_rows)
        features = self.program[4]
        shared: dict[str, Any] = {}

        def run_one(seed: int) -> dict:
            started = time.time()
            if init.kind == "scratch" or not shared:  # a fixed encoder's features are the same every replicate
                v = self.encoder(init, seed)
                f = {n: features(v, s.centre) for n, s in (("pool", pool), ("test", self.data.sets["test"]),
                                                           ("shifted", self.data.sets["shifted"]))}
                mean, std = f["pool"].mean(axis=(0, 1)), f["pool"].std(axis=(0, 1)) + 1e-6  # unlabelled pool
                shared.update({n: (x - mean) / std for n, x in f.items()})
            out = {"seed": seed, "per_k": {}}
            for k in ks:
                rows = labelled_rows(pool, k, seed)
                res = {"labelled": len(rows), "failure": None}
                try:
                    fit = probe.fit(shared["pool"][rows], pool.labels[rows])
                    for endpoint, part in zip(ENDPOINTS, ("test", "shifted")):
                        pred = probe.predict(fit, shared[part]).mean(axis=1).argmax(-1)
                        res[endpoint] = balanced_accuracy(self.data.sets[part].labels, pred)
                    res["train_loss"], res["chance_loss"] = fit.loss, fit.chance_loss
                except TrainingFailure as err:
                    res.update({"failure": str(err), **{e: float("nan") for e in ENDPOINTS}})
                out["per_k"][A.kname(k)] = res
            out["seconds"] = time.time() - started
            return out

        path = self.workdir / "runs" / f"probe_{name}.json"
        runs, cached = cached_runs(path, self.key("probe", init, tuple(ks), pool_rows), recipe.replicates, run_one,
                                   train)
        # each k's rows carry the replicate's seconds (features and every k's fit together)
        return {k: [{"seed": r["seed"], "seconds": r["seconds"], **r["per_k"][A.kname(k)]} for r in runs]
                for k in ks}, cached

    # -- (b) fine-tuning ------------------------------------------------------------------------------------------
    def finetune_one(self, init: P.Init, k: int | None, seed: int, pool_rows: Sequence[int], steps: int,
                     save: Path | None = None) -> dict[str, Any]:
        """One replicate: fine-tune the classifier on its labelled rows, keep the best-by-validation weights, test
        them once on both test sets."""
        import jax
        import jax.numpy as jnp

        tx, train_step, precise_stats, predict, _ = self.program
        pool = self.data.sets["pool"]
        started = time.time()
        rows = np.asarray(pool_rows)[labelled_rows(pool.subset(pool_rows), k, seed)]
        labelled = jnp.asarray(np.resize(rows.astype(np.int32), len(pool.labels)))
        contexts, _, labels = self.device["pool"]
        v = initial_variables(self.cfg, init, seed)
        params, stats = v["params"], v["batch_stats"]
        opt_state = tx.init(params)
        base = jax.random.key(seed)
        best, curve = (-1.0, 0, None), []
        for step in range(1, steps + 1):
            params, stats, opt_state, _ = train_step(params, stats, opt_state, jax.random.fold_in(base, step),
                                                     contexts, labels, labelled, jnp.int32(len(rows)))
            if step % self.recipe.eval_every == 0 or step == steps:
                precise = precise_stats(params, stats, self.bn_patches)
                value = balanced_accuracy(self.data.sets["val"].labels,
                                          predict(params, precise, self.device["val"][1]))
                curve.append((step, value))
                if value > best[0]:
                    best = (value, step, (params, precise))
        params, precise = best[2]
        out = {"seed": seed, "labelled": len(rows), "best_step": best[1], "val": best[0],
               "val_steps": [c[0] for c in curve], "val_curve": [c[1] for c in curve]}
        for endpoint, part in zip(ENDPOINTS, ("test", "shifted")):
            out[endpoint] = balanced_accuracy(self.data.sets[part].labels, predict(params, precise, self.device[part][1]))
        if save is not None:
            P._save_variables(save, params, precise)
        out["seconds"] = time.time() - started
        return out

    def finetune(self, init: P.Init, name: str, k: int | None, pool_rows: Sequence[int] | None = None,
                 train: bool = True) -> tuple[list[dict], bool]:
        rows = list(range(len(self.data.sets["pool"].labels))) if pool_rows is None else list(pool_rows)
        path = self.workdir / "runs" / f"finetune_{name}_k{A.kname(k)}.json"
        return cached_runs(path, self.key("finetune", init, k, pool_rows), self.recipe.replicates,
                           lambda seed: self.finetune_one(init, k, seed, rows, self.recipe.steps), train)


# -- the study ------------------------------------------------------------------------------------------------------
def summarise(groups: dict[str, dict], ks: Sequence[int | None]) -> dict[str, dict]:
    """Per endpoint: per k the paired genesis-minus-scratch statistics (failed fits excluded), and the AULC over
    the numeric k."""
    ok = {arm: {k: [r for r in groups[arm].get(k, []) if not r.get("failure")] for k in ks} for arm in groups}
    out = {}
    for e in ENDPOINTS:
        per_k = {k: P.paired(ok["genesis"][k], ok["scratch"][k], e) for k in ks if ok["genesis"][k]}
        numeric = [k for k in ks if k is not None and ok["genesis"][k]]
        area = (P.paired(P.aulc({k: ok["genesis"][k] for k in numeric}, e),
                         P.aulc({k: ok["scratch"][k] for k in numeric}, e), e) if len(numeric) > 1 else None)
        out[e] = {"per_k": per_k, "aulc": area}
    return out


def plot(groups: dict[str, dict], summaries: dict[str, dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genesis_jax.visualize import save_png

    panels = [(learner, e) for learner in summaries for e in ENDPOINTS]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 7.5), squeeze=False)
    for col, (learner, e) in enumerate(panels):
        ks = list(groups[learner]["scratch"])
        x = np.arange(len(ks))
        for arm, style in (("scratch", "s--"), ("genesis", "o-")):
            m = [S.mean_sd([r[e] for r in groups[learner][arm].get(k, []) if not r.get("failure")]) for k in ks]
            axes[0, col].errorbar(x, [v[0] for v in m], yerr=[v[1] for v in m], fmt=style, capsize=3,
                                  label=f"{arm} (mean+-sd)")
        per_k = summaries[learner][e]["per_k"]
        d = np.array([[per_k[k]["mean"], per_k[k]["mean"] - per_k[k]["lo"], per_k[k]["hi"] - per_k[k]["mean"]]
                      if k in per_k else [np.nan] * 3 for k in ks])
        axes[1, col].errorbar(x, d[:, 0], yerr=d[:, 1:].T, fmt="o", capsize=4)
        axes[1, col].axhline(0, color="k", lw=0.8)
        for row, ylabel in ((0, "balanced accuracy"), (1, "genesis - scratch (95% t-CI)")):
            ax = axes[row, col]
            ax.set_xticks(x, [A.kname(k) for k in ks])
            ax.set(xlabel="labelled patches per class", ylabel=ylabel, title=f"{learner}: {e}")
            ax.grid(alpha=0.3)
        axes[0, col].axhline(1 / len(CLASS_NAMES), color="gray", ls=":", lw=1)
        axes[0, col].legend(fontsize=8)
    fig.suptitle(title)
    save_png(fig, path, dpi=90)
    plt.close(fig)
    return path


def positive_control(study: Study, train: bool) -> dict[str, Any] | None:
    """An encoder fine-tuned from scratch on every patch of the even pool blocks vs scratch, both learners, at k=1
    drawn from the odd pool blocks (disjoint from the control's patches and from every test block)."""
    pool, blocks = study.data.sets["pool"], study.data.blocks["pool"]
    seen_z = {z for b in blocks[0::2] for z in b}
    seen = [i for i, c in enumerate(pool.centres) if c[2] in seen_z]
    unseen = [i for i, c in enumerate(pool.centres) if c[2] not in seen_z]
    weights = study.workdir / "runs" / "control_source.best.msgpack"
    recipe = dataclasses.replace(study.recipe, replicates=1)
    source, _ = cached_runs(study.workdir / "runs" / "control_source.json",
                            study.key("control_source", P.Init("scratch"), None, seen), 1,
                            lambda seed: study.finetune_one(P.Init("scratch"), None, seed, seen, recipe.control_steps,
                                                            save=weights), train)
    if not source or not weights.is_file():
        return None
    control = P.Init("control", "variables", str(weights), tag=str(source[0]["val"]))
    out: dict[str, Any] = {"source_blocks": blocks[0::2], "source_val": source[0]["val"],
                           "source_best_step": source[0]["best_step"]}
    for learner in LEARNERS:
        arms = {}
        for name, init in (("scratch", P.Init("scratch")), ("control", control)):
            if learner == "linear_probe":
                res, cached = study.probe(init, f"control_{name}", (1,), unseen, train)
                res = res[1]
            else:
                res, cached = study.finetune(init, f"control_{name}", 1, unseen, train)
            if res:
                print(group_line(learner, 1, f"control:{name}", res, cached), flush=True)
            arms[name] = [r for r in res if not r.get("failure")]
        if not all(arms.values()):
            return None
        out[learner] = {e: P.paired(arms["control"], arms["scratch"], e) for e in ENDPOINTS}
    return out


def group_line(learner: str, k: int | None, arm: str, results: list[dict], cached: bool) -> str:
    ok = [r for r in results if not r.get("failure")]
    took = "cached" if cached else f"{sum(r.get('seconds', 0) for r in results):.0f} s"
    failed = len(results) - len(ok)
    return (f"{learner:12s} k={A.kname(k):>3} {arm:16s}: balanced accuracy in-domain "
            f"{S.fmt(*S.mean_sd([r['in_domain'] for r in ok]))}, shifted {S.fmt(*S.mean_sd([r['shifted_domain'] for r in ok]))}"
            f" ({len(ok)} replicates{f', {failed} training failures' if failed else ''}, {took})")


def parse(argv=None) -> argparse.Namespace:
    """The annotation study's options (--workdir, --results, --no-train, --tiny, --weights; --organs is not read)."""
    args = A.parse(argv, __doc__)
    args.recipe = tiny_recipe() if args.tiny else Recipe()
    return args


def main(argv=None) -> int:
    args = parse(argv)
    S.setup_jax(args.workdir)
    try:
        pre = P.given_weights(args.weights, "genesis") if args.weights else P.pretrained_weights(
            "genesis", args.workdir, args.tiny, train=not args.no_train)
    except ValueError as err:
        print(f"error: --weights: {err}", file=sys.stderr)
        return 2
    print(P.gate_line(pre), flush=True)
    if not A.transferable(pre, args.tiny):
        print(f"organ_classification: the weights {pre['weights']} did not pass their restoration gate: refused "
              "(nothing to compare)")
        return 2
    if args.tiny and not pre["passed"]:
        print("(smoke run: the tiny pre-training is transferred despite its gate, to test the path)")
    from genesis_jax.models.weights import load_weights

    backbone = load_weights(pre["weights"])[1]
    recipe = args.recipe
    data = study_data(recipe.cap, recipe.val_cap)
    print(data.describe(), flush=True)
    study = Study(data, backbone, recipe, args.workdir / "organ_classification")
    train = not args.no_train
    genesis = P.weights_init(pre)
    arms = {"scratch": P.Init("scratch"), "genesis": genesis}
    groups: dict[str, dict] = {learner: {arm: {} for arm in arms} for learner in LEARNERS}
    for arm, init in arms.items():
        res, cached = study.probe(init, arm, recipe.ks, train=train)
        groups["linear_probe"][arm] = {k: v for k, v in res.items() if v}
        for k, v in groups["linear_probe"][arm].items():
            print(group_line("linear_probe", k, arm, v, cached), flush=True)
    for k in recipe.ft_ks:
        for arm, init in arms.items():
            res, cached = study.finetune(init, arm, k, train=train)
            if res:
                groups["fine_tuning"][arm][k] = res
                print(group_line("fine_tuning", k, arm, res, cached), flush=True)
    control = positive_control(study, train)
    summaries = {learner: summarise(groups[learner], ks) for learner, ks in
                 (("linear_probe", recipe.ks), ("fine_tuning", recipe.ft_ks))}

    header = ["learner", "endpoint", "labelled per class", "n", "scratch", "Genesis",
              "Genesis - scratch (95% t-CI, sign-flip p)", "training failures (scratch/Genesis)"]
    rows = []
    for learner, s in summaries.items():
        for e, es in s.items():
            for k, c in es["per_k"].items():
                fails = "/".join(str(sum(bool(r.get("failure")) for r in groups[learner][a][k])) for a in arms)
                rows.append([learner, e, A.kname(k), c["n"], S.fmt(*c["reference"]), S.fmt(*c["arm"]),
                             P.fmt_paired(c), fails])
            if es["aulc"]:
                c = es["aulc"]
                rows.append([learner, e, "AULC (log2 k, k=1..16)", c["n"], S.fmt(*c["reference"]), S.fmt(*c["arm"]),
                             P.fmt_paired(c), ""])
    if control:
        for learner in LEARNERS:
            for e in ENDPOINTS:
                c = control[learner][e]
                rows.append([learner, e, "1 (positive control: fine-tuned encoder vs scratch)", c["n"],
                             S.fmt(*c["reference"]), S.fmt(*c["arm"]), P.fmt_paired(c), ""])
    ft = groups["fine_tuning"]
    curves = [f"fine_tuning {arm} k={A.kname(k)}: mean validation balanced accuracy by step " + " ".join(
        f"{st}:{np.mean([r['val_curve'][i] for r in res]):.3f}" for i, st in enumerate(res[0]["val_steps"]))
        + f"; best step at the budget's end in {sum(r['best_step'] == recipe.steps for r in res)}/{len(res)}"
        for arm, g in ft.items() for k, res in g.items()]
    command = " ".join(argv if argv is not None else sys.argv[1:]).strip()
    notes = [
        f"Command: `python experiments/organ_classification.py{' ' + command if command else ''}`",
        f"Machine: {S.machine()} (shared and loaded: timings are not clean).",
        f"Recipe: {dataclasses.asdict(recipe)}; classifier {study.cfg}.",
        P.gate_line(pre),
        data.describe(),
        *curves,
        ("Positive control: encoder = scratch classifier fine-tuned on every pool patch of blocks "
         f"{control['source_blocks']} (validation balanced accuracy {control['source_val']:.3f} at step "
         f"{control['source_best_step']}); k=1 drawn from the other pool block" if control
         else "Positive control: not run (or not finished)."),
        ("Statistics: paired differences over the replicate seeds (a probe fit at chance loss leaves its seed out "
         "of that k's comparison); 95% Student-t interval; exact two-sided sign-flip p (all 2^n sign patterns); "
         "AULC = trapezoidal area under balanced accuracy over log2(k), k = 1..16, / log2 range; chance = "
         f"{1 / len(CLASS_NAMES):.3f}."),
        "Labels are TotalSegmentator's model outputs; one training and one test patient; a small CPU study.",
    ]
    out = args.results
    png = plot(groups, summaries, out / "organ_classification.png",
               f"Organ-patch classification: Genesis-2D vs scratch, {recipe.replicates} paired replicates")
    raw = {"pretrain": pre, "recipe": dataclasses.asdict(recipe), "classes": CLASS_NAMES,
           "counts": {n: s.counts() for n, s in data.sets.items()}, "blocks": data.blocks,
           "groups": {lr: {a: {A.kname(k): v for k, v in g.items()} for a, g in gs.items()} for lr, gs in groups.items()},
           "summaries": {lr: {e: {"per_k": {A.kname(k): v for k, v in es["per_k"].items()}, "aulc": es["aulc"]}
                              for e, es in s.items()} for lr, s in summaries.items()},
           "control": control, "plot": str(png)}
    S.write_table("organ_classification", header, rows, notes, raw, out)
    print("\n".join(f"| {' | '.join(str(c) for c in row)} |" for row in [header, *rows]))
    print("\n".join(curves))
    print(f"results: {out / 'organ_classification.md'}, plot: {png}")

    def final(learner: str, e: str) -> str:
        per_k = summaries[learner][e]["per_k"]
        ks = recipe.ks if learner == "linear_probe" else recipe.ft_ks
        return f"pretrained_minus_scratch_{learner}_{e}: " + ", ".join(
            f"k={A.kname(k)} " + (P.fmt_paired(per_k[k]) if k in per_k else "n/a") for k in ks)

    for learner, e in (("fine_tuning", "shifted_domain"), ("fine_tuning", "in_domain"),
                       ("linear_probe", "shifted_domain"), ("linear_probe", "in_domain")):
        print(final(learner, e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
