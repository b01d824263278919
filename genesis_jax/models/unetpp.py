"""UNet++ (Zhou et al., DLMIA 2018 / TMI 2019): nested dense skip pathways, deep supervision and pruning.

Node X^{i,j} (level i, column j) exists for i + j <= depth:
    x^{i,0} = H(D(x^{i-1,0}))                       (x^{0,0} = H(input))
    x^{i,j} = H([U(x^{i+1,j-1}), x^{i,0}, ..., x^{i,j-1}])     j > 0
H is two 3^n convs + ReLU, each followed by dropout (0.5 published, no normalisation; ``norm='batch'`` adds a
BatchNorm after each conv). D is a 2x max-pool, U a 2x2 stride-2 transposed conv to f[i] channels (``layers.UpConv2x``). Heads (1^n conv)
sit on the top row X^{0,1..depth}.

Pruning: with ``prune_level=L`` only the nodes with i + j <= L and head L are built and run, so the pruned network
is a strict sub-graph of the full one with the same parameter names, and its output equals the full network's
head L exactly. Parameter names: ``X_{i}_{j}/{conv_0,conv_1}``, ``up_{i}_{j}`` (the up-sampling feeding X^{i,j}),
``head_{j}``.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from genesis_jax.models.initializers import kernel_initializer
from genesis_jax.models.layers import BatchNorm, check_input, conv, conv_transpose_2x, max_pool
from genesis_jax.models.spec import NetworkSpec
from genesis_jax.models.unet import apply_activation

Mode = Literal["accurate", "fast"]


class NestedBlock(nn.Module):
    """H: (conv 3^n -> [BatchNorm] -> ReLU -> Dropout) x 2."""

    features: int
    ndim: int
    dropout: float
    norm: str | None
    kernel_init: str
    dtype: Any = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(2):
            init = kernel_initializer(self.kernel_init)
            x = conv(self.features, self.ndim, 3, f"conv_{i}", self.dtype, self.conv_impl, kernel_init=init)(x)
            if self.norm == "batch":
                x = BatchNorm(mode="standard", momentum=0.99, epsilon=1e-3, dtype=self.dtype, name=f"bn_{i}")(x, train)
            x = nn.relu(x)
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class UNetPlusPlus(nn.Module):
    """UNet++ for 2D (N, X, Y, C) or 3D (N, X, Y, Z, C) inputs.

    Attributes:
      ndim, base_width (32), depth (4: levels 0..4, bottleneck at 1/16), in_channels, num_classes.
      deep_supervision: heads on X^{0,1..depth} (else only on X^{0,depth}).
      mode: with deep supervision, 'accurate' averages the heads, 'fast' returns the deepest built head.
      prune_level: None (= depth) or L in 1..depth: build and run only the nodes with i + j <= L and head L.
      dropout: 0.5 published; active only when ``train=True`` (needs a 'dropout' rng).
      norm: None (published) or 'batch'.
      head_activation: 'sigmoid' (published), 'softmax' or None.
      conv_impl: form of the 3^n convolutions, as for ``GenesisUNet`` ('auto', 'native', 'depth_taps').
    """

    ndim: int = 2
    base_width: int = 32
    depth: int = 4
    in_channels: int = 1
    num_classes: int = 1
    deep_supervision: bool = True
    mode: Mode = "accurate"
    prune_level: int | None = None
    dropout: float = 0.5
    norm: str | None = None
    head_activation: str | None = "sigmoid"
    kernel_init: str = "he_normal"
    dtype: Any = None
    conv_impl: str = "auto"

    @property
    def level(self) -> int:
        level = self.depth if self.prune_level is None else self.prune_level
        if not 1 <= level <= self.depth:
            raise ValueError(f"UNetPlusPlus: prune_level must be in 1..{self.depth}, got {self.prune_level}")
        return level

    @property
    def head_columns(self) -> tuple[int, ...]:
        """The columns j whose X^{0,j} carries a head in this configuration."""
        if self.prune_level is not None:
            return (self.level,)
        return tuple(range(1, self.depth + 1)) if self.deep_supervision else (self.depth,)

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_all_heads: bool = False, output: str = "prediction"
    ) -> Any:
        """Returns the activated prediction; with ``return_all_heads`` a list of every head's output
        (shallow to deep), which is what the deep-supervision loss sums over. ``output='bottleneck'`` runs only
        the encoder column X^{i,0} and returns its deepest node."""
        level = self.level
        check_input(x, ndim=self.ndim, in_channels=self.in_channels, divisor=2**level, model="UNetPlusPlus")
        if self.norm not in (None, "batch"):
            raise ValueError(f"UNetPlusPlus: norm must be None or 'batch', got {self.norm!r}")
        if self.dtype is not None:
            x = x.astype(self.dtype)
        widths = [self.base_width * 2**i for i in range(self.depth + 1)]

        def block(i: int, j: int) -> NestedBlock:
            return NestedBlock(
                widths[i], self.ndim, self.dropout, self.norm, self.kernel_init, self.dtype, self.conv_impl,
                name=f"X_{i}_{j}",
            )

        nodes: dict[tuple[int, int], jax.Array] = {}
        # Column by column in the order the encoder is built: X00, X10, X01, X20, X11, X02, ...
        for i_enc in range(level + 1):
            inp = x if i_enc == 0 else max_pool(nodes[(i_enc - 1, 0)], self.ndim)
            nodes[(i_enc, 0)] = block(i_enc, 0)(inp, train)
            last_column = 0 if output == "bottleneck" else i_enc  # the encoder alone: column 0 only
            for j in range(1, last_column + 1):
                i = i_enc - j
                up = conv_transpose_2x(
                    widths[i], self.ndim, f"up_{i}_{j}", self.dtype, kernel_init=kernel_initializer(self.kernel_init)
                )(nodes[(i + 1, j - 1)])
                nodes[(i, j)] = block(i, j)(jnp.concatenate([up] + [nodes[(i, k)] for k in range(j)], axis=-1), train)

        if output == "bottleneck":
            return nodes[(level, 0)]
        heads = []
        for j in self.head_columns:
            head = conv(self.num_classes, self.ndim, 1, f"head_{j}", self.dtype, kernel_init=kernel_initializer(self.kernel_init))
            heads.append(apply_activation(head(nodes[(0, j)]).astype(jnp.float32), self.head_activation))
        if return_all_heads:
            return heads
        if self.mode == "accurate":
            return sum(heads) / len(heads)
        if self.mode == "fast":
            return heads[-1]
        raise ValueError(f"UNetPlusPlus: mode must be 'accurate' or 'fast', got {self.mode!r}")


def evaluation_config(model_config: dict[str, Any], eval_config: Any) -> dict[str, Any]:
    """The evaluated network: ``eval.prune_level`` (L1..L4) and ``eval.mode`` apply; the pruned network is a
    sub-graph with the same parameter names, so the trained variables serve it unchanged."""
    cfg = dict(model_config)
    if eval_config.get("prune_level") is not None:
        cfg["prune_level"] = int(eval_config.get("prune_level"))
    cfg["mode"] = eval_config.get("mode") or cfg.get("mode", "accurate")
    return cfg


SPEC = NetworkSpec(
    name="unetpp",
    build=lambda cfg: UNetPlusPlus(**cfg),
    task="segmentation",
    tiny_config={"name": "unetpp", "ndim": 2, "base_width": 2, "depth": 2, "dropout": 0.0},
    input_divisor=lambda m: 2**m.level,
    encoder_prefixes=lambda m: tuple(f"X_{i}_0" for i in range(m.level + 1)),
    stem_prefixes=lambda m: ("X_0_0/conv_0",),
    head_prefixes=lambda m: tuple(f"head_{j}" for j in m.head_columns),
    encoder_apply_kwargs={"output": "bottleneck"},
    # the heads X^{0,1..depth} each scored against the target (only unpruned: a pruned network has one head)
    deep_supervision=lambda m: {"return_all_heads": True} if m.deep_supervision and m.prune_level is None else None,
    evaluation_config=evaluation_config,
)
