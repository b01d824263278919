"""Training tests share compiled executables with their subprocesses through the persistent compilation cache, and
one uninterrupted reference pre-training run that the resume tests compare against."""

import pytest

from tests.train.helpers import REFERENCE_STEPS, enable_compile_cache, noise_transform, tiny_config

enable_compile_cache()


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """(summary, workdir) of an uninterrupted tiny run of REFERENCE_STEPS steps on the 8 test devices, with
    TensorBoard and previews on and every checkpoint kept."""
    from genesis_jax.train.pretrain import pretrain

    workdir = tmp_path_factory.mktemp("reference")
    config = tiny_config(f"--config.max_steps={REFERENCE_STEPS}", "--config.checkpoint.every_steps=2",
                         "--config.checkpoint.keep=20", "--config.logging.tensorboard=True",
                         "--config.logging.preview_every_steps=8")
    return pretrain(config, workdir, transform=noise_transform), workdir
