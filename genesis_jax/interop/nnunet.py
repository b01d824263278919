"""nnU-Net and nnssl checkpoints in and out for nnU-Net's U-Nets (genesis_jax.models.resenc and .plain_unet).

Out (``write_nnunet``): ``{'network_weights': state_dict, 'nnssl_adaptation_plan': ..., 'genesis_jax': ...}``.
``network_weights`` carries every key of the PyTorch network's ``state_dict()`` under nnU-Net's names, aliases
included (``...conv.weight`` is also ``...all_modules.0.weight``, ``...norm.*`` also ``...all_modules.1.*``, and
the decoder holds the encoder again as ``decoder.encoder.*``), because ``nnunetv2.run.load_pretrained_weights``
requires every key of the network except ``.seg_layers.``. ``nnssl_adaptation_plan`` is nnssl's
``AdaptationPlan.serialize()`` layout (architecture class and kwargs, pre-training patch size, input channels, the
keys of encoder, stem and input projection), so nnssl-aware tools (``nnUNetv2_preprocess_like_nnssl``) read it too.

In (``read_nnunet_checkpoint``): a checkpoint with ``network_weights`` -- nnU-Net's own (architecture from
``init_args['plans']``), nnssl's (from ``nnssl_adaptation_plan``; the preset ``ResEncL`` included; its encoder and
stem keys, input channels and patch size are honoured: the weights are looked up under the plan's encoder/stem
keys, the input channels must match the stem, the patch size must fit the network and is recorded), or ours. An
encoder-only nnssl checkpoint gets a freshly initialised decoder, listed in the metadata.

Kernels: PyTorch convolution weights (O, I, *k) are flax (*k, I, O); transposed-convolution weights (I, O, *k) are
flax (*k, I, O) spatially flipped (the orientation ``StridedUpConv`` stores). Instance norms have no running
statistics. Files are read by ``genesis_jax.interop.pytorch.load_torch_file`` (``weights_only``: no pickled code).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genesis_jax.interop.mapping import InteropError, check_weight_values
from genesis_jax.models import build_model
from genesis_jax.models.resenc import DynamicUNet, per_axis

CLASS_NAMES = {
    "resenc_unet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "plain_unet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
}
# nnssl's fixed preset (nnssl.architectures.architecture_registry.get_res_enc_l)
NNSSL_PRESETS = {
    "ResEncL": dict(features_per_stage=(32, 64, 128, 256, 320, 320), kernel_sizes=((3, 3, 3),) * 6,
                    strides=((1, 1, 1),) + ((2, 2, 2),) * 5, n_blocks_per_stage=(1, 3, 4, 6, 6, 6),
                    n_conv_per_stage_decoder=(1, 1, 1, 1, 1), conv_bias=True),
}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_ENCODER, _STEM = "encoder.stages", "encoder.stem"


def _model(model_config: Mapping[str, Any], source: Any) -> DynamicUNet:
    if model_config.get("name") not in CLASS_NAMES:
        raise InteropError(f"{source}: model.name is {model_config.get('name')!r}; nnU-Net checkpoints hold one of "
                           f"{sorted(CLASS_NAMES)}")
    try:
        return build_model(model_config)
    except ValueError as err:
        raise InteropError(f"{source}: {err}") from None


def _flat_shapes(model: DynamicUNet) -> dict[tuple[str, ...], tuple[int, ...]]:
    x = jax.ShapeDtypeStruct((1, *model.smallest_input, model.in_channels), jnp.float32)
    shapes = jax.eval_shape(lambda inputs: model.init(jax.random.key(0), inputs), x)["params"]
    flat = {}

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, (*prefix, key))
            else:
                flat[(*prefix, key)] = tuple(value.shape)

    walk(shapes, ())
    return flat


def _torch_module(model: DynamicUNet, path: tuple[str, ...]) -> str:
    """The PyTorch module name of a flax parameter's module, e.g. ('encoder_1', 'block_0_conv1') ->
    'encoder.stages.1.blocks.0.conv1.conv'."""
    top, *rest = path
    last = model.n_stages - 2  # the full-resolution decoder level's index in nnU-Net's decoder lists
    if top == "head":
        return f"decoder.seg_layers.{last}"
    if top.startswith("head_"):
        return f"decoder.seg_layers.{last - int(top[5:])}"
    (layer,) = rest
    kind, index = layer.rsplit("_", 1) if layer != "up" else ("up", "")
    op = {"conv": "conv", "norm": "norm"}.get(kind)
    if top.startswith("decoder_"):
        stage = last - int(top[8:])
        return f"decoder.transpconvs.{stage}" if layer == "up" else f"decoder.stages.{stage}.convs.{index}.{op}"
    if top == "encoder_stem":
        return f"{_STEM}.convs.{index}.{op}"
    stage = int(top[8:])
    if not model.residual_encoder:
        return f"{_ENCODER}.{stage}.0.convs.{index}.{op}"
    match = re.fullmatch(r"block_(\d+)_(conv1|norm1|conv2|norm2|skip_conv|skip_norm)", layer)
    block, part = int(match[1]), match[2]
    if part.startswith("skip"):
        strided = block == 0 and model.stage_strides()[stage] != (1,) * model.ndim
        return f"{_ENCODER}.{stage}.blocks.{block}.skip.{int(strided)}.{part[5:]}"
    return f"{_ENCODER}.{stage}.blocks.{block}.conv{part[-1]}.{part[:-1]}"


def key_map(model_config: Mapping[str, Any], source: Any = "model config") -> dict[tuple[str, ...], str]:
    """Flax parameter path (inside 'params') -> nnU-Net state_dict key, for every parameter of the network."""
    model = _model(model_config, source)
    return {path: f"{_torch_module(model, path[:-1])}.{_LEAF[path[-1]]}" for path in _flat_shapes(model)}


def aliases(key: str) -> list[str]:
    """Every state_dict key under which PyTorch stores the same tensor as ``key`` (``key`` first)."""
    names = [key]
    module, leaf = key.rsplit(".", 1)
    if not module.startswith(("decoder.transpconvs", "decoder.seg_layers")):
        holder, op = module.rsplit(".", 1)  # a ConvDropoutNormReLU's conv or norm (no dropout in nnU-Net's plans)
        names.append(f"{holder}.all_modules.{0 if op == 'conv' else 1}.{leaf}")
    return names + [f"decoder.{name}" for name in names if name.startswith("encoder.")]


def _is_transposed(path: tuple[str, ...]) -> bool:
    return path[-2] == "up"


def _to_torch(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    if path[-1] != "kernel":
        return array
    n = array.ndim - 2
    if _is_transposed(path):  # flipped (*k, I, O) -> (I, O, *k)
        return np.ascontiguousarray(array[(slice(None, None, -1),) * n].transpose(n, n + 1, *range(n)))
    return np.ascontiguousarray(array.transpose(n + 1, n, *range(n)))


def _to_flax(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    if path[-1] != "kernel":
        return array
    n = array.ndim - 2
    if _is_transposed(path):
        return np.ascontiguousarray(array.transpose(*range(2, n + 2), 0, 1)[(slice(None, None, -1),) * n])
    return np.ascontiguousarray(array.transpose(*range(2, n + 2), 1, 0))


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    if path[-1] != "kernel":
        return shape
    *k, fan_in, fan_out = shape
    return (fan_in, fan_out, *k) if _is_transposed(path) else (fan_out, fan_in, *k)


# ----------------------------------------------------------------------------------------------------- architecture
def architecture(model_config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(network_class_name, arch_kwargs) as nnU-Net's plans write them, for ``get_network_from_plans``."""
    model = _model(model_config, "model config")
    dims = f"{model.ndim}d"
    kwargs: dict[str, Any] = {
        "n_stages": model.n_stages,
        "features_per_stage": list(model.features_per_stage),
        "conv_op": f"torch.nn.modules.conv.Conv{dims}",
        "kernel_sizes": [list(k) for k in model.stage_kernels()],
        "strides": [list(s) for s in model.stage_strides()],
        ("n_blocks_per_stage" if model.residual_encoder else "n_conv_per_stage"): list(model.n_blocks_per_stage),
        "n_conv_per_stage_decoder": list(model.n_conv_per_stage_decoder),
        "conv_bias": bool(model.conv_bias),
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}",
        "norm_op_kwargs": {"eps": float(model.norm_epsilon), "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True} if model.negative_slope == 0.01 else
                         {"inplace": True, "negative_slope": float(model.negative_slope)},
    }
    return CLASS_NAMES[model_config["name"]], kwargs


