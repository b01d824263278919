"""The train state: parameters, BatchNorm statistics, optimizer state, step counter and the random key, as one
pytree that jitted steps take and return and that checkpoints save whole.

A task may own trainable parameters besides the network's (``task_params``: a pre-training pretext's learned mask
token): the same optimiser trains them (``task_opt_state``, an optimiser state of the same transformation, so
their learning rate, momentum and moving average follow the network's), checkpoints save them beside the network's,
and nothing exports them: ``params`` and ``variables`` stay the network's alone. A state without them (every
fine-tuning state, the restoration pretexts') checkpoints exactly the fields it did before they existed.

The random key is held as raw key data (uint32) so that orbax can write it; :meth:`TrainState.key` wraps it back.
The network's ``apply`` and the optax transformation are static fields: they are code, not state.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from genesis_jax.config_loader import ConfigError
from genesis_jax.models.summary import layer_output_bytes
from genesis_jax.runtime import available_host_memory
from genesis_jax.train.mesh import replicated

# The arrays a checkpoint holds; apply_fn and tx are rebuilt from the config.
STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng")
TASK_FIELDS = ("task_params", "task_opt_state")  # held only by a state whose task owns parameters


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    key_impl: str | None = struct.field(pytree_node=False, default=None)
    task_params: Any = struct.field(default_factory=dict)  # the task's own trainable parameters ({}: none)
    task_opt_state: Any = None  # tx's state for task_params (None without them)

    def key(self) -> jax.Array:
        return jax.random.wrap_key_data(self.rng, impl=self.key_impl)

    @property
    def variables(self) -> dict[str, Any]:
        """{'params', 'batch_stats'} as ``model.apply`` takes them (batch_stats only when the network has any)."""
        out = {"params": self.params}
        if self.batch_stats:
            out["batch_stats"] = self.batch_stats
        return out

    def checkpoint_tree(self) -> dict[str, Any]:
        """The arrays to save: a plain dict, independent of the static fields (the task's parameters and their
        optimiser state only when the task owns any)."""
        return {name: getattr(self, name) for name in STATE_FIELDS + (TASK_FIELDS if self.task_params else ())}

    def with_checkpoint_tree(self, tree: Mapping[str, Any]) -> "TrainState":
        return self.replace(**{name: tree[name] for name in STATE_FIELDS + TASK_FIELDS if name in tree})


def _path_str(path: Sequence[Any]) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def check_same_structure(expected: Any, given: Any, what: str) -> None:
    """Raise a ValueError listing the paths whose presence or shape differs between two variable trees."""
    exp = {_path_str(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
    got = {_path_str(p): tuple(jnp.shape(x)) for p, x in jax.tree_util.tree_flatten_with_path(given)[0]}
    missing = sorted(set(exp) - set(got))
    extra = sorted(set(got) - set(exp))
    shape = sorted(k for k in set(exp) & set(got) if exp[k] != got[k])
    if missing or extra or shape:
        lines = [f"{what} do not match the network built from config.model:"]
        if missing:
            lines.append(f"  missing: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if extra:
            lines.append(f"  unexpected: {extra[:8]}{' ...' if len(extra) > 8 else ''}")
        for k in shape[:8]:
            lines.append(f"  {k}: network {exp[k]}, given {got[k]}")
        raise ValueError("\n".join(lines))


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    input_shape: Sequence[int],
    mesh: Mesh,
    *,
    variables: Mapping[str, Any] | None = None,
    task_params: Mapping[str, Any] | None = None,
) -> TrainState:
    """Initialise (jitted, directly replicated on ``mesh``) a state for ``model`` on inputs of ``input_shape``
    (without the batch axis). ``variables`` ({'params', 'batch_stats'?}, e.g. from ``--init``) replace the random
    initialisation; their structure and shapes must match the network. ``task_params`` are the initial values of
    the task's own trainable parameters (see the module docstring)."""
    own = {name: jnp.asarray(value, jnp.float32) for name, value in (task_params or {}).items()}
    init_key, state_key = jax.random.split(key)
    sample = jnp.zeros((1, *input_shape), jnp.float32)

    def init_variables() -> dict[str, Any]:
        v = model.init({"params": init_key, "dropout": init_key}, sample, train=False)
        return {"params": v["params"], "batch_stats": v.get("batch_stats", {})}

    abstract = jax.eval_shape(init_variables)
    if variables is not None:
        given = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}) or {}}
        check_same_structure(abstract, given, "the initial weights")
        given = jax.tree.map(lambda a, x: jnp.asarray(x, a.dtype), abstract, given)

    def build(given_vars: Any) -> TrainState:
        v = init_variables() if given_vars is None else given_vars
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=v["params"],
            batch_stats=v["batch_stats"],
            opt_state=tx.init(v["params"]),
            rng=jax.random.key_data(state_key),
            apply_fn=model.apply,
            tx=tx,
            key_impl=str(jax.random.key_impl(state_key)),
            task_params=own,
            task_opt_state=tx.init(own) if own else None,
        )

    sharding = replicated(mesh)
    if variables is None:
        return jax.jit(lambda: build(None), out_shardings=sharding)()
    return jax.jit(build, out_shardings=sharding)(jax.device_put(given, sharding))


