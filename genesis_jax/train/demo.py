"""The whole story in a few CPU minutes: data -> restoration pre-training -> preview -> fine-tuning from the
pre-trained weights. ``run_demo(workdir) -> summary``; ``genesis-jax demo`` calls it.

Data: the real TotalSegmentator sample CTs when they can be fetched (downloaded once, ~38 MB), cut into 32x32x16
cubes at 1.5 mm (the abdominal scan for training, the chest scan for validation); otherwise 6 synthetic CT
phantoms. The summary says which, and why when the samples were not available. Pre-training is the
``genesis_chest_ct.py:tiny`` recipe on those cubes (Genesis U-Net, pytorch variant, base width 4, the published
on-device deformations); fine-tuning is the ``lcs.py:tiny`` liver segmentation, initialised from the pre-trained
weights (on phantom livers: the sample CTs' liver labels are a model's output). Everything runs on a small
network: the figures show the pipeline works, not the published accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from genesis_jax.config_loader import load_config

DEMO_CUBE = (32, 32, 16)


class _NoSamples(Exception):
    pass


def demo_data_config(cube: tuple[int, int, int] = DEMO_CUBE, log: Callable[[str], None] = print) -> tuple[Any, str]:
    """(config.data block for cube_source, a sentence saying which data it is)."""
    overrides = [f"--config.data.cubes.cube_shape={tuple(cube)}"]
    try:
        from genesis_jax.data.samples import SampleDataUnavailable, fetch_samples

        try:
            fetch_samples()
        except (SampleDataUnavailable, OSError) as err:
            raise _NoSamples(str(err).splitlines()[0]) from err
        data = load_config("data/genesis_cubes:samples", [*overrides, "--config.data.cubes.cubes_per_scan=48"]
                           ).data
        return data, "real CT: TotalSegmentator sample scans (ct_abdomen for training, ct_chest for validation)"
    except _NoSamples as err:
        log(f"demo: the sample CTs could not be fetched ({err}); using synthetic CT phantoms instead")
        data = load_config("data/genesis_cubes:tiny", overrides).data
        return data, "synthetic CT phantoms (the sample CTs were not available)"


def run_demo(workdir: str | Path, *, pretrain_steps: int = 30, finetune_steps: int = 4, finetune: bool = True,
             cube: tuple[int, int, int] = DEMO_CUBE, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo under ``workdir`` (``pretrain/`` and ``finetune/``); returns a summary dict."""
    from genesis_jax.train.pretrain import pretrain

    workdir = Path(workdir).expanduser().resolve()
    started = time.time()
    data, data_note = demo_data_config(cube, log)
    log(f"demo: data = {data_note}")

    import jax

    devices = jax.device_count()
    batch = -(-4 // devices) * devices  # 4 cubes a step, rounded up to fill every device
    config = load_config("pretrain/genesis_chest_ct:tiny", [
        f"--config.input_shape={(*cube, 1)}", f"--config.global_batch_size={batch}", f"--config.max_steps={pretrain_steps}",
        "--config.steps_per_epoch=10", "--config.validation_batches=2", f"--config.logging.preview_every_steps={pretrain_steps}",
        f"--config.checkpoint.every_steps={pretrain_steps}", "--config.optimizer.learning_rate=0.3",
        "--config.model.base_width=4", "--config.model.depth=3",  # wider than :tiny; fine-tuning reuses this network
    ])
    config.data = data
    log(f"demo: pre-training {pretrain_steps} steps (Genesis U-Net, pytorch variant, base width {config.model.base_width}, "
        f"cubes {tuple(cube)}) in {workdir / 'pretrain'}")
    pre = pretrain(config, workdir / "pretrain")
    summary: dict[str, Any] = {
        "data": data_note,
        "pretrain": {k: pre[k] for k in ("step", "final_loss", "best_val_loss", "weights", "preview", "seconds")},
    }
    log(f"demo: restoration preview (input | prediction | target): {pre['preview']}")

    if finetune:
        summary["finetune"] = _finetune(pre["weights"], dict(config.model), workdir / "finetune", finetune_steps, log)
    summary["seconds"] = time.time() - started
    return summary


def _finetune(weights: str, model_config: dict[str, Any], workdir: Path, steps: int, log) -> dict[str, Any]:
    """Liver segmentation (lcs.py:tiny) from the pre-trained weights: same network, a fresh head."""
    from genesis_jax.train.finetune import finetune

    config = load_config("finetune/lcs:tiny")
    config.model = {**model_config, "num_classes": 1, "head_activation": "sigmoid"}
    config.init.checkpoint = weights
    config.steps_per_epoch = max(1, steps // 2)
    config.max_epochs = 2
    log(f"demo: fine-tuning: liver segmentation on synthetic phantoms (lcs.py:tiny), "
        f"{config.steps_per_epoch * config.max_epochs} steps from {weights}, in {workdir}")
    out = finetune(config, workdir)
    test = {k: v for k, v in (out.get("test") or {}).items() if isinstance(v, (int, float))}
    return {"workdir": str(workdir), "data": "synthetic phantom livers (lcs.py:tiny)", "test": test, **{k: v for k, v in out.items() if isinstance(v, (int, float, str))}}