def model_config_from_architecture(class_name: str, kwargs: Mapping[str, Any], in_channels: int, num_classes: int,
                                   source: Any) -> dict[str, Any]:
    """The genesis_jax model config of an nnU-Net ``(network_class_name, arch_kwargs)``; anything this port does not
    build (another class, block, norm, dropout, non-linearity) is refused with the field named."""
    short = class_name.rsplit(".", 1)[-1]
    names = {v.rsplit(".", 1)[-1]: k for k, v in CLASS_NAMES.items()}
    if short not in names:
        raise InteropError(f"{source}: architecture {class_name!r} is not one of {sorted(names)} (or nnssl's "
                           f"{sorted(NNSSL_PRESETS)})")
    kwargs = dict(kwargs)
    conv_op = str(kwargs.get("conv_op", ""))
    ndim = 2 if conv_op.endswith("2d") else 3 if conv_op.endswith("3d") else None
    checks = {
        "conv_op": ndim is not None,
        "norm_op": str(kwargs.get("norm_op", "")).rsplit(".", 1)[-1].startswith("InstanceNorm"),
        "nonlin": str(kwargs.get("nonlin", "")).rsplit(".", 1)[-1] == "LeakyReLU",
        "dropout_op": kwargs.get("dropout_op") is None,
        "block": str(kwargs.get("block", "BasicBlockD")).rsplit(".", 1)[-1] == "BasicBlockD",
        "stem_channels": kwargs.get("stem_channels") in (None, (kwargs.get("features_per_stage") or [None])[0]),
        "nonlin_first": not kwargs.get("nonlin_first", False),
    }
    for field, ok in checks.items():
        if not ok:
            raise InteropError(f"{source}: arch_kwargs {field}={kwargs.get(field)!r} is not supported by the "
                               "genesis_jax port (conv + InstanceNorm + LeakyReLU, BasicBlockD, no dropout)")
    n = int(kwargs["n_stages"])

    def per_stage(value: Any, count: int) -> tuple:
        return tuple(value) if isinstance(value, (list, tuple)) else (value,) * count

    blocks = kwargs.get("n_blocks_per_stage", kwargs.get("n_conv_per_stage"))
    norm_kwargs = kwargs.get("norm_op_kwargs") or {}
    return {
        "name": names[short],
        "ndim": ndim,
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "features_per_stage": [int(f) for f in per_stage(kwargs["features_per_stage"], n)],
        "kernel_sizes": [list(per_axis(k, ndim)) for k in per_stage(kwargs["kernel_sizes"], n)],
        "strides": [list(per_axis(s, ndim)) for s in per_stage(kwargs["strides"], n)],
        "n_blocks_per_stage": [int(b) for b in per_stage(blocks, n)],
        "n_conv_per_stage_decoder": [int(b) for b in per_stage(kwargs["n_conv_per_stage_decoder"], n - 1)],
        "conv_bias": bool(kwargs.get("conv_bias", False)),
        "norm_epsilon": float(norm_kwargs.get("eps", 1e-5)),
        "negative_slope": float((kwargs.get("nonlin_kwargs") or {}).get("negative_slope", 0.01)),
        "deep_supervision": False,
        "head_activation": None,
    }


