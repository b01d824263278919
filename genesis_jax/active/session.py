"""Entry functions of the human-in-the-loop ACFT loop (``genesis-jax al``): the only part of ``active`` that
reads configs.

- ``select(config, workdir, budget)``: score the unlabelled pool with the current model M_t (or reuse the scores
  saved by the last step), pick ``budget`` candidates, and write ``selections/round_t.{csv,json,png}``
  (ids, scores, predictions, an empty ``label`` column to fill in, and a thumbnail sheet).
- ``state.import_annotations(workdir, file)``: import the expert's labels (idempotent; unknown ids rejected).
- ``step(config, workdir)``: fine-tune M_t into M_{t+1} with the configured strategy (ACFT(HQ): the labels of this
  round plus the earlier ones M_t misclassifies), commit round t+1, and score the remaining pool with M_{t+1}.

The first command on an empty work directory initialises it: the pool's ids, the config, and M_0 (from
``config.init``, a genesis_jax weights directory, or a fresh initialisation).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from genesis_jax.active import state as st
from genesis_jax.active.config_checks import validate_active_config
from genesis_jax.active.learner import ContinualLearner
from genesis_jax.active.patches import make_patch_set
from genesis_jax.active.pool import CandidatePool, dataset_pool, load_pool, synthetic_pool
from genesis_jax.active.scores import aift_scores
from genesis_jax.active.selection import select_candidates
from genesis_jax.models import build_model, contract
from genesis_jax.models.spec import has_prefix
from genesis_jax.models.weights import init_adaptation_record, load_weights, save_weights
from genesis_jax.train.transfer import TransferError, transfer_variables
from genesis_jax.visualize import draw_panel, figure_png, panel_figure, save_curves, slice_of
from genesis_jax.workdir import crash_point, hold


# -- builders from a config ----------------------------------------------------------------------------------
def build_pool(pool_cfg: Any, spatial_dims: int = 3) -> CandidatePool:
    """``config.pool``: kind 'synthetic' (n, context_size, positive_fraction, hard_fraction, seed), 'npz' (path) or
    'dataset' (path: a prepared dataset folder, label: the positive label's name; n, context_size,
    positive_fraction, seed)."""
    if pool_cfg.kind == "synthetic":
        return synthetic_pool(
            pool_cfg.n, pool_cfg.context_size, pool_cfg.positive_fraction, pool_cfg.hard_fraction,
            seed=pool_cfg.seed, prefix=pool_cfg.prefix,
        )
    if pool_cfg.kind == "npz":
        if not pool_cfg.path:
            raise ValueError("config.pool.path: the .npz pool file is required when config.pool.kind='npz'")
        return load_pool(pool_cfg.path, spatial_dims)
    if pool_cfg.kind == "dataset":  # a prepared dataset folder (al --dataset=DIR --label=NAME)
        from genesis_jax.data.dataset_flag import labelled_volumes

        if not pool_cfg.path or not pool_cfg.get("label"):
            raise ValueError("config.pool: kind='dataset' needs path (the dataset folder, --dataset=DIR) and label "
                             "(--label=NAME)")
        return dataset_pool(labelled_volumes(pool_cfg.path, pool_cfg.label), pool_cfg.n, pool_cfg.context_size,
                            pool_cfg.positive_fraction, seed=pool_cfg.seed)
    raise ValueError(f"config.pool.kind must be 'synthetic', 'npz' or 'dataset', got {pool_cfg.kind!r}")


_LEARNERS: dict[tuple[str, int | None], ContinualLearner] = {}


def cached_learner(config: Any, max_traces: int | None = None) -> ContinualLearner:
    """One learner (and so one set of compilations) per model/patch/learner config in this process, so a
    notebook or a test running several rounds compiles once."""
    key = (json.dumps([config.model.to_dict(), config.patches.to_dict(), config.learner.to_dict()], default=list),
           max_traces)
    if key not in _LEARNERS:
        _LEARNERS[key] = build_learner(config, max_traces)
    return _LEARNERS[key]


def build_learner(config: Any, max_traces: int | None = None) -> ContinualLearner:
    p, lc = config.patches, config.learner
    patch_set = make_patch_set(
        p.patch_shape, p.box_shape or None, p.scales, p.translation, p.translation_mode, p.flips_rotations, p.seed
    )
    try:  # the config.learner fields are the learner's keyword arguments
        return ContinualLearner(build_model(config.model), patch_set, **lc.to_dict(), max_traces=max_traces)
    except TypeError as err:
        raise ValueError(f"config.learner has a field the learner does not take: {err}") from None


def make_key(config: Any, *folds: int) -> jax.Array:
    key = jax.random.key(config.seed, impl=config.get("prng_impl") or None)
    for f in folds:
        key = jax.random.fold_in(key, f)
    return key


def calibration_sample(contexts: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` contexts drawn at random from a pool (with replacement only when the pool is smaller)."""
    rng = np.random.default_rng(seed)
    return contexts[rng.choice(len(contexts), size, replace=len(contexts) < size)]


