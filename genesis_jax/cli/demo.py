"""`genesis-jax demo`: the whole story in a few CPU minutes: data -> restoration pre-training and its quality gate ->
preview -> liver fine-tuning -> held-out test Dice and HD95 on another patient and an overlay PNG. ``run_demo(workdir)
-> summary`` orchestrates the library's entry functions (``pretrain``, ``finetune``) with packaged configs.

Real CT (the default): the TotalSegmentator sample CTs (downloaded once from PyPI, ~38 MB, cached).
Pre-training: the packaged weights of ``experiments/demo_pretraining.py`` (Genesis U-Net, keras variant, width 8,
pre-trained on ct_abdomen, ct_chest and ct_lung1, gated on ct_lung2) when the package holds them, since a gated
pre-training takes hours on a CPU; otherwise (or with ``--pretrain-steps=N``) a short Genesis pre-training in the demo
on cubes of ``ct_abdomen`` (training) and ``ct_chest`` (validation), 3 mm. Either way the restoration quality gate
decides: only weights that passed it are transferred; weights that failed it are reported and fine-tuning starts
from scratch. Fine-tuning (``liver_sample.py``: liver, spleen, stomach and kidneys of ``ct_abdomen`` as the classes
of one softmax network, 5 x 5 x 3 mm, on-device augmentation without mirroring, EMA, largest component per class)
is tested on the whole ``ct_dicom`` series of ANOTHER patient (portal-venous contrast), which no step before has
seen; the demo reports the liver. The labels are TotalSegmentator's model outputs, not manual annotations.

Phantoms: only when the samples cannot be fetched (offline, bad download) or when asked for (``phantoms=True``,
``genesis-jax demo --phantoms`` or ``GENESIS_JAX_DEMO_PHANTOMS=1``, e.g. for a quick CI run): synthetic CT phantoms
for both stages (``data/genesis_cubes:tiny``, ``finetune/lcs:tiny``), announced by a warning in the log and in the
summary's ``data`` field, since a Dice on a phantom says nothing about CT.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from genesis_jax.config_loader import load_config
from genesis_jax.workdir import write_file_atomically

DEMO_CUBE = (32, 32, 16)
PHANTOMS_ENV = "GENESIS_JAX_DEMO_PHANTOMS"
SAMPLE_SPACING = (3.0, 3.0, 3.0)  # the in-demo pre-training's grid (the packaged weights' corpus is on it too)
TEST_SCAN = "ct_dicom"
PHANTOM_FINETUNE_STEPS = 60  # lcs.py:tiny alone runs 4
IN_DEMO_PRECISE_BN_BATCHES = 8  # a 30-step pre-training in the demo: a quick estimate is enough
PACKAGED_WEIGHTS = "sample_corpus"  # experiments/demo_pretraining.py packs it (genesis_jax.models.packaged)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="sample CT -> tiny restoration pre-training -> preview PNG -> liver fine-tuning -> test Dice on another "
             "patient + overlay PNG; a few CPU minutes (synthetic phantoms only when the samples cannot be fetched)",
        description="Example: genesis-jax demo --workdir=/tmp/genesis_demo",
    )
    p.add_argument("--workdir", default="genesis_demo", help="where everything is written (default ./genesis_demo)")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help="pre-train N steps in the demo instead of using the packaged pre-trained weights (the "
                        "default on the sample CTs; on phantoms the demo always pre-trains, 30 steps by default)")
    p.add_argument("--finetune-steps", type=int, default=None,
                   help="fine-tuning steps (default: the recipe's, 1,200 on the sample CTs, 60 on phantoms)")
    p.add_argument("--no-finetune", action="store_true", help="stop after pre-training and the preview")
    p.add_argument("--phantoms", action="store_true",
                   help="synthetic CT phantoms instead of the sample CTs (also: GENESIS_JAX_DEMO_PHANTOMS=1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    summary = run_demo(args.workdir, pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
                       finetune=not args.no_finetune, phantoms=args.phantoms)
    path = Path(args.workdir).expanduser().resolve() / "summary.json"
    write_file_atomically(path, json.dumps(summary, indent=2, default=str).encode())
    for line in closing_lines(summary, path):
        print(line)
    return 0


def closing_lines(summary: dict[str, Any], path: Path) -> list[str]:
    """The few human lines the demo ends with: the pre-training's quality gate, the test Dice and HD95 and what
    they mean, where the pictures are, and the next command for the user's own data."""
    lines = []
    gate = summary.get("pretrain", {}).get("gate") or {}
    if gate:
        verdict = "passed" if gate.get("passed") else "FAILED"
        lines.append(f"demo: pre-training quality gate {verdict} on the held-out validation data: restoration MSE "
                     f"{gate['restoration_mse']:.4f} = {gate['ratio_to_batch_mean']:.2f} x the batch-mean predictor's "
                     f"(gate: <= {gate['max_ratio']}); clean-input identity MSE {gate['clean_identity_mse']:.4f} "
                     f"(gate: <= {gate['max_clean_mse']})")
        if not gate.get("passed"):
            lines.append("      weights that fail the gate are not transferred: the fine-tuning below started from "
                         "scratch (docs/pretraining.md: the gate)")
    made_by = summary.get("pretrain", {}).get("packaged")
    if made_by:
        lines.append(f"demo: pre-trained weights shipped with the package ({made_by})")
    lines.append(f"demo: restoration preview (deformed input | restored | original, clean row last): "
                 f"{summary.get('pretrain', {}).get('preview')}")
    test = summary.get("finetune", {}).get("test") or {}
    if test:
        where = TEST_SCAN + " (another patient)" if summary.get("real_ct") else "a held-out SYNTHETIC phantom"
        lines.append(f"demo: test Dice {test.get('dice', float('nan')):.3f} HD95 {test.get('hd95', float('nan')):.1f} "
                     f"mm on {where}")
        reference = ("The reference is TotalSegmentator's output, not a manual annotation." if summary.get("real_ct")
                     else "The reference is the phantom's own liver: this says nothing about CT.")
        lines.append("      Dice: overlap of predicted and reference liver (1 = identical); HD95: 95th percentile of the "
                     f"distance between their surfaces (0 mm = identical). {reference}")
        overlays = summary["finetune"].get("overlays") or []
        if overlays:
            lines.append(f"demo: overlays (green reference, red prediction; radiological view): {overlays[0]}")
    lines.append(f"demo: everything is in {path.parent} (summary: {path})")
    lines.append("demo: your own scans next: genesis-jax data prepare --dataset=DIR (README: Your own data)")
    return lines