def adaptation_plan(model_config: Mapping[str, Any], patch_size: tuple[int, ...] | None) -> dict[str, Any]:
    """nnssl's ``AdaptationPlan.serialize()`` for this network (pre-training facts genesis_jax does not record, e.g.
    the spacing, are None)."""
    class_name, kwargs = architecture(model_config)
    residual = model_config["name"] == "resenc_unet"
    in_proj = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0") if residual else \
        ("encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv")
    patch = None if patch_size is None else [int(p) for p in patch_size]
    configuration = {
        "data_identifier": "genesis_jax", "preprocessor_name": "genesis_jax", "spacing_style": None,
        "normalization_schemes": [], "use_mask_for_norm": [], "resampling_fn_data": None,
        "resampling_fn_data_kwargs": {}, "resampling_fn_mask": None, "resampling_fn_mask_kwargs": {},
        "spacing": None, "patch_size": patch,
    }
    return {
        "architecture_plans": {
            "arch_class_name": class_name.rsplit(".", 1)[-1],
            "arch_kwargs": kwargs,
            "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"],
        },
        "pretrain_plan": {
            "dataset_name": "genesis_jax", "plans_name": "genesis_jax", "original_median_spacing_after_transp": None,
            "image_reader_writer": None, "transpose_forward": list(range(len(kwargs["strides"][0]))),
            "transpose_backward": list(range(len(kwargs["strides"][0]))),
            "configurations": {"genesis_jax": configuration}, "experiment_planner_used": "genesis_jax",
        },
        "pretrain_num_input_channels": int(model_config.get("in_channels", 1)),
        "recommended_downstream_patchsize": patch,
        "key_to_encoder": _ENCODER,
        "key_to_stem": _STEM if residual else f"{_ENCODER}.0",
        "keys_to_in_proj": list(in_proj),
        "key_to_lpe": None,
    }