def initial_variables(learner: ContinualLearner, config: Any, contexts: np.ndarray) -> dict:
    """M_0 with BatchNorm statistics calibrated on a sample of the pool ``contexts``: fresh, or from
    ``config.init``: a weights directory of the same classifier, or of a GenesisUNet whose encoder levels become
    the classifier's backbone (a Models Genesis pre-trained encoder)."""
    calibration = calibration_sample(contexts, learner.calibration_size, config.seed)
    fresh = jax.tree.map(np.asarray, learner.init(make_key(config, 0), contexts.shape[1:]))
    return jax.tree.map(np.asarray, learner.calibrate(_load_init(config, fresh), calibration, make_key(config, 3)))


def _load_init(config: Any, fresh: dict) -> dict:
    """``fresh`` filled from ``config.init`` by the transfer rule of fine-tuning (:mod:`genesis_jax.train.transfer`):
    weights of the same network whole, another network's encoder (its weights directory's adaptation record, e.g. a
    GenesisUNet's ``encoder_*``) into this network's encoder (its decoder unused, the head fresh). Strict: anything
    that does not fit is an error."""
    if not config.init:
        return fresh
    loaded, model_cfg, _ = load_weights(config.init)
    target = contract(config.model.to_dict())
    source_record, _ = init_adaptation_record(config.init, model_cfg)
    whole = source_record.network == target.spec.name  # every array, the head included, by path
    if not whole and not source_record.encoder:
        raise ValueError(f"config.init={config.init}: a {source_record.network!r} has no encoder to initialise "
                         f"a {target.spec.name!r}")
    try:
        variables, report = transfer_variables(fresh, loaded, "segmentation" if whole else "classification",
                                               keep_head=whole, source_name=f"config.init={config.init}",
                                               target_record=target.adaptation_record(), source_record=source_record,
                                               strict=True)
    except TransferError as err:
        raise ValueError(f"config.init={config.init}: its weights do not fit config.model (different widths, depth "
                         f"or layers): {err}; model_config there: {model_cfg}") from None
    missing = report.fresh if whole else [p for p in report.fresh if has_prefix(p.split("/", 1)[1], target.encoder)]
    if missing:
        raise ValueError(f"config.init={config.init}: its weights do not fit config.model: no {missing[0]} there; "
                         f"model_config there: {model_cfg}")
    return jax.tree.map(np.asarray, variables)


# -- the session -----------------------------------------------------------------------------------------------
def _pool_check(workdir: Path, pool: CandidatePool) -> None:
    ids = st.load_pool_ids(workdir)
    if ids != pool.ids.tolist():
        raise st.StateError(
            f"{workdir / st.POOL_IDS_FILE}: the config's pool ({len(pool)} candidates) is not the pool this work "
            f"directory was started with ({len(ids)} candidates)"
        )


