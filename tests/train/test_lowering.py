"""The training steps, the restoration transforms and the sliding window lower for TPU and CUDA: each is exported
with ``jax.export`` for ('tpu',) and ('cuda',) from this CPU host, the steps on the 8-device test mesh exactly as
the library builds them (``genesis_jax.train.cost.build_step``: make_train_step with the task's prepare, loss and
optimiser). ``conv_impl='auto'`` is decided per lowering platform; the export records that choice.

Run: ``python -m pytest tests -k lowering`` (tiny networks; about a minute on a loaded 2-core CPU).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from genesis_jax import transforms
from genesis_jax.evaluation import SlidingWindow
from genesis_jax.models import build_model
from genesis_jax.models.layers import resolve_conv_impl
from genesis_jax.models.registry import MODELS
from genesis_jax.train.cost import StepSpec, build_step, export_step
from genesis_jax.train.mesh import DATA_AXIS, batch_sharding, make_mesh, replicated

PLATFORMS = ("tpu", "cuda")
SHAPE = (16, 16, 8, 1)
# Every registered network in its spec's tiny form (a network registered later joins), and the published forms the
# tiny ones leave out: the Genesis U-Net's pytorch variant, a 3D UNet++ with deep supervision.
EXTRA = [{"name": "genesis_unet", "variant": "pytorch", "ndim": 3, "base_width": 2, "depth": 2},
         {"name": "unetpp", "ndim": 3, "base_width": 2, "depth": 2, "deep_supervision": True}]
NETWORKS = [dict(MODELS[name].tiny_config) for name in sorted(MODELS)] + EXTRA


def _id(model):
    return "-".join(str(v) for k, v in model.items() if k in ("name", "variant", "ndim", "deep_supervision"))


def _shape(model):
    return SHAPE if int(model.get("ndim", 3)) == 3 else (16, 16, 1)


def _tasks(model):
    """The training steps a network takes: classifiers fine-tune on labels; 3D segmentation networks also
    pre-train (restoration of cubes); 2D ones fine-tune (2D pre-training cuts slices out of cubes)."""
    if MODELS[model["name"]].task == "classification":
        return ["classification"]
    return ["pretrain", "segmentation"] if int(model.get("ndim", 3)) == 3 else ["segmentation"]


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(8)


def _convolution_ranks(mlir_text: str) -> list[int]:
    """The input rank of every convolution in a StableHLO module (5: a 3D convolution, 4: a 2D one)."""
    ranks = []
    for line in mlir_text.splitlines():
        if "stablehlo.convolution" in line:
            operand = re.search(r":\s*\(tensor<((?:\d+x)+)\w+>", line)
            ranks.append(operand.group(1).count("x"))
    return ranks


def _arg_specs(exported, mesh) -> tuple[list, list]:
    """The partition specs of the exported step's (state, batch) leaves."""
    shardings = jax.tree.unflatten(exported.in_tree, exported.in_shardings_jax(mesh))[0]
    return [[s.spec for s in jax.tree.leaves(tree)] for tree in shardings]


@pytest.mark.parametrize("model", NETWORKS, ids=_id)
def test_train_step_lowering_for_tpu_and_cuda(model, mesh):
    for task in _tasks(model):
        spec = StepSpec(model, _shape(model), global_batch=8, task=task)
        for platform in PLATFORMS:
            exported = export_step(spec, mesh, (platform,))
            assert exported.platforms == (platform,)
            assert exported.nr_devices == 8
            # the batch stays split over the data axis and the state replicated, as the library trains
            state_shardings, batch_shardings = _arg_specs(exported, mesh)
            assert state_shardings and all(spec == P() for spec in state_shardings)
            assert batch_shardings and all(spec == P(DATA_AXIS) for spec in batch_shardings)
            text = exported.mlir_module()
            # conv_impl='auto' on GPU/TPU: XLA's own convolutions of the network's rank, no depth-tap 2D form
            assert resolve_conv_impl("auto", 3, 3, platform=platform) == "native"
            assert set(_convolution_ranks(text)) == {len(_shape(model)) + 1}, (task, platform)


def test_conv_impl_auto_lowering_per_platform(mesh):
    """One step exported for CPU, CUDA and TPU: each platform's module holds the form resolve_conv_impl picks there
    (CPU: depth taps (2D convolutions) except the single-channel image layer; CUDA/TPU: 3D convolutions only)."""
    spec = StepSpec({"name": "genesis_unet", "variant": "pytorch", "base_width": 4, "depth": 2}, SHAPE, global_batch=8)
    ranks = {p: _convolution_ranks(export_step(spec, mesh, (p,)).mlir_module()) for p in ("cpu", *PLATFORMS)}
    choice = {p: resolve_conv_impl("auto", 3, 3, platform=p, in_channels=4) for p in ranks}
    assert choice == {"cpu": "depth_taps", "tpu": "native", "cuda": "native"}
    assert set(ranks["tpu"]) == set(ranks["cuda"]) == {5}
    assert 4 in ranks["cpu"] and 5 in ranks["cpu"]  # taps for the wide layers, XLA's for the 1-channel input
    # one export for several platforms carries each platform's form, chosen when it is compiled
    multi = _convolution_ranks(export_step(spec, mesh, ("cpu", "tpu")).mlir_module())
    assert set(multi) == {4, 5}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_restoration_transforms_lowering(platform, mesh):
    """restoration_batch (the published deformations, as the pre-training step runs them) on a sharded batch."""
    def deform(raw_key, cubes):
        return transforms.restoration_batch(jax.random.wrap_key_data(raw_key), cubes)

    key_data = jax.random.key_data(jax.random.key(0))
    jitted = jax.jit(deform, out_shardings=(batch_sharding(mesh), batch_sharding(mesh)))
    exported = jax.export.export(jitted, platforms=(platform,))(
        jax.ShapeDtypeStruct(key_data.shape, key_data.dtype, sharding=replicated(mesh)),
        jax.ShapeDtypeStruct((8, *SHAPE), jnp.float32, sharding=batch_sharding(mesh)))
    assert exported.nr_devices == 8
    assert [a.shape for a in exported.out_avals] == [(8, *SHAPE)] * 2
    assert exported.in_shardings_jax(mesh)[1].spec == P(DATA_AXIS)
    assert [s.spec for s in exported.out_shardings_jax(mesh)] == [P(DATA_AXIS)] * 2


@pytest.mark.parametrize("platform", PLATFORMS)
def test_sliding_window_lowering(platform):
    """The sliding window's one jitted function (scan over window batches, blending, accumulation), as
    ``evaluate_test_set`` builds it, with the pytorch variant (batch statistics at inference)."""
    model = build_model({"name": "genesis_unet", "variant": "pytorch", "base_width": 4, "depth": 2})
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *SHAPE))))
    sliding = SlidingWindow(model.apply, SHAPE[:-1], overlap=0.5, batch_size=2)
    volume_shape = (24, 20, 12)
    padded, starts, valid = sliding.plan(volume_shape)
    args = (variables, jax.ShapeDtypeStruct((*padded, 1), jnp.float32),
            jax.ShapeDtypeStruct(starts.shape, jnp.int32), jax.ShapeDtypeStruct(valid.shape, jnp.float32))
    exported = jax.export.export(sliding._jitted, platforms=(platform,))(*args)
    assert exported.out_avals[0].shape == (*padded, 1)
    assert set(_convolution_ranks(exported.mlir_module())) == {5}
    assert np.prod(starts.shape[:2]) >= 2  # more than one batch of windows: the scan is really there