# -------------------------------------------------------------------------------------------------------------- out
def nnunet_state_dict(variables: Mapping[str, Any], model_config: Mapping[str, Any],
                      source: Any = "variables") -> "OrderedDict[str, np.ndarray]":
    """The network's PyTorch ``state_dict()`` as float32 numpy arrays, every alias included."""
    keys = key_map(model_config, source)
    params = variables.get("params", {})
    state: OrderedDict[str, np.ndarray] = OrderedDict()
    for path, key in keys.items():
        node: Any = params
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                raise InteropError(f"{source}: parameter {'/'.join(path)} is missing (model config and weights "
                                   "disagree)")
            node = node[part]
        value = np.asarray(node)
        check_weight_values(f"parameter {'/'.join(path)}", value, source)
        array = _to_torch(path, value.astype(np.float32))
        for name in aliases(key):
            state[name] = array
    return state


def write_nnunet(variables: Mapping[str, Any], model_config: Mapping[str, Any], path: str | Path, *,
                 patch_size: tuple[int, ...] | None = None, metadata: Mapping[str, Any] | None = None,
                 source: str | None = None) -> Path:
    """Write ``{'network_weights', 'nnssl_adaptation_plan', 'genesis_jax'}`` for
    ``nnUNetv2_train ... -pretrained_weights`` (and nnssl's tools). ``patch_size``: the pre-training patch, recorded
    as the recommended downstream patch size."""
    from genesis_jax.interop.pytorch import import_torch

    torch = import_torch()
    path = Path(path).expanduser()
    source = source or str(path)
    state = nnunet_state_dict(variables, model_config, source)
    tensors: dict[int, Any] = {}  # aliases share one tensor, as in the network's own state_dict
    weights = OrderedDict((k, tensors.setdefault(id(v), torch.from_numpy(v.copy()))) for k, v in state.items())
    checkpoint = {
        "network_weights": weights,
        "nnssl_adaptation_plan": adaptation_plan(model_config, patch_size),
        "genesis_jax": {"model_config": dict(model_config), "metadata": dict(metadata or {})},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


# --------------------------------------------------------------------------------------------------------------- in
def is_nnunet_checkpoint(checkpoint: Any) -> bool:
    return isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("network_weights"), Mapping)