def _model_check(workdir: Path, config: Any) -> None:
    """Refuse a config whose network differs from the one the work directory was started with (its models could
    not be loaded into it), naming the first differing field."""
    stored = json.loads((workdir / st.CONFIG_FILE).read_text()).get("model", {}) if (
        workdir / st.CONFIG_FILE).is_file() else {}
    given = json.loads(config.model.to_json())
    for key in sorted(stored):  # the fields the work directory recorded
        if stored[key] != given.get(key):
            raise st.StateError(
                f"{workdir / st.CONFIG_FILE}: config.model.{key}={given.get(key)!r}, but this work directory's "
                f"models have {key}={stored.get(key)!r}; use its config or another --workdir"
            )


def _save_model(workdir: Path, round_: int, variables: Any, config: Any, metadata: dict) -> str:
    rel = st.model_dir_name(round_)
    save_weights(workdir / rel, variables, config.model.to_dict(), metadata)  # atomic; state.json points to it after
    return rel


@dataclasses.dataclass
class Session:
    config: ml_collections.ConfigDict
    workdir: Path
    pool: CandidatePool
    learner: ContinualLearner
    state: st.LoopState

    def variables(self, rel: str) -> dict:
        return load_weights(self.workdir / rel)[0]

    def available(self) -> np.ndarray:
        labelled = set(self.state.labels)
        return np.array([cid not in labelled for cid in self.pool.ids.tolist()])

    def scores_path(self, round_: int) -> Path:
        return self.workdir / f"scores/round_{round_:04d}.npz"

    def score_pool(self, variables: Any, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n,), mean patch probabilities (n, K)) of every pool candidate under ``variables``."""
        s = self.config.scores
        probs = self.learner.predict(variables, self.pool.contexts, progress=progress)
        scores = aift_scores(probs, s.alpha, s.lambda1, s.lambda2, s.convention)
        return np.asarray(scores), probs.mean(axis=1)

    def current_scores(self) -> tuple[np.ndarray, np.ndarray]:
        path = self.scores_path(self.state.round)
        if path.is_file():
            with np.load(path) as data:
                if data["ids"].tolist() == self.pool.ids.tolist():
                    return data["scores"], data["mean_probs"]
        scores, mean_probs = self.score_pool(self.variables(self.state.model))
        self.save_scores(self.state.round, scores, mean_probs)
        return scores, mean_probs

    def save_scores(self, round_: int, scores: np.ndarray, mean_probs: np.ndarray) -> Path:
        buf = io.BytesIO()
        np.savez(buf, ids=self.pool.ids, scores=scores, mean_probs=mean_probs)
        return st.atomic_write_bytes(self.scores_path(round_), buf.getvalue())


def open_session(config: ml_collections.ConfigDict, workdir: str | Path, max_traces: int | None = None) -> Session:
    """Load the work directory's state, initialising the directory (pool ids, config, M_0) on first use."""
    validate_active_config(config)
    workdir = Path(workdir)
    if st.has_state(workdir):
        _model_check(workdir, config)
    learner = cached_learner(config, max_traces)
    pool = build_pool(config.pool, learner.patch_set.ndim)
    in_channels = contract(config.model.to_dict()).in_channels
    if pool.contexts.shape[-1] != in_channels:
        raise ValueError(
            f"config.model: the network reads {in_channels} input channel(s) but the pool's contexts have "
            f"{pool.contexts.shape[-1]}"
        )
    if not st.has_state(workdir):
        workdir.mkdir(parents=True, exist_ok=True)
        st.atomic_write_json(workdir / st.POOL_IDS_FILE, pool.ids.tolist())
        st.atomic_write_text(workdir / st.CONFIG_FILE, config.to_json(indent=1) + "\n")
        variables = initial_variables(learner, config, pool.contexts)
        rel = _save_model(workdir, 0, variables, config, {"round": 0, "init": config.init or "fresh"})
        st.save_state(workdir, st.LoopState(model=rel, initial_model=rel, class_names=list(config.class_names)))
    else:
        _pool_check(workdir, pool)
    return Session(config, workdir, pool, learner, st.load_state(workdir))


