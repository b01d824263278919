"""Transfer learning: initialise a target-task network from pre-trained weights, or from scratch.

The source variables come from :func:`genesis_jax.train.checkpointing.load_init_weights` (a weights directory,
e.g. imported published weights, or a pre-training / fine-tuning workdir). Which parameters are encoder, stem and
heads is never guessed from names here: the target's comes from its network spec, the source's from the
``adaptation.json`` its weights directory records (:class:`~genesis_jax.models.spec.AdaptationRecord`; the spec of
the source's network for weights exported before records existed).

What is transferred (Models Genesis, thesis appendix 2 and the published READMEs):
* segmentation: the whole encoder-decoder, by parameter path; the heads are new, or kept with ``keep_head=True``
  (as the published nodule-segmentation notebook does);
* classification: the encoder (the source's encoder modules onto the target's, in order: a Genesis U-Net's
  ``encoder_d`` into a classifier's ``backbone/encoder_d``); the classification head is new.
Every target parameter and BatchNorm statistic is either loaded (same path, same shape) or initialised fresh, and
every source array is either used or reported unused; :class:`TransferReport` lists them (``transfer_report.json``)
and logs ONE line: INFO when only the heads differ, a WARNING naming what did not fit (a variant whose decoder has
other layers, a stem of another channel count, any shape mismatch), an error with ``strict=True``. A kept head of
another shape is always an error (it was asked for).

Also here: the optimiser parameter groups that transfer implies (frozen encoder for a linear probe, a lower learning
rate for transferred layers) and the scratch baselines' kernel initialisers (Keras 'uniform', Glorot, He).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import jax
import numpy as np
import optax
from flax import traverse_util

from genesis_jax.models.initializers import KERNEL_INITIALIZERS
from genesis_jax.models.spec import AdaptationRecord, has_prefix, prefix_index

Task = Literal["segmentation", "classification"]
log = logging.getLogger(__name__)
_LISTED = 4  # module paths a summary names before "..."


class TransferError(ValueError):
    """Pre-trained weights that do not fit the target network; the message names the parameter."""


@dataclass
class TransferReport:
    """What an initialisation did, path by path ('collection/module/.../leaf'): ``loaded``, ``fresh`` (initialised
    anew, the heads included), ``unused`` source arrays; and what the one-line summary warns about: ``mismatched``
    ('<target path> <target shape> <- <source shape>', left fresh), ``unexpected_fresh`` / ``unexpected_unused``
    (beyond the heads, or beyond the encoder for a classifier) and ``notes`` (another network or variant)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unexpected_fresh: list[str] = field(default_factory=list)
    unexpected_unused: list[str] = field(default_factory=list)

    def loaded_params(self) -> set[str]:
        """Paths inside the ``params`` collection (without the collection prefix) that were loaded."""
        return {p.split("/", 1)[1] for p in self.loaded if p.startswith("params/")}

    @property
    def clean(self) -> bool:
        """Nothing but the expected differences (heads; outside the encoder for a classifier)."""
        return not (self.mismatched or self.notes or self.unexpected_fresh or self.unexpected_unused)

    def summary(self) -> str:
        """The one line the log shows."""
        line = (f"initialisation from {self.source}: {len(self.loaded)} arrays loaded, {len(self.fresh)} new, "
                f"{len(self.unused)} source arrays not used")
        if self.clean:
            return line
        problems = list(self.notes)
        if self.unexpected_unused:
            problems.append(f"{len(self.unexpected_unused)} source arrays have no place in this network "
                            f"({_modules(self.unexpected_unused)})")
        if self.unexpected_fresh:
            problems.append(f"{len(self.unexpected_fresh)} arrays of this network are not in the source "
                            f"({_modules(self.unexpected_fresh)})")
        if self.mismatched:
            shown = "; ".join(self.mismatched[:2]) + ("; ..." if len(self.mismatched) > 2 else "")
            problems.append(f"{len(self.mismatched)} of another shape, left new ({shown})")
        return f"{line}; NOT a full fit: {'; '.join(problems)} (config.init.strict=True refuses such weights)"

    def lines(self) -> list[str]:
        out = [self.summary()]
        out += [f"  loaded  {p}" for p in self.loaded]
        out += [f"  new     {p}" for p in self.fresh]
        out += [f"  unused  {p}" for p in self.unused]
        return out

    def log(self, logger: logging.Logger = log) -> None:
        """The summary at INFO (WARNING when it is not a full fit); the per-array lines at DEBUG."""
        summary, *details = self.lines()
        logger.log(logging.INFO if self.clean else logging.WARNING, summary)
        for line in details:
            logger.debug(line)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "fresh": self.fresh, "unused": self.unused,
                "mismatched": self.mismatched, "summary": self.summary()}