def _plans_architecture(checkpoint: Mapping[str, Any], path: Path) -> tuple[str, dict[str, Any]] | None:
    """nnU-Net's own checkpoint: ``init_args['plans']['configurations'][configuration]['architecture']``."""
    init_args = checkpoint.get("init_args")
    if not isinstance(init_args, Mapping) or not isinstance(init_args.get("plans"), Mapping):
        return None
    configurations = init_args["plans"].get("configurations", {})
    name = init_args.get("configuration")
    seen = set()
    while name in configurations and name not in seen:  # 'inherits_from' chains, as nnU-Net's PlansManager follows
        seen.add(name)
        config = configurations[name]
        if "architecture" in config:
            arch = config["architecture"]
            return arch["network_class_name"], dict(arch["arch_kwargs"])
        name = config.get("inherits_from")
    raise InteropError(f"{path}: init_args['plans'] has no architecture for configuration "
                       f"{init_args.get('configuration')!r}")


def _nnssl_architecture(plan: Mapping[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    arch = plan.get("architecture_plans") or {}
    name = arch.get("arch_class_name")
    if name in NNSSL_PRESETS:
        kwargs = {**NNSSL_PRESETS[name], "n_stages": 6, "conv_op": "torch.nn.Conv3d", "norm_op": "InstanceNorm3d",
                  "nonlin": "torch.nn.LeakyReLU", "norm_op_kwargs": {"eps": 1e-5, "affine": True}}
        return CLASS_NAMES["resenc_unet"], kwargs
    if not arch.get("arch_kwargs"):
        raise InteropError(f"{path}: nnssl_adaptation_plan architecture {name!r} has no arch_kwargs and is not a "
                           f"preset this port knows ({sorted(NNSSL_PRESETS)})")
    return str(name), dict(arch["arch_kwargs"])


def read_nnunet_checkpoint(checkpoint: Mapping[str, Any], path: str | Path) -> tuple[dict, dict, dict]:
    """(variables as numpy float32, model_config, metadata) of a loaded nnU-Net / nnssl / genesis_jax checkpoint."""
    path = Path(path)
    state = {str(k): v for k, v in checkpoint["network_weights"].items()}
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile prefixes of checkpoints saved outside nnU-Net
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    plan = checkpoint.get("nnssl_adaptation_plan")
    ours = checkpoint.get("genesis_jax") if isinstance(checkpoint.get("genesis_jax"), Mapping) else {}
    metadata: dict[str, Any] = {"source": str(path.resolve())}
    # where the encoder and stem live in this file (an encoder-only nnssl checkpoint names them without 'encoder.')
    encoder_key, stem_key = _ENCODER, _STEM
    if isinstance(plan, Mapping):
        encoder_key, stem_key = str(plan.get("key_to_encoder", _ENCODER)), str(plan.get("key_to_stem", _STEM))
        metadata["source_format"] = "nnssl"
    else:
        metadata["source_format"] = "nnunet"

    def file_key(key: str) -> str:
        for ours_prefix, theirs in ((_STEM, stem_key), (_ENCODER, encoder_key)):
            if key == ours_prefix or key.startswith(ours_prefix + "."):
                return theirs + key[len(ours_prefix):]
        return key

    if isinstance(ours.get("model_config"), Mapping):
        model_config = dict(ours["model_config"])
        metadata["source_format"] = "genesis_jax"
    else:
        found = _nnssl_architecture(plan, path) if isinstance(plan, Mapping) else _plans_architecture(checkpoint, path)
        if found is None:
            raise InteropError(f"{path}: has 'network_weights' but neither an nnssl_adaptation_plan nor nnU-Net's "
                               "init_args['plans'], so its architecture is unknown")
        stem_weight = state.get(file_key(f"{_STEM}.convs.0.conv.weight"),
                                state.get(file_key(f"{_ENCODER}.0.0.convs.0.conv.weight")))
        heads = sorted((k for k in state if re.fullmatch(r"decoder\.seg_layers\.\d+\.weight", k)),
                       key=lambda k: int(k.split(".")[2]))
        if stem_weight is None:
            raise InteropError(f"{path}: no input convolution under {stem_key!r} / {encoder_key!r}")
        num_classes = int(state[heads[-1]].shape[0]) if heads else 1
        model_config = model_config_from_architecture(*found, int(stem_weight.shape[1]), num_classes, path)
    if isinstance(plan, Mapping):
        metadata["adaptation"] = _honour_plan(plan, model_config, path)

    keys = key_map(model_config, path)
    model = _model(model_config, path)
    shapes = _flat_shapes(model)
    present = {p for p, k in keys.items() if file_key(k) in state}
    missing = [p for p in keys if p not in present]
    fresh: dict[tuple[str, ...], np.ndarray] = {}
    if missing:
        encoder_missing = [p for p in missing if p[0].startswith("encoder_")]
        if encoder_missing:
            key = file_key(keys[encoder_missing[0]])
            raise InteropError(f"{path}: encoder key {key!r} is missing ({len(missing)} keys of the network missing)")
        # an encoder-only checkpoint: the decoder and heads start from nnU-Net's initialisation
        x = jnp.zeros((1, *model.smallest_input, model.in_channels), jnp.float32)
        init = model.init(jax.random.key(0), x)["params"]
        for p in missing:
            node = init
            for part in p:
                node = node[part]
            fresh[p] = np.asarray(node, np.float32)
        metadata["initialised_fresh"] = ["/".join(p) for p in missing]
    params: dict[str, Any] = {}
    for p in keys:
        if p in fresh:
            array = fresh[p]
        else:
            name = file_key(keys[p])
            tensor = state[name]
            if tuple(tensor.shape) != _torch_shape(p, shapes[p]):
                raise InteropError(f"{path}: {name!r} has shape {tuple(tensor.shape)}; the network "
                                   f"needs {_torch_shape(p, shapes[p])}")
            dtype = str(tensor.dtype).removeprefix("torch.")
            array = tensor.detach().to(device="cpu").float().numpy()
            check_weight_values(repr(name), array, path, np.float32 if tensor.is_floating_point() else dtype)
            array = _to_flax(p, array)
        node = params
        for part in p[:-1]:
            node = node.setdefault(part, {})
        node[p[-1]] = np.asarray(array, np.float32)
    for key in ("trainer_name", "current_epoch"):
        if isinstance(checkpoint.get(key), (str, int)):
            metadata[key] = checkpoint[key]
    if isinstance(ours.get("metadata"), Mapping):
        metadata["exported_metadata"] = dict(ours["metadata"])
    return {"params": params}, model_config, metadata


def _honour_plan(plan: Mapping[str, Any], model_config: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Check what nnssl's adaptation plan states against the network read, and record it."""
    model = _model(model_config, path)
    channels = plan.get("pretrain_num_input_channels")
    if channels is not None and int(channels) != model.in_channels:
        raise InteropError(f"{path}: nnssl_adaptation_plan pretrain_num_input_channels={channels} but the stem takes "
                           f"{model.in_channels} channel(s)")
    patch = plan.get("recommended_downstream_patchsize")
    if patch is not None:
        patch = [int(p) for p in patch]
        if len(patch) != model.ndim or any(p % d for p, d in zip(patch, model.input_divisor)):
            raise InteropError(f"{path}: nnssl_adaptation_plan recommended_downstream_patchsize={patch} does not fit "
                               f"the network (each size divisible by {list(model.input_divisor)})")
    return {
        "key_to_encoder": plan.get("key_to_encoder"),
        "key_to_stem": plan.get("key_to_stem"),
        "keys_to_in_proj": list(plan.get("keys_to_in_proj") or []),
        "pretrain_num_input_channels": channels,
        "patch_size": patch,
        "encoder_params": "encoder_* (stem: encoder_stem)" if model.residual_encoder else "encoder_*",
    }