def _sample_pretrain_data(cube: tuple[int, int, int]) -> Any:
    """Cubes of the sample CTs for pre-training, never of the test scan."""
    return load_config("data/genesis_cubes:samples", [
        f"--config.data.cubes.cube_shape={tuple(cube)}", "--config.data.cubes.margins=(8, 8, 4)",
        "--config.data.cubes.cubes_per_scan=64", "--config.data.cubes.max_attempts=3200",
        f"--config.data.target_spacing={SAMPLE_SPACING}",
        "--config.data.samples.train=('ct_abdomen',)", "--config.data.samples.validation=('ct_chest',)",
        "--config.data.samples.test=()",
    ]).data


def demo_data(cube: tuple[int, int, int] = DEMO_CUBE, log: Callable[[str], None] = print,
              phantoms: bool = False) -> tuple[Any, str, bool]:
    """(pre-training ``config.data`` block, a sentence saying which data it is, whether it is the real CT)."""
    phantoms = phantoms or os.environ.get(PHANTOMS_ENV, "") not in ("", "0")
    reason = "asked for (--phantoms or $" + PHANTOMS_ENV + ")" if phantoms else ""
    if not phantoms:
        from genesis_jax.data.samples import SampleDataUnavailable, fetch_samples

        try:
            fetch_samples()
            return (_sample_pretrain_data(cube), "real CT: TotalSegmentator sample scans (pre-training on ct_abdomen "
                    f"and ct_chest images, liver fine-tuning on ct_abdomen, test on {TEST_SCAN}, another patient)",
                    True)
        except (SampleDataUnavailable, OSError) as err:
            reason = f"the sample CTs could not be fetched: {str(err).splitlines()[0]}"
    log(f"demo: WARNING: using SYNTHETIC CT PHANTOMS, not real CT ({reason}); the test Dice below is on a phantom")
    data = load_config("data/genesis_cubes:tiny", [f"--config.data.cubes.cube_shape={tuple(cube)}"]).data
    return data, f"synthetic CT phantoms, NOT real CT ({reason})", False


