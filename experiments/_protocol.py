"""The in-domain / cross-phase fine-tuning protocol shared by annotation_efficiency.py and pretext_comparison.py.

What it owns:

- **Data** (:func:`organ_data`): the organ's axial slices of the training scan ``ct_abdomen`` (non-contrast) cut
  into contiguous blocks of ``BLOCK`` slices separated by ``GAP`` unused slices, the blocks dealt in the repeating
  pattern ``PATTERN`` to the labelled training pool, the validation set and the in-domain test set (no two sets
  touch: a gap lies between any two blocks); the cross-phase test is the whole ``ct_dicom`` scan (another patient,
  portal-venous contrast), read here but used for nothing before the final test.
- **Pre-training** (:func:`pretrained_weights`): the gated 2D pre-training of a pretext on the sample corpus
  (``pretrain/sample_corpus_2d``: train ct_abdomen, ct_chest, ct_lung1; gate on the held-out ct_lung2; never
  ct_dicom), run once under the study's workdir and then read from there, or a given weights directory
  (:func:`given_weights`, its ``metadata.json``'s gate record); the gate record decides whether the weights are
  transferred at all.
- **Fine-tuning** (:func:`run_arm`): R paired replicates of one arm (an initialisation) at one k, one after the
  other through one jitted step. Replicate r draws its k
  labelled slices with seed r (nested in k: ``_study.labelled_subset``), its batches, crops and augmentation from
  key r, the same in every arm; the arms differ in their initial weights only (scratch: He-uniform kernels, as
  ``finetune``'s scratch baseline; pre-trained: ``transfer_variables`` of the weights, head re-initialised from
  key r). Each step: 4 random 64x64 crops of the k slices (half centred on a random organ pixel), nnU-Net-style
  augmentation on the device (``genesis_jax.transforms.augment``, intensity transforms included: the cross-phase
  scan is 45-47 HU brighter), Dice loss, Adam. Every ``eval_every`` steps the BatchNorm statistics are re-estimated
  on fixed unlabelled crops of the pool slices (precise BN) and the validation Dice (whole validation slices) is
  recorded; each replicate keeps its best-by-validation weights, and only those are tested (in-domain test blocks
  and the whole ct_dicom scan, Dice at 0.5 over all voxels of the set). The step budget is a recipe constant
  chosen before any test number was seen; the validation curves and the best steps are kept to judge it.
- **Run cache**: each (organ, k, arm) group is stored as JSON under ``<workdir>/runs`` with its full key, written
  after every replicate, so an interrupted study resumes at its next replicate and the two studies share identical groups (scratch, genesis).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # this checkout
import _study as S  # noqa: E402

BLOCK, GAP = 4, 2
PATTERN = ("pool", "test", "val", "pool")
CROP = 64
DEFAULT_WORKDIR = S.REPO / "runs" / "studies_2d_v2"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that makes two fine-tuning groups comparable (part of every cache key)."""

    model: tuple = tuple(sorted(S.STUDY_MODEL.items()))
    steps: int = 80
    eval_every: int = 20
    batch: int = 4
    learning_rate: float = 1e-3
    loss: str = "dice"
    bn_crops: int = 32
    replicates: int = 20

    @property
    def model_config(self) -> dict[str, Any]:
        return dict(self.model)


def tiny_recipe() -> Recipe:
    return Recipe(model=tuple(sorted(dict(S.STUDY_MODEL, base_width=2, depth=2).items())), steps=4, eval_every=2,
                  bn_crops=8, replicates=3)