def _modules(paths: Sequence[str]) -> str:
    """The distinct modules of 'collection/module/.../leaf' paths, a few named."""
    modules = sorted({p.split("/", 1)[1].rsplit("/", 1)[0] for p in paths})
    return ", ".join(modules[:_LISTED]) + (", ..." if len(modules) > _LISTED else "")


def _source_candidates(path: str, task: Task, target: AdaptationRecord, source: AdaptationRecord) -> list[str]:
    """Source paths a target path may be loaded from, in order."""
    if task == "segmentation":
        return [path]
    found = prefix_index(path, target.encoder)
    if found is None:
        return []  # the classification head is always new
    index, rest = found
    mapped = [f"{source.encoder[index]}/{rest}"] if index < len(source.encoder) else []
    return list(dict.fromkeys([path, *mapped]))


def _expected_unused(path: str, task: Task, keep_head: bool, source: AdaptationRecord) -> bool:
    if task == "segmentation":
        return not keep_head and has_prefix(path, source.heads)
    return not has_prefix(path, source.encoder)


def transfer_variables(
    target: Mapping[str, Any],
    source: Mapping[str, Any],
    task: Task = "segmentation",
    keep_head: bool = False,
    source_name: str = "pre-trained weights",
    *,
    target_record: AdaptationRecord,
    source_record: AdaptationRecord | None = None,
    strict: bool = False,
) -> tuple[dict[str, Any], TransferReport]:
    """Fill ``target`` (freshly initialised variables of the target network) from ``source`` variables.

    ``target_record``: the target network's prefixes (``genesis_jax.models.adaptation_record(model_config)``);
    ``source_record``: the source's (its weights directory's record), the target's when None. Returns the new
    variables (numpy/jax arrays as given) and the report. Raises TransferError when nothing fits, when a kept head
    has another shape, and with ``strict`` whenever the report is not a full fit.
    """
    if task not in ("segmentation", "classification"):
        raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
    source_record = source_record or target_record
    flat_target = traverse_util.flatten_dict(dict(target), sep="/")
    flat_source = traverse_util.flatten_dict(dict(source), sep="/")
    report = TransferReport(source=source_name)
    used: set[str] = set()
    out: dict[str, Any] = {}
    first_mismatch = ""
    # parameters first, so a mismatch is reported on the parameter rather than on its BatchNorm statistics
    order = sorted(flat_target, key=lambda k: (not k.startswith("params/"), k))
    for full_path in order:
        value = flat_target[full_path]
        collection, path = full_path.split("/", 1)
        out[full_path] = value
        is_head = has_prefix(path, target_record.heads)
        if task == "segmentation" and is_head and not keep_head:
            report.fresh.append(full_path)
            continue
        for candidate in _source_candidates(path, task, target_record, source_record):
            src_key = f"{collection}/{candidate}"
            if src_key not in flat_source:
                continue
            src = flat_source[src_key]
            used.add(src_key)
            if tuple(np.shape(src)) != tuple(np.shape(value)):
                message = (f"{source_name}: parameter {src_key} has shape {tuple(np.shape(src))} but the target "
                           f"network's {full_path} has shape {tuple(np.shape(value))}")
                if strict or (keep_head and is_head):
                    raise TransferError(f"{message} (different width, depth, channels or classes?)")
                first_mismatch = first_mismatch or message
                stem = " (stem: another number of input channels)" if has_prefix(path, target_record.stem) else ""
                report.mismatched.append(f"{full_path} {tuple(np.shape(value))} <- {tuple(np.shape(src))}{stem}")
                report.fresh.append(full_path)
                break
            out[full_path] = np.asarray(src, dtype=np.asarray(value).dtype)
            report.loaded.append(full_path)
            break
        else:
            report.fresh.append(full_path)
            if task == "segmentation" or has_prefix(path, target_record.encoder):
                report.unexpected_fresh.append(full_path)
    report.unused = sorted(set(flat_source) - used)
    report.unexpected_unused = [p for p in report.unused
                                if not _expected_unused(p.split("/", 1)[1], task, keep_head, source_record)]
    if not report.loaded:
        if first_mismatch:
            raise TransferError(f"{first_mismatch}, and no parameter fits (different width, depth or channels?)")
        raise TransferError(
            f"{source_name}: no parameter of the target network was found in the source (target starts with "
            f"{sorted(flat_target)[:3]}, source with {sorted(flat_source)[:3]}): not weights for this network"
        )
    if task == "segmentation" and source_record.network != target_record.network:
        report.notes.append(f"the source is a {source_record.network}, this network a {target_record.network}")
    elif task == "segmentation" and source_record.variant != target_record.variant:
        report.notes.append(f"the source is the {source_record.variant!r} variant, this network the "
                            f"{target_record.variant!r} variant")
    if strict and not report.clean:
        raise TransferError(report.summary())
    return traverse_util.unflatten_dict(out, sep="/"), report