def _packaged_pretraining(workdir: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The packaged pre-trained weights (:mod:`genesis_jax.models.packaged`) as the demo's pre-training: written as a
    weights directory under ``workdir``, with their recorded gate and held-out preview. None when none is packaged."""
    from genesis_jax.models import packaged
    from genesis_jax.pretext.gate import RECORD_KEY

    if PACKAGED_WEIGHTS not in packaged.available():
        return None
    weights = packaged.materialize(PACKAGED_WEIGHTS, workdir / "weights")
    info = packaged.record(PACKAGED_WEIGHTS)
    preview, packaged_preview = None, packaged.preview(PACKAGED_WEIGHTS)
    if packaged_preview is not None:
        preview = workdir / "preview.png"
        write_file_atomically(preview, packaged_preview.read_bytes())
    log(f"demo: pre-trained weights: packaged '{PACKAGED_WEIGHTS}' ({info['made_by']}) -> {weights}")
    return {"weights": str(weights), "preview": str(preview) if preview else None, "step": info["metadata"].get("step"),
            "packaged": info["made_by"], RECORD_KEY: info["metadata"].get(RECORD_KEY) or {}}


def run_demo(workdir: str | Path, *, pretrain_steps: int | None = None, finetune_steps: int | None = None,
             finetune: bool = True,
             cube: tuple[int, int, int] = DEMO_CUBE, phantoms: bool = False, precise_bn_batches: int | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo under ``workdir`` (``pretrain/`` and ``finetune/``); returns a summary dict.

    ``pretrain_steps`` None: on the sample CTs the packaged pre-trained weights when there are some, else (and on
    phantoms) a 30-step pre-training in the demo; a number: that many steps of pre-training in the demo.
    ``precise_bn_batches`` None: the fine-tuning recipe's own count (so the demo's fine-tuning is the recipe's run
    with seed 0) and IN_DEMO_PRECISE_BN_BATCHES for a pre-training in the demo."""
    from genesis_jax.pretext.gate import RECORD_KEY

    workdir = Path(workdir).expanduser().resolve()
    started = time.time()
    data, data_note, real = demo_data(cube, log, phantoms)
    log(f"demo: data = {data_note}")

    pre = _packaged_pretraining(workdir / "pretrain", log) if real and pretrain_steps is None else None
    if pre is None:
        pre = _pretrain_in_demo(workdir / "pretrain", data, cube, pretrain_steps or 30,
                                precise_bn_batches or IN_DEMO_PRECISE_BN_BATCHES, log)
    summary: dict[str, Any] = {
        "data": data_note,
        "real_ct": real,
        "pretrain": {k: pre.get(k) for k in ("step", "final_loss", "best_val_loss", "weights", "preview", "seconds",
                                             "packaged")},
    }
    gate = pre.get(RECORD_KEY) or {}
    summary["pretrain"]["gate"] = gate
    summary["gate_passed"] = bool(gate.get("passed"))
    if real and not pre.get("packaged"):  # the scans pre-training read, as configured: never the test scan
        summary["pretrain"]["scans"] = {k: list(v) for k, v in data.samples.items()}

    if finetune:
        from genesis_jax.models.weights import load_weights

        weights, model_config = None, None
        if summary["gate_passed"]:  # only a pre-training that passed its gate is transferred
            weights, model_config = pre["weights"], load_weights(pre["weights"])[1]
        else:
            log("demo: the pre-trained weights failed the restoration quality gate, so they are not transferred: "
                "fine-tuning starts from scratch")
        summary["finetune"] = _finetune(weights, model_config, cube, workdir / "finetune", finetune_steps, real,
                                        precise_bn_batches, log)
    summary["seconds"] = time.time() - started
    return summary


def _pretrain_in_demo(workdir: Path, data: Any, cube: tuple[int, int, int], pretrain_steps: int,
                      precise_bn_batches: int, log: Callable[[str], None]) -> dict[str, Any]:
    """A short restoration pre-training in the demo (the phantoms' path, or ``--pretrain-steps``)."""
    import jax

    from genesis_jax.train.pretrain import pretrain

    devices = jax.device_count()
    batch = -(-4 // devices) * devices  # 4 cubes a step, rounded up to fill every device
    config = load_config("pretrain/genesis_chest_ct:tiny,keras", [
        f"--config.input_shape={(*cube, 1)}", f"--config.global_batch_size={batch}", f"--config.max_steps={pretrain_steps}",
        "--config.steps_per_epoch=10", "--config.validation_batches=2", f"--config.logging.preview_every_steps={pretrain_steps}",
        f"--config.checkpoint.every_steps={pretrain_steps}", "--config.optimizer.learning_rate=0.3",
        f"--config.precise_bn.num_batches={precise_bn_batches}",
        "--config.model.base_width=4", "--config.model.depth=3",  # wider than :tiny; fine-tuning reuses this network
    ])
    config.data = data
    log(f"demo: pre-training {pretrain_steps} steps (Genesis U-Net, keras variant, base width {config.model.base_width}, "
        f"cubes {tuple(cube)}) in {workdir}")
    return pretrain(config, workdir)


def _finetune(weights: str | None, model_config: dict[str, Any] | None, cube: tuple[int, int, int], workdir: Path,
              steps: int | None, real: bool, precise_bn_batches: int | None,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Liver segmentation (liver_sample.py on the real CT, tested on the other patient; lcs.py:tiny on phantoms) from
    ``weights`` (the pre-trained network with the task's head) or, when None, from scratch."""
    from genesis_jax.train.finetune import finetune

    config = load_config("finetune/liver_sample" if real else "finetune/lcs:tiny")
    if weights is not None and model_config is not None:  # the pre-trained network, the task's head
        config.model = {**model_config, "num_classes": config.model.num_classes,
                        "head_activation": config.model.head_activation}
        config.init.checkpoint = weights
    config.input_shape, config.eval.window = (*cube, 1), tuple(cube)
    steps = steps if steps is not None or real else PHANTOM_FINETUNE_STEPS
    if steps is not None:
        config.max_steps = steps
        config.steps_per_epoch = max(1, steps // 2)  # two validations
        config.max_epochs = 2
    if precise_bn_batches is not None:
        config.precise_bn.num_batches = precise_bn_batches
    config.logging.tensorboard = False
    task = (f"liver (with spleen, stomach, kidneys as classes) on ct_abdomen (liver_sample.py), test on {TEST_SCAN}"
            if real else "liver segmentation on SYNTHETIC phantoms (lcs.py:tiny)")
    log(f"demo: fine-tuning: {task}, {config.max_steps} steps from {weights or 'scratch'}, in {workdir}")
    out = finetune(config, workdir)
    test = out.get("test") or {}
    mean = {k: v for k, v in (test.get("mean") or {}).items() if isinstance(v, (int, float))}
    focus = config.eval.get("overlay_class") or ""
    if focus:  # a softmax network: the demo's figures are the liver's, every class is kept beside them
        mean = {"dice": mean.get(f"dice_{focus}", float("nan")), "hd95": mean.get(f"hd95_{focus}", float("nan")),
                "organ": focus, "per_class": mean}
    volumes = [v.get("name") for v in test.get("per_volume", [])]
    overlays = sorted(str(p) for p in (workdir / "predictions").glob("*_overlay.png"))
    return {"workdir": str(workdir), "data": task, "init": weights or "scratch", "test_volumes": volumes,
            "test": mean, "overlays": overlays, **{k: v for k, v in out.items() if isinstance(v, (int, float, str))}}