def abstract_train_state(
    model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, input_shape: Sequence[int], mesh: Mesh,
    *, task_params: Mapping[str, Any] | None = None,
) -> TrainState:
    """The state ``create_train_state`` would build, as ShapeDtypeStructs replicated on the CURRENT mesh and
    without computing anything: the restore target, so that a checkpoint written on another number of devices
    lands on this mesh."""
    abstract = jax.eval_shape(lambda: create_train_state(model, tx, key, input_shape, mesh, task_params=task_params))
    sharding = replicated(mesh)
    return abstract.with_checkpoint_tree(
        jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract.checkpoint_tree())
    )


class ModelTooLargeError(ConfigError):
    """The network (or its batch) cannot fit the memory there is; the message names the config fields to lower."""


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def memory_available(device: jax.Device) -> int:
    """Bytes a training state and step may use on ``device``: the accelerator's limit where it reports one, else
    the host memory available now (CPU)."""
    stats = None
    try:
        stats = device.memory_stats()
    except (AttributeError, NotImplementedError, RuntimeError):
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return available_host_memory()


def check_fits_memory(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, input_shape: Sequence[int],
                      mesh: Mesh, per_device_batch: int, model_config: Mapping[str, Any] | None = None) -> None:
    """Refuse, before anything is compiled or allocated, a network whose training cannot fit one device: the train
    state (parameters, BatchNorm statistics, optimizer state; ``jax.eval_shape``, nothing computed) plus its
    gradients, and the activations one step keeps for its backward pass (every layer's output for the per-device
    batch; a lower bound, so a run that could fit is not refused). Without this an oversized width compiles for
    minutes and then exhausts memory."""
    abstract = jax.eval_shape(lambda: create_train_state(model, tx, key, input_shape, mesh))
    nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    weights = nbytes((abstract.params, abstract.batch_stats, abstract.opt_state)) + nbytes(abstract.params)
    activations = layer_output_bytes(model, (per_device_batch, *input_shape), train=False)
    device = mesh.devices.flat[0]
    available = memory_available(device)
    if weights + activations <= available:
        return
    cfg = dict(model_config or {})
    if activations > weights:
        field = f"config.input_shape={tuple(input_shape)} with {per_device_batch} input(s) per device"
        fix = "lower the batch size or the input shape"
    else:
        field = (f"config.model.base_width={cfg['base_width']}" if "base_width" in cfg else "config.model") + (
            f" (depth {cfg['depth']})" if "depth" in cfg else "")
        fix = "lower config.model.base_width" if "base_width" in cfg else "choose a smaller network"
    raise ModelTooLargeError(
        f"{field}: training needs about {_gib(weights + activations)} (parameters, gradients and optimizer state "
        f"{_gib(weights)}, activations {_gib(activations)}) but {_gib(available)} is available on "
        f"{device.platform.upper()}; nothing was compiled: {fix}")