# -- data ---------------------------------------------------------------------------------------------------------
def gapped_blocks(zs: Sequence[int], block: int = BLOCK, gap: int = GAP,
                  pattern: Sequence[str] = PATTERN) -> dict[str, list[list[int]]]:
    """The slices ``zs`` (in order) cut into blocks of ``block`` consecutive slices with ``gap`` unused slices
    after each, the blocks dealt to ``pattern``'s roles in turn; a last block shorter than ``block`` is unused.
    Returns role -> list of blocks (each a list of z); ``'gap'`` holds the unused slices."""
    zs = [int(z) for z in zs]
    out: dict[str, list[list[int]]] = {role: [] for role in (*pattern, "gap")}
    i = b = 0
    while i < len(zs):
        blk = zs[i:i + block]
        if len(blk) == block:
            out[pattern[b % len(pattern)]].append(blk)
            b += 1
        else:
            out["gap"].append(blk)
        out["gap"].append(zs[i + block:i + block + gap])
        i += block + gap
    out["gap"] = [[z for blk in out["gap"] for z in blk]]
    return out


def _slices(volume: Any) -> tuple[np.ndarray, np.ndarray]:
    """(Z, H, W) float32 image and label of a (X, Y, Z) labelled volume, zero-padded (air) so that H and W are
    multiples of 8 and at least the crop."""
    image = np.moveaxis(np.asarray(volume.image, np.float32), -1, 0)
    label = np.moveaxis((np.asarray(volume.label) > 0).astype(np.float32), -1, 0)
    pad = [(0, 0)] + [(0, max(CROP, -(-n // 8) * 8) - n) for n in image.shape[1:]]
    return np.pad(image, pad), np.pad(label, pad)


@dataclasses.dataclass
class OrganData:
    """One organ's slices: the training scan's pool / validation / in-domain test blocks and the cross-phase scan."""

    organ: str
    image: np.ndarray  # (Z, H, W) ct_abdomen, [0, 1]
    label: np.ndarray
    blocks: dict[str, list[list[int]]]
    cross_image: np.ndarray  # (Z', H', W') ct_dicom
    cross_label: np.ndarray

    def z(self, role: str) -> list[int]:
        return [z for blk in self.blocks[role] for z in blk]

    def describe(self) -> str:
        return (f"{self.organ}: {len(self.z('pool'))} pool, {len(self.z('val'))} validation, {len(self.z('test'))} "
                f"in-domain test slices of ct_abdomen (blocks of {BLOCK}, gaps of {GAP}: pool {self.blocks['pool']}, "
                f"validation {self.blocks['val']}, test {self.blocks['test']}); cross-phase test: all "
                f"{self.cross_image.shape[0]} slices of ct_dicom")


@functools.lru_cache(maxsize=4)
def organ_data(organ: str) -> OrganData:
    """The organ's study data from the cached sample CTs at 3 mm (genesis_jax.data, the layout of
    finetune/liver_sample:binary: train ct_abdomen, test ct_dicom)."""
    from genesis_jax.data.task_data import as_labelled_volume, load_task_data

    data = load_task_data(S.finetune_config_2d(organ, 1, 1))
    image, label = _slices(as_labelled_volume(data.train[0]))
    zs = [int(z) for z in np.flatnonzero(label.any(axis=(1, 2)))]
    blocks = gapped_blocks(zs)
    if sum(map(len, blocks["pool"])) < 8 or not blocks["val"] or not blocks["test"]:
        raise ValueError(f"{organ}: {len(zs)} organ slices in ct_abdomen are too few for the gapped split {blocks}")
    cross_image, cross_label = _slices(data.test_volumes[0])
    return OrganData(organ, image, label, blocks, cross_image, cross_label)


# -- pre-training -------------------------------------------------------------------------------------------------
PRETRAIN_STEPS = {"genesis": 2500, "mim": 600, "genesis_mim": 600}


def pretrained_weights(pretext: str, workdir: Path, tiny: bool = False, train: bool = True) -> dict[str, Any]:
    """The gated ``pretrain/sample_corpus_2d:<pretext>`` pre-training under ``workdir/pretrain_<pretext>`` with
    ``PRETRAIN_STEPS[pretext]`` steps: run (or resumed) to its budget, its output appended to
    ``pretrain_<pretext>.log``, then read from its summary. ``train=False``: only what is there (an unfinished run
    reports its last validation's figures and no weights). Returns {pretext, weights, gate, passed, step,
    steps_per_s (median of the logged training rows), fingerprint, log}."""
    from genesis_jax.config_loader import load_config
    from genesis_jax.train.pretrain import pretrain

    config = load_config(f"pretrain/sample_corpus_2d:{pretext}{',tiny' if tiny else ''}")
    if tiny:
        config.num_devices = 1  # a smoke run on one device also where tests fake several CPU devices
    else:
        config.max_steps = PRETRAIN_STEPS[pretext]
    run_dir = Path(workdir) / f"pretrain_{pretext}"
    log = Path(workdir) / f"pretrain_{pretext}.log"
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    finished = bool(summary.get("weights")) and summary.get("step", 0) >= config.max_steps
    if not finished and train:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            summary = pretrain(config, run_dir)
        finished = True
    rows = metrics(run_dir)
    speeds = [r["steps_per_s"] for r in rows if r.get("kind") == "train" and r.get("steps_per_s")]
    gate = (summary.get("pretext_gate") or {}) if finished else {}
    if not finished:
        last = [r for r in rows if r.get("kind") == "validation"][-1:]
        if last:
            v = last[0]
            gate = {"restoration_mse": v["val_restoration_mse"], "batch_mean_mse": v["val_batch_mean_mse"],
                    "clean_identity_mse": v["val_clean_identity_mse"], "passed": False, "unfinished": True,
                    "ratio_to_batch_mean": v["val_restoration_mse"] / v["val_batch_mean_mse"]}
    step = summary.get("step") if finished else (rows[-1].get("step") if rows else 0)
    # the weights are the run's best-by-validation export, which may predate its last step
    exported = f" (weights: best, step {summary['best_step']})" if finished and summary.get("best_step") else ""
    return {"pretext": pretext, "weights": summary.get("weights") if finished else None, "gate": gate,
            "passed": finished and bool(gate.get("passed")), "finished": finished, "budget": int(config.max_steps),
            "step": step, "origin": f"sample_corpus_2d, step {step}{exported}, held-out ct_lung2",
            "steps_per_s": float(np.median(speeds)) if speeds else float("nan"),
            "fingerprint": summary.get("params_fingerprint", ""), "log": str(log)}


def given_weights(path: str | Path, pretext: str) -> dict[str, Any]:
    """A pre-trained weights directory given instead of :func:`pretrained_weights`' run, as the same record: its
    gate is the one its ``metadata.json`` holds (``pretext_gate``; {} when it records none), its cache tag the
    parameters' fingerprint. Raises ValueError (one line) for a path that is not a weights directory or weights of
    another pretext; whether they are transferred is the caller's decision (``passed``)."""
    import jax
    import jax.numpy as jnp

    from genesis_jax.models.weights import is_weights_dir, load_weights
    from genesis_jax.pretext.gate import RECORD_KEY
    from genesis_jax.train.loop import params_fingerprint

    path = Path(path).expanduser().resolve()
    if not is_weights_dir(path):
        raise ValueError(f"{path}: not a genesis_jax weights directory")
    variables, _, metadata = load_weights(path)
    if metadata.get("pretext", pretext) != pretext:
        raise ValueError(f"{path}: weights of the pretext {metadata['pretext']!r}, this study's arm is {pretext!r}")
    gate = metadata.get(RECORD_KEY) or {}
    step = metadata.get("step")
    made = f", pre-trained in {metadata['workdir']}" if metadata.get("workdir") else ""
    return {"pretext": pretext, "weights": str(path), "gate": gate, "passed": bool(gate.get("passed")),
            "finished": True, "budget": step, "step": step, "origin": f"weights metadata: step {step}{made}",
            "steps_per_s": float("nan"), "log": "",
            "fingerprint": params_fingerprint(jax.tree.map(jnp.asarray, variables["params"]))}


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gate_line(pre: dict[str, Any]) -> str:
    """One line: the pretext's gate figures on the held-out scan and the verdict."""
    g = pre["gate"]
    if not g:
        return f"gate {pre['pretext']}: no gate record (weights {pre['weights']}): NOT transferred"
    if g.get("unfinished"):
        return (f"gate {pre['pretext']}: pre-training unfinished at step {pre['step']} of {pre['budget']} (last "
                f"validation: restoration MSE {g['restoration_mse']:.4g} = {g['ratio_to_batch_mean']:.3f} x batch-mean, "
                f"clean identity MSE {g['clean_identity_mse']:.4g}): NOT transferred")
    clean = (f", clean identity MSE {g['clean_identity_mse']:.4g} (<= {g['max_clean_mse']:g})"
             if g.get("max_clean_mse") is not None else f", clean identity MSE {g['clean_identity_mse']:.4g}")
    origin = pre.get("origin") or f"sample_corpus_2d, step {pre['step']}, held-out ct_lung2"  # or a weights dir's
    return (f"gate {pre['pretext']} ({origin}): restoration MSE "
            f"{g['restoration_mse']:.4g} = {g['ratio_to_batch_mean']:.3f} x batch-mean {g['batch_mean_mse']:.4g} "
            f"(<= {g['max_ratio']:g}){clean}: {'PASSED' if g['passed'] else 'FAILED, not transferred'}; "
            f"weights {pre['weights']}")


# -- fine-tuning --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Init:
    """An arm's initial weights: 'scratch', a weights directory, or a variables file (a fine-tuned control)."""

    name: str
    kind: str = "scratch"  # 'scratch' | 'weights' | 'variables'
    path: str = ""
    tag: str = ""  # the weights' fingerprint (cache key)


def _model(recipe: Recipe, scratch: bool):
    from genesis_jax.models import build_model
    from genesis_jax.train.transfer import scratch_model_config

    config = recipe.model_config
    return build_model(scratch_model_config(config, "he_uniform") if scratch else config)


@functools.lru_cache(maxsize=8)
def _init_fn(recipe: Recipe, scratch: bool) -> Any:
    import jax
    import jax.numpy as jnp

    model = _model(recipe, scratch)
    sample = jnp.zeros((1, CROP, CROP, 1), jnp.float32)
    return jax.jit(lambda key: model.init({"params": key, "dropout": key}, sample, train=False))


def _initial_variables(recipe: Recipe, init: Init, seed: int) -> dict[str, Any]:
    """One replicate's initial variables (host arrays)."""
    import jax
    import jax.numpy as jnp
    from flax import serialization

    if init.kind == "variables":
        stored = serialization.msgpack_restore(Path(init.path).read_bytes())
        return {"params": stored["params"], "batch_stats": stored["batch_stats"]}
    fresh = jax.device_get(_init_fn(recipe, init.kind == "scratch")(jax.random.key(int(seed))))
    fresh = {"params": fresh["params"], "batch_stats": fresh.get("batch_stats", {})}
    if init.kind == "weights":
        from genesis_jax.models import adaptation_record
        from genesis_jax.models.weights import init_adaptation_record, load_weights
        from genesis_jax.train.transfer import transfer_variables

        source, source_config, _ = load_weights(init.path)
        record, _ = init_adaptation_record(init.path, source_config)
        fresh = transfer_variables(fresh, source, "segmentation", False, init.name,
                                   target_record=adaptation_record(recipe.model_config), source_record=record)[0]
    return fresh


def _dice(pred: Any, label: Any) -> Any:
    import jax.numpy as jnp

    p = (pred[..., 0] > 0.5).astype(jnp.float32)
    return 2.0 * jnp.sum(p * label) / jnp.maximum(jnp.sum(p) + jnp.sum(label), 1.0)


def bn_training(model: Any, tx: Any, loss_fn: Callable[[Any, Any], Any]) -> tuple[Callable, Callable]:
    """The studies' two shared pieces for a BatchNorm network: ``update(params, stats, opt_state, x, y, k_drop) ->
    (params, stats, opt_state, loss)``, one optimiser step with BatchNorm in training mode (``loss_fn(y, outputs)``;
    traced inside the caller's jitted step), and the jitted ``precise_stats(params, stats, x)``, the BatchNorm
    statistics of the weights on ``x`` (precise BN)."""
    import jax
    import optax

    from genesis_jax.train.precise_bn import batch_moments, merge_batch_stats

    def update(params, stats, opt_state, x, y, k_drop):
        def loss(p):
            out, new = model.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"],
                                   rngs={"dropout": k_drop})
            return loss_fn(y, out), new["batch_stats"]

        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, value

    @jax.jit
    def precise_stats(params, stats, x):
        return merge_batch_stats(stats, batch_moments(model, {"params": params, "batch_stats": stats}, x))

    return update, precise_stats


@functools.lru_cache(maxsize=4)
def _program(recipe: Recipe):
    """(optimiser, train_step, precise_stats, dice): one replicate's jitted step and evaluation. (A ``vmap`` over replicates
    turns the convolutions into grouped ones, and a ``lax.map``/``scan`` of the step ran ~40x slower per step on
    the 2-core CPU than this plain jitted step called from Python.)"""
    import jax
    import jax.numpy as jnp
    import optax

    from genesis_jax.train.losses import get_loss
    from genesis_jax.transforms.augment import AugmentSettings, augment_batch

    model = _model(recipe, False)  # the kernel initialiser only matters at init: one compiled apply for both arms
    loss_fn = get_loss(recipe.loss)
    tx = optax.adam(recipe.learning_rate)
    settings = AugmentSettings()

    def crops(key, images, labels, idx, n):
        """``recipe.batch`` crops of the first ``n`` slices of ``idx`` (padded to a fixed length, so every k runs
        the same compiled step): half centred on a random organ pixel, half anywhere."""
        h, w = images.shape[1:]

        def one(key):
            ks = jax.random.split(key, 5)
            z = idx[jax.random.randint(ks[0], (), 0, n)]
            img, lab = images[z], labels[z]
            pos = jax.random.categorical(ks[1], jnp.where(lab.reshape(-1) > 0, 0.0, -1e9))
            centred = jnp.stack([pos // w - CROP // 2, pos % w - CROP // 2])
            anywhere = jnp.stack([jax.random.randint(ks[2], (), 0, h - CROP + 1),
                                  jax.random.randint(ks[3], (), 0, w - CROP + 1)])
            corner = jnp.where(jax.random.bernoulli(ks[4]), centred, anywhere)
            corner = jnp.clip(corner, 0, jnp.array([h - CROP, w - CROP]))
            return (jax.lax.dynamic_slice(img, (corner[0], corner[1]), (CROP, CROP)),
                    jax.lax.dynamic_slice(lab, (corner[0], corner[1]), (CROP, CROP)))

        x, y = jax.vmap(one)(jax.random.split(key, recipe.batch))
        return x[..., None], y[..., None]

    update, precise_stats = bn_training(model, tx, loss_fn)

    @jax.jit
    def train_step(params, stats, opt_state, key, idx, n, images, labels):
        k_crop, k_aug, k_drop = jax.random.split(key, 3)
        x, y = crops(k_crop, images, labels, idx, n)
        x, y = augment_batch(k_aug, x, y, settings)
        return update(params, stats, opt_state, x, y, k_drop)

    @jax.jit
    def dice(params, stats, images, labels):
        """The Dice at 0.5 over all voxels of the set (whole slices, inference mode)."""
        return _dice(model.apply({"params": params, "batch_stats": stats}, images[..., None], train=False), labels)

    return tx, train_step, precise_stats, dice


def _key(organ: str, k: int | None, init: Init, recipe: Recipe, data: OrganData, pool: Sequence[int]) -> dict:
    return json.loads(json.dumps({"organ": organ, "k": k, "init": dataclasses.asdict(init),
                                  "recipe": dataclasses.asdict(recipe), "blocks": data.blocks, "pool": list(pool)}))


def _bn_crops(data: OrganData, pool: Sequence[int], n: int) -> np.ndarray:
    """Fixed unlabelled crops of the pool slices for the precise-BN statistics (the same for every run)."""
    rng = np.random.default_rng(12345)
    z = rng.choice(list(pool), n)
    h, w = data.image.shape[1:]
    a, b = rng.integers(0, h - CROP + 1, n), rng.integers(0, w - CROP + 1, n)
    return np.stack([data.image[zi, ai:ai + CROP, bi:bi + CROP] for zi, ai, bi in zip(z, a, b)])[..., None]


def run_arm(data: OrganData, k: int | None, init: Init, recipe: Recipe, workdir: Path,
            pool: Sequence[int] | None = None, name: str = "", save_best: bool = False, train: bool = True
            ) -> tuple[list[dict[str, Any]], bool]:
    """``recipe.replicates`` paired fine-tunings of one arm at k labelled slices (None: the whole pool) drawn from
    ``pool`` (default: the organ's pool blocks). Cached per replicate (an interrupted group resumes at its next
    replicate; ``train=False``: only the cached replicates). Returns (per-replicate results, all from the cache)."""
    import jax
    import jax.numpy as jnp

    pool = list(pool if pool is not None else data.z("pool"))
    path = Path(workdir) / "runs" / data.organ / f"{name or init.name}_k{'all' if k is None else k}.json"
    key = _key(data.organ, k, init, recipe, data, pool)
    results: list[dict[str, Any]] = []
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            results = stored["results"]
    if len(results) >= recipe.replicates or not train:
        return results[:recipe.replicates], True
    tx, train_step, precise_stats, dice = _program(recipe)
    images, labels = jnp.asarray(data.image), jnp.asarray(data.label)
    bn_crops = jnp.asarray(_bn_crops(data, pool, recipe.bn_crops))
    sets = {role: (jnp.asarray(data.image[data.z(role)]), jnp.asarray(data.label[data.z(role)]))
            for role in ("val", "test")}
    cross = (jnp.asarray(data.cross_image), jnp.asarray(data.cross_label))
    path.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(len(results), recipe.replicates):
        started = time.time()
        subset = S.labelled_subset(pool, k, seed)
        # positions in the (Z, H, W) stack are the z themselves; padded to one length for every k and pool
        idx = jnp.asarray(np.resize(np.asarray(subset, np.int32), data.image.shape[0]))
        n = jnp.asarray(len(subset), jnp.int32)
        variables = _initial_variables(recipe, init, seed)
        params, stats = variables["params"], variables["batch_stats"]
        opt_state = tx.init(params)
        base = jax.random.key(seed)
        best = (-1.0, 0, None)
        curve = []
        for step in range(1, recipe.steps + 1):
            params, stats, opt_state, _ = train_step(params, stats, opt_state, jax.random.fold_in(base, step), idx,
                                                     n, images, labels)
            if step % recipe.eval_every == 0 or step == recipe.steps:
                precise = precise_stats(params, stats, bn_crops)
                value = float(dice(params, precise, *sets["val"]))
                curve.append((step, value))
                if value > best[0]:
                    best = (value, step, (params, precise))
        # the test sets, once, with the best-by-validation weights and their precise-BN statistics
        best_params, best_stats = best[2]
        in_domain = float(dice(best_params, best_stats, *sets["test"]))
        cross_phase = float(dice(best_params, best_stats, *cross))
        results.append({"seed": seed, "slices": subset, "best_step": best[1], "val_dice": best[0],
                        "in_domain": in_domain, "cross_phase": cross_phase, "val_steps": [c[0] for c in curve],
                        "val_curve": [c[1] for c in curve], "seconds": time.time() - started})
        path.write_text(json.dumps({"key": key, "results": results}))
        if save_best and seed == 0:
            _save_variables(path.with_suffix(".best.msgpack"), best_params, best_stats)
    return results, False


def _save_variables(path: Path, params: Any, stats: Any) -> None:
    """One replicate's best-by-validation variables (the positive control's init)."""
    import jax
    from flax import serialization

    params, stats = jax.tree.map(np.asarray, (params, stats))
    path.write_bytes(serialization.msgpack_serialize({"params": params, "batch_stats": stats}))


def weights_init(pre: dict[str, Any]) -> Init:
    return Init(name=pre["pretext"], kind="weights", path=str(pre["weights"]), tag=pre["fingerprint"])


def group_line(organ: str, k: int | None, arm: str, results: list[dict], cached: bool) -> str:
    vals = {e: [r[e] for r in results] for e in ("in_domain", "cross_phase")}
    steps = [r["best_step"] for r in results]
    took = "cached" if cached else f"{sum(r['seconds'] for r in results):.0f} s"
    return (f"{organ:6s} k={'all' if k is None else k:>3} {arm:12s}: in-domain Dice "
            f"{S.fmt(*S.mean_sd(vals['in_domain']))}, cross-phase {S.fmt(*S.mean_sd(vals['cross_phase']))}, best "
            f"step median {int(np.median(steps))} ({len(results)} replicates, "
            f"{took})")




# -- paired comparisons -------------------------------------------------------------------------------------------
ENDPOINTS = ("in_domain", "cross_phase")


def paired(arm: list[dict[str, Any]], reference: list[dict[str, Any]], endpoint: str) -> dict[str, Any]:
    """``S.paired_summary`` of arm-minus-reference on ``endpoint``, paired by replicate seed (the seeds both hold),
    with both arms' mean+-sd."""
    a = {r["seed"]: r[endpoint] for r in arm}
    b = {r["seed"]: r[endpoint] for r in reference}
    seeds = sorted(set(a) & set(b))
    return {**S.paired_summary([a[s] - b[s] for s in seeds]), "arm": S.mean_sd([a[s] for s in seeds]),
            "reference": S.mean_sd([b[s] for s in seeds]), "seeds": seeds}


def fmt_paired(c: dict[str, Any], p: bool = True) -> str:
    if not c["n"] or not np.isfinite(c["lo"]):
        return f"{c['mean']:+.3f} (n={c['n']})" if c["n"] else "n/a"
    out = f"{c['mean']:+.3f} (95% CI {c['lo']:+.3f} to {c['hi']:+.3f}"
    return out + (f", sign-flip p {c['p']:.3g})" if p else ")")


def aulc(groups: dict[int, list[dict[str, Any]]], endpoint: str) -> list[dict[str, Any]]:
    """Per replicate seed present at every k: the area under its learning curve (``endpoint`` over log2 k, the
    trapezoid divided by the log2 range), as result rows {seed, <endpoint>}."""
    ks = sorted(groups)
    seeds = set.intersection(*({r["seed"] for r in groups[k]} for k in ks)) if ks else set()
    value = {k: {r["seed"]: r[endpoint] for r in groups[k]} for k in ks}
    return [{"seed": s, endpoint: S.area_under_curve(np.log2(ks), [value[k][s] for k in ks])} for s in sorted(seeds)]


def best_step_note(results: list[dict[str, Any]], recipe: Recipe) -> str:
    """How many replicates chose their last validation step (a budget that may have been too short)."""
    last = sum(r["best_step"] == recipe.steps for r in results)
    return f"{last}/{len(results)} at the last step"
