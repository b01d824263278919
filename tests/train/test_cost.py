"""The per-step cost model (genesis_jax.train.cost): XLA's FLOPs against a hand count of the convolutions'
multiply-adds, the sharded step's collectives (one gradient all-reduce, no all-gather), memory figures."""

import jax
import jax.numpy as jnp
import pytest

from genesis_jax.train.cost import (
    StepSpec,
    check_data_parallel_collectives,
    hlo_collectives,
    residual_bytes,
    step_cost,
)
from genesis_jax.transforms.augment import AugmentSettings
from genesis_jax.train.mesh import batch_sharding, make_mesh, replicated

SHAPE = (16, 16, 8, 1)


def genesis_unet_training_macs(width: int, depth: int, shape, batch: int, variant: str) -> int:
    """Multiply-adds of the Genesis U-Net's convolutions in one training step, counted by hand. A 3^3 'same'
    convolution over an (X, Y, Z) grid multiplies real voxels at (3X - 2)(3Y - 2)(3Z - 2) (output, tap) pairs (the
    taps that fall on the zero padding are not work, and XLA does not count them), times C_in * C_out per sample;
    the input gradient costs as much (except at the image layer, whose input needs none), and so does the kernel
    gradient. The pytorch variant's 2x transposed convolutions (kernel 2, stride 2: each coarse voxel meets its 8
    taps once) and the 1^3 head likewise."""
    convs = []  # (multiplied (output, tap) pairs per channel pair, C_in, C_out)

    def taps(d: int) -> int:
        x, y, z = (s // 2**d for s in shape[:3])
        return batch * (3 * x - 2) * (3 * y - 2) * (3 * z - 2)

    def voxels(d: int) -> int:
        return batch * shape[0] * shape[1] * shape[2] // 8**d

    channels = shape[-1]
    for d in range(depth):
        convs += [(taps(d), channels, width * 2**d), (taps(d), width * 2**d, width * 2 ** (d + 1))]
        channels = width * 2 ** (d + 1)
    for d in reversed(range(depth - 1)):
        if variant == "pytorch":
            convs.append((voxels(d + 1) * 8, channels, channels))
        convs += [(taps(d), channels + width * 2 ** (d + 1), width * 2 ** (d + 1)),
                  (taps(d), width * 2 ** (d + 1), width * 2 ** (d + 1))]
        channels = width * 2 ** (d + 1)
    convs.append((voxels(0), channels, 1))  # head
    forward = sum(n * cin * cout for n, cin, cout in convs)
    image_layer = convs[0][0] * convs[0][1] * convs[0][2]
    return 3 * forward - image_layer


@pytest.mark.parametrize("variant", ["keras", "pytorch"])
def test_xla_flops_match_the_hand_count_of_the_convolutions(variant):
    """XLA's FLOPs of the whole compiled fine-tuning step (forward, both gradients, dice loss, BatchNorm, Adam)
    are 2 x the convolutions' multiply-adds plus the element-wise work: within 15% above the hand count at width 8
    (the element-wise ops are ~10 FLOPs per activation against >= 54 per output of the narrowest convolution)."""
    model = {"name": "genesis_unet", "variant": variant, "base_width": 8, "depth": 2}
    cost = step_cost(StepSpec(model, SHAPE, global_batch=2, task="segmentation"), make_mesh(1))
    hand = 2 * genesis_unet_training_macs(8, 2, SHAPE, 2, variant)
    assert hand <= cost.flops <= 1.15 * hand, (cost.flops, hand, cost.flops / hand)
    assert cost.flops_per_sample == pytest.approx(cost.flops / 2)
    assert cost.bytes_accessed > 0 and cost.temp_bytes > 0 and cost.argument_bytes > cost.param_bytes


@pytest.mark.parametrize("augment", [None, AugmentSettings()], ids=["plain", "augmented"])
def test_sharded_fine_tuning_step_all_reduces_the_gradient_once(augment):
    """With the device augmentation (the fine-tuning configs' default) each device augments its own samples."""
    model = {"name": "genesis_unet", "variant": "keras", "base_width": 4, "depth": 2}
    spec = StepSpec(model, SHAPE, global_batch=8, task="segmentation", augment=augment)
    cost = step_cost(spec, make_mesh(8))
    assert cost.devices == 8 and cost.samples_per_device == 1
    assert cost.param_bytes <= cost.all_reduce_bytes <= cost.param_bytes * 1.1


def test_sharded_pretraining_step_has_no_all_gather():
    """The on-device deformations run per device (transforms.batching.per_device): before, XLA's partitioner
    all-gathered the flat gathers' and scatters' operands of the whole batch onto every device."""
    model = {"name": "genesis_unet", "variant": "pytorch", "base_width": 4, "depth": 2}
    cost = step_cost(StepSpec(model, SHAPE, global_batch=8, task="pretrain"), make_mesh(8))
    assert cost.param_bytes <= cost.all_reduce_bytes <= cost.param_bytes * 1.1


def test_an_accidental_all_gather_fails_the_check():
    mesh = make_mesh(8)
    x = jax.device_put(jnp.zeros((8, 64)), batch_sharding(mesh))
    gathered = jax.jit(lambda a: a * 2, out_shardings=replicated(mesh)).lower(x).compile().as_text()
    collectives = hlo_collectives(gathered)
    assert [c.kind for c in collectives] == ["all-gather"] and collectives[0].bytes == 8 * 64 * 4
    with pytest.raises(ValueError, match="all-gather"):
        check_data_parallel_collectives(collectives, gradient_bytes=0, small_bytes=0)
    summed = jax.jit(lambda a: a.sum(0), out_shardings=replicated(mesh)).lower(x).compile().as_text()
    reduce = hlo_collectives(summed)
    assert check_data_parallel_collectives(reduce, gradient_bytes=64 * 4, small_bytes=0) == 64 * 4
    with pytest.raises(ValueError, match="all-reduces 256 bytes"):  # not the gradient's size: a missing reduction
        check_data_parallel_collectives(reduce, gradient_bytes=1024, small_bytes=0)


def test_residual_memory_grows_with_the_batch():
    model = {"name": "genesis_unet", "variant": "keras", "base_width": 4, "depth": 2}
    one, two = (residual_bytes(StepSpec(model, SHAPE, global_batch=b, task="segmentation")) for b in (2, 4))
    assert one > 4 * 2 * 16 * 16 * 8 * 4  # at least the first layer's activations of the batch
    assert two == pytest.approx(2 * one, rel=0.01)


def test_summary_cost_prints_the_step_figures(capsys):
    from genesis_jax.cli import main

    overrides = ["--config.model.base_width=4", "--config.model.depth=2", "--config.input_shape=(16,16,8,1)"]
    assert main(["summary", "--config=models/unet3d:keras", *overrides, "--cost", "--batch", "2",
                 "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    flops = float(out.split("FLOPs per sample:")[1].split()[0].replace(",", ""))
    hand = 2 * genesis_unet_training_macs(4, 2, SHAPE, 2, "keras") / 2
    assert hand <= flops <= 1.3 * hand  # width 4: element-wise work weighs more than at width 8
    assert "gradient (float32):" in out and "conv_impl native" in out


@pytest.mark.parametrize("spec, task", [
    ("pretrain/genesis_chest_ct:tiny", "pretrain"), ("pretrain/mim:tiny", "pretrain"),
    ("finetune/lcs:tiny", "segmentation"), ("finetune/ncc:tiny", "classification"),
    ("models/unet3d:pytorch", "pretrain"),
])
def test_summary_cost_task_follows_the_config_kind(spec, task):
    """A fine-tuning config of the Genesis U-Net costs its fine-tuning step, not pre-training (the network's name
    decided it before); a model config, which trains nothing, a classifier's step or else pre-training."""
    from genesis_jax.cli.summary import default_task
    from genesis_jax.config_loader import load_config

    assert default_task(load_config(spec, [])) == task


def test_summary_cost_of_a_fine_tuning_config_is_its_augmented_step(capsys):
    from genesis_jax.cli import main

    overrides = ["--config.model.base_width=4", "--config.model.depth=2", "--config.input_shape=(16,16,8,1)"]
    assert main(["summary", "--config=finetune/lcs:tiny", *overrides, "--cost", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "Training step (segmentation, augmented on the device, global batch 2, float32, conv_impl native" in out
