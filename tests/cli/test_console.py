"""What the commands show a person (issue 25, item 8): one human line per result (no dict reprs; the JSON stays in
files), no library noise, a readable typo suggestion, ``progress.png`` in training work directories and overlays
in the radiological convention with orientation markers."""

from __future__ import annotations

import numpy as np
from PIL import Image

from genesis_jax.cli import main


def test_an_override_typo_suggests_the_field_in_plain_text(tmp_path, capsys):
    rc = main(["pretrain", "--config=pretrain/genesis_chest_ct:tiny", f"--workdir={tmp_path}",
               "--config.optimizer.learning_rat=1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert "learning_rat (did you mean learning_rate?)" in lines[0] and "\\" not in lines[0], lines[0]


def test_metrics_are_shown_as_words_not_a_dict():
    from genesis_jax.cli._summaries import metrics_text

    text = metrics_text({"dice": 0.812345, "hd95": 4.5, "per_volume": [1, 2], "nan": float("nan"), "n": 3})
    assert text == "dice 0.8123, hd95 4.5, n 3"


def test_al_status_is_one_human_line(tmp_path, capsys):
    from genesis_jax.active import state as st

    wd = tmp_path / "al"
    st.atomic_write_json(wd / st.POOL_IDS_FILE, ["a", "b", "c"])
    st.save_state(wd, st.LoopState(labels={"a": 1}, label_round={"a": 0}, model="models/round_0000"))
    assert main(["al", "status", f"--workdir={wd}"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "{" not in out, out
    assert out.startswith("round 0: 1 of 3 candidates labelled (negative 0, positive 1), 1 new this round"), out


def test_progress_png_draws_the_loss_and_validation_curves(tmp_path):
    from genesis_jax.train.metrics_log import PROGRESS_PNG, MetricsLog

    log = MetricsLog(tmp_path, tensorboard=False)
    assert log.plot_progress() is None  # nothing logged yet: no picture
    for step in range(1, 21):
        log.write(step, {"loss": 1.0 / step, "learning_rate": 0.1}, kind="train")
        if step % 5 == 0:
            log.write(step, {"val_loss": 1.5 / step, "val_dice": step / 25}, kind="validation")
            path = log.plot_progress("pretrain: run")
    log.close()
    assert path == tmp_path / PROGRESS_PNG
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert width > 2 * height  # two panels side by side: loss, and the other validation metrics
    coloured = (np.abs(pixels[..., 0] - pixels[..., 2]) > 80).sum()  # the curves (blue, orange), not grey text
    assert coloured > 200


def test_overlays_are_radiological_with_orientation_markers(tmp_path):
    """The patient's right (high x in RAS+) is drawn on the image's left; R/L/A/P markers sit on the panel edges."""
    from genesis_jax.evaluation.overlays import save_overlay

    image = np.zeros((32, 32, 6), np.float32)
    image[20:, 4:28, :] = 1.0  # bright on the patient's right half only
    empty = np.zeros_like(image)
    path = save_overlay(image, empty, empty, tmp_path / "overlay.png", slices=[3])
    with Image.open(path) as png:
        rgb = np.asarray(png.convert("RGB")).astype(int)
    grey = rgb.mean(axis=2)
    rows = grey[grey.shape[0] // 4: 3 * grey.shape[0] // 4]
    middle = rows.shape[1] // 2
    assert rows[:, :middle].mean() > rows[:, middle:].mean() + 40  # the bright right half is on the left
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 200) & (rgb[..., 2] < 80)
    assert yellow[:, : rgb.shape[1] // 6].any() and yellow[:, -rgb.shape[1] // 6:].any()  # R at left, L at right
