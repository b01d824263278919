"""`genesis-jax al` on nnU-Net's ResEnc encoder (active/acft:resenc,tiny, an ``encoder_classifier``): M_0 from a
ResEnc segmentation weights directory (its encoder and stem by the adaptation record), then select -> label -> step
-> status through the CLI, as with the Genesis encoder."""

import json

import jax
import numpy as np
import pytest

from genesis_jax.active import session
from genesis_jax.active import state as st
from genesis_jax.active.config_checks import validate_active_config
from genesis_jax.cli import main
from genesis_jax.config_loader import ConfigError, load_config
from genesis_jax.models import build_model, contract
from genesis_jax.models.weights import load_weights, save_weights
from tests.active.test_state import annotate_as_the_oracle

SMALL = ["--config.pool.n=40", "--config.learner.batch_size=8", "--config.learner.calibration_size=16",
         "--config.learner.min_steps=5", "--config.learner.max_steps=10", "--config.learner.bucket_min=16",
         "--config.learner.chunk_size=64", "--config.learner.device_batch=16"]


def test_the_resenc_classifier_declares_its_backbone_encoder():
    config = load_config("active/acft:resenc,tiny")
    c = contract(config.model.to_dict())
    assert c.task == "classification" and c.input_divisor == 4 and c.heads == ("head",)
    assert c.encoder == ("backbone/encoder_stem", "backbone/encoder_0", "backbone/encoder_1", "backbone/encoder_2")
    assert c.stem == ("backbone/encoder_stem/conv_0",)
    assert tuple(config.patches.patch_shape) == (8, 8, 8)
    validate_active_config(config)
    with pytest.raises(ConfigError, match=r"config.patches.patch_shape.*divisible by 4"):
        validate_active_config(load_config("active/acft:resenc,tiny", ["--config.patches.patch_shape=(6,6,6)"]))
    with pytest.raises(ConfigError, match=r"config.model.backbone.name"):
        validate_active_config(load_config("active/acft:resenc,tiny", ["--config.model.backbone.name=resnet"]))


def test_al_loop_on_a_resenc_encoder_from_segmentation_weights(tmp_path, capsys):
    seg_cfg = load_config("models/resenc:tiny").model.to_dict()
    seg = jax.jit(build_model(seg_cfg).init)(jax.random.key(7), np.zeros((1, 8, 8, 8, 1), np.float32))
    save_weights(tmp_path / "resenc", seg, seg_cfg)
    wd = tmp_path / "al"
    config = ["--config=active/acft:resenc,tiny", f"--workdir={wd}", *SMALL, f"--config.init={tmp_path / 'resenc'}"]
    assert main(["al", "select", *config, "--budget=6"]) == 0
    m0, model_cfg, _ = load_weights(wd / "models/round_0000")
    assert model_cfg["name"] == "encoder_classifier" and model_cfg["backbone"]["name"] == "resenc_unet"
    for path in (("encoder_stem", "conv_0", "kernel"), ("encoder_2", "block_0_conv1", "kernel")):
        ours, theirs = m0["params"]["backbone"], seg["params"]
        for key in path:
            ours, theirs = ours[key], theirs[key]
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))  # the encoder is the pre-trained one
    assert "decoder_0" not in m0["params"]["backbone"]  # only the encoder runs

    pool = session.build_pool(load_config("active/acft:resenc,tiny", SMALL).pool)
    annotate_as_the_oracle(wd / "selections/round_0000.csv", pool, tmp_path / "ann.csv")
    assert main(["al", "label", f"--workdir={wd}", f"--file={tmp_path / 'ann.csv'}"]) == 0
    assert main(["al", "step", *config]) == 0
    state = st.load_state(wd)
    assert state.round == 1 and len(state.labels) == 6 and (wd / "scores/round_0001.npz").is_file()
    m1, _, _ = load_weights(wd / state.model)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), m1["params"], m0["params"])
    assert max(jax.tree.leaves(moved)) > 0  # the round fine-tuned the network
    capsys.readouterr()
    assert main(["al", "status", f"--workdir={wd}"]) == 0
    assert "round 1" in capsys.readouterr().out
    stored = json.loads((wd / st.CONFIG_FILE).read_text())["model"]
    assert stored["backbone"]["features_per_stage"] == [4, 8, 16]
