"""The ``encoder_classifier`` network: the published classification head on the encoder of any registered
segmentation network (the model config's ``backbone``), e.g. nnU-Net's ResEnc for active learning
(configs/active/acft:resenc). The module and the shared contract live in :mod:`genesis_jax.models.heads`."""

from __future__ import annotations

from genesis_jax.models.heads import build_encoder_classifier, classifier_spec

SPEC = classifier_spec(
    "encoder_classifier", build_encoder_classifier,
    {"name": "encoder_classifier", "num_classes": 1, "hidden": 8,
     "backbone": {"name": "resenc_unet", "ndim": 3, "features_per_stage": (2, 4, 4), "strides": (1, 2, 2),
                  "kernel_sizes": 3, "n_blocks_per_stage": (1, 2, 1), "n_conv_per_stage_decoder": (1, 1)}},
)