def scratch_model_config(model_config: Mapping[str, Any], init: str) -> dict[str, Any]:
    """The model config with ``kernel_init`` set for a scratch baseline ('uniform' = Keras RandomUniform(+-0.05),
    'glorot_uniform' = Xavier, 'he_uniform' = MSRA, ...)."""
    if init not in KERNEL_INITIALIZERS:
        raise ValueError(f"scratch init {init!r} unknown; choose one of {sorted(KERNEL_INITIALIZERS)}")
    cfg = dict(model_config)
    cfg["kernel_init"] = init
    return cfg


def parameter_groups(
    params: Any, transferred: set[str], freeze_encoder: bool = False, encoder: Sequence[str] = ()
) -> Any:
    """A pytree of labels for ``optax.multi_transform``: 'frozen' (the ``encoder`` prefixes, for a linear probe),
    'transferred' (loaded from the source) or 'new'."""
    flat = traverse_util.flatten_dict(params, sep="/")
    labels = {}
    for path in flat:
        if freeze_encoder and has_prefix(path, encoder):
            labels[path] = "frozen"
        elif path in transferred:
            labels[path] = "transferred"
        else:
            labels[path] = "new"
    if freeze_encoder and "frozen" not in labels.values():
        raise TransferError(f"freeze_encoder: no parameter of the network lies under its encoder prefixes {list(encoder)}")
    return traverse_util.unflatten_dict(labels, sep="/")


def group_scaling(labels: Any, transferred_lr_scale: float = 1.0) -> optax.GradientTransformation:
    """Scales updates per group after the optimiser: transferred layers by ``transferred_lr_scale`` (their
    effective learning rate is lr * scale), frozen ones to zero, new ones unchanged."""
    return optax.multi_transform(
        {"new": optax.identity(), "transferred": optax.scale(transferred_lr_scale), "frozen": optax.set_to_zero()},
        labels,
    )


def count_group_sizes(params: Any, labels: Any) -> dict[str, int]:
    """Number of scalars per group (for the log)."""
    sizes: dict[str, int] = {}
    for p, label in zip(jax.tree.leaves(params), jax.tree.leaves(labels)):
        sizes[label] = sizes.get(label, 0) + int(np.size(p))
    return sizes