def _thumbnail_sheet(contexts: np.ndarray, titles: list[str]) -> bytes:
    """PNG bytes: one panel per context (its middle axial slice of channel 0, scaled to its own range)."""
    n = len(contexts)
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    fig, axes = panel_figure(rows, cols, (1.6, 1.8), pyplot=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, ctx, title in zip(axes.ravel(), contexts, titles):
        draw_panel(ax, slice_of(ctx[..., 0]), title, vmin=None, vmax=None, fontsize=6)
    return figure_png(fig, dpi=100)


def select(
    config: ml_collections.ConfigDict, workdir: str | Path, budget: int, method: str | None = None
) -> dict[str, Path]:
    """Write the ``budget`` candidates to annotate at the current round. Repeating it at the same round with the
    same labels gives the same selection (the key is fixed per round). Holds the work directory's lock."""
    with hold(workdir, "al select"):
        return _select(config, workdir, budget, method)


def _select(config: ml_collections.ConfigDict, workdir: str | Path, budget: int, method: str | None) -> dict[str, Path]:
    session = open_session(config, workdir)
    state = session.state
    scores, mean_probs = session.current_scores()
    method = method or config.selection.method
    picked = select_candidates(
        make_key(config, 1, state.round), scores, budget, method, config.selection.omega, session.available()
    )
    picked = picked[np.argsort(-scores[picked], kind="stable")]
    names = state.class_names
    records = [
        {
            "rank": r + 1,
            "id": str(session.pool.ids[i]),
            "score": float(scores[i]),
            "predicted": names[int(np.argmax(mean_probs[i]))],
            "p_predicted": float(np.max(mean_probs[i])),
            "label": "",
        }
        for r, i in enumerate(picked)
    ]
    base = session.workdir / f"selections/round_{state.round:04d}"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    paths = {
        "csv": st.atomic_write_text(base.with_suffix(".csv"), out.getvalue()),
        "json": st.atomic_write_json(
            base.with_suffix(".json"),
            {"round": state.round, "method": method, "class_names": names, "candidates": records},
        ),
        "png": st.atomic_write_bytes(
            base.with_suffix(".png"),
            _thumbnail_sheet(
                session.pool.contexts[picked], [f"{r['id']}\n{r['score']:.3g}" for r in records]
            ),
        ),
    }
    return paths


@dataclasses.dataclass(frozen=True)
class StepSummary:
    round: int
    n_new: int
    n_misclassified: int
    n_trained: int
    loss: float
    model: str
    n_unlabelled: int
    n_mixed: int = 0  # earlier labels of a class missing from H u Q (ACFT(HQ), see genesis_jax.active.learner)
    already_done: bool = False  # the round had been committed by an earlier (e.g. killed) `al step`


def step(config: ml_collections.ConfigDict, workdir: str | Path, max_traces: int | None = None) -> StepSummary:
    """Fine-tune M_t on this round's labels (per the strategy), commit round t+1, score the remaining pool.
    Holds the work directory's lock: ``al label`` meanwhile waits, and imports into the committed state."""
    with hold(workdir, "al step"):
        return _step(config, workdir, max_traces)


def _step(config: ml_collections.ConfigDict, workdir: str | Path, max_traces: int | None) -> StepSummary:
    session = open_session(config, workdir, max_traces)
    state, pool = session.state, session.pool
    new_ids, old_ids = state.new_ids(), state.old_ids()
    if not new_ids and (done := _committed_round(state)) is not None:
        # A rerun after the commit (the earlier step was killed while scoring, or simply ran twice): the round is
        # trained; finish what the commit left (the pool's scores) and say so.
        session.current_scores()
        plot_rounds(session.workdir, state.history)
        return StepSummary(state.round, int(done["n_new"]), int(done["n_misclassified"]), int(done["n_trained"]),
                           float(done["loss"]), state.model, int(session.available().sum()),
                           int(done.get("n_mixed", 0)), already_done=True)
    if not new_ids:
        raise st.StateError(
            f"{session.workdir / st.STATE_FILE}: no annotations imported at round {state.round}; "
            f"run `genesis-jax al label --file=...` first"
        )
    index = pool.index_of()
    labels = np.full(len(pool), -1, np.int64)
    for cid, y in state.labels.items():
        labels[index[cid]] = y
    new_idx = np.array([index[c] for c in new_ids])
    old_idx = np.array([index[c] for c in old_ids], np.int64)
    variables = session.variables(state.model)
    initial = session.variables(state.initial_model)
    new_vars, plan, loss = session.learner.run_round(
        variables, initial, pool.contexts, labels, new_idx, old_idx, make_key(config, 2, state.round)
    )
    new_vars = jax.tree.map(np.asarray, new_vars)
    next_round = state.round + 1
    rel = _save_model(
        session.workdir, next_round, new_vars, config,
        {"round": next_round, "strategy": session.learner.strategy, "trained_on": len(plan.train_indices)},
    )
    trained_round = state.round
    state = st.load_state(session.workdir)  # re-read under the lock: commit on top of what is on disk now
    if state.round != trained_round:
        raise st.StateError(f"{session.workdir / st.STATE_FILE}: moved to round {state.round} while round "
                            f"{trained_round} was trained; nothing was committed")
    state.history.append(
        {
            "round": state.round,
            "strategy": session.learner.strategy,
            "n_new": plan.n_new,
            "n_misclassified": plan.n_misclassified,
            "n_mixed": plan.n_mixed,
            "n_trained": len(plan.train_indices),
            "loss": loss,
            "model": rel,
        }
    )
    state.round, state.model = next_round, rel
    session.state = state
    st.save_state(session.workdir, state)  # the commit point
    crash_point("al_commit")  # test-only (genesis_jax.workdir): a kill after the commit, before the scoring
    plot_rounds(session.workdir, state.history)
    scores, mean_probs = session.score_pool(new_vars)
    session.save_scores(next_round, scores, mean_probs)
    return StepSummary(
        state.round, plan.n_new, plan.n_misclassified, len(plan.train_indices), loss, rel,
        int(session.available().sum()), plan.n_mixed,
    )


def plot_rounds(workdir: Path, history: list[dict[str, Any]]) -> Path | None:
    """``progress.png`` of an active-learning work directory: each round's mean training loss and how many
    candidates it trained on (redrawn by every ``al step``)."""
    if not history:
        return None
    rounds = [int(h["round"]) + 1 for h in history]  # the round a step produced
    return save_curves(workdir / "progress.png", {
        "training loss (mean over the round)": {"loss": (rounds, [float(h["loss"]) for h in history])},
        "candidates trained on": {"trained": (rounds, [int(h["n_trained"]) for h in history]),
                                  "new labels": (rounds, [int(h["n_new"]) for h in history])},
    }, xlabel="round", title=f"al: {workdir.name}")


def _committed_round(state: st.LoopState) -> dict[str, Any] | None:
    """The history entry of the step that committed the current round (None before the first step)."""
    last = state.history[-1] if state.history else None
    return last if last is not None and int(last["round"]) == state.round - 1 and last.get("model") == state.model \
        else None


def status(workdir: str | Path) -> dict[str, Any]:
    state = st.load_state(workdir)
    counts = np.bincount(list(state.labels.values()), minlength=len(state.class_names)) if state.labels else []
    return {
        "round": state.round,
        "model": state.model,
        "labelled": len(state.labels),
        "labelled_per_class": dict(zip(state.class_names, [int(c) for c in counts])) if state.labels else {},
        "new_this_round": len(state.new_ids()),
        "pool": len(st.load_pool_ids(workdir)),
        "history": state.history,
    }


def with_stored_pool(config: ml_collections.ConfigDict, workdir: str | Path,
                     overrides: list[str]) -> ml_collections.ConfigDict:
    """``config`` with the pool settings this work directory was started with (its config.json), unless
    ``overrides`` set ``config.pool`` fields: later rounds repeat no pool override."""
    stored = Path(workdir) / st.CONFIG_FILE
    if not stored.is_file() or any(o.startswith("--config.pool.") for o in overrides):
        return config
    pool = json.loads(stored.read_text()).get("pool")
    if pool:
        with config.unlocked():
            config.pool = ml_collections.ConfigDict(pool)
    return config
