"""The demo end to end, shortened: data (sample CT or phantoms), pre-training, preview, fine-tuning from the
pre-trained weights."""

import pytest

from genesis_jax.train.demo import run_demo


@pytest.mark.slow
def test_demo_runs_the_whole_story(tmp_path):
    messages = []
    summary = run_demo(tmp_path, pretrain_steps=2, finetune_steps=2, cube=(16, 16, 8), log=messages.append)
    assert summary["data"].startswith(("real CT", "synthetic CT phantoms"))
    assert summary["pretrain"]["step"] == 2 and (tmp_path / "pretrain" / "weights" / "model_config.json").is_file()
    assert summary["pretrain"]["preview"].endswith(".png")
    assert summary["finetune"]["init"] == summary["pretrain"]["weights"]
    assert any(m.startswith("demo: data = ") for m in messages)
