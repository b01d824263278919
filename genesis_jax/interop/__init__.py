"""Published Models Genesis weights in and out (``pytorch``, ``keras_h5``, their parameter ``mapping`` and the
``published`` entry points): the PyTorch ``Genesis_Chest_CT.pt`` (-> 'pytorch' variant) and
the Keras ``Genesis_Chest_CT.h5`` (-> 'keras' variant) become Flax variables of ``GenesisUNet``; a 'pytorch'-variant
model goes back to a state_dict that the published ``UNet3D`` loads. nnU-Net's ResEnc / plain U-Nets go to and come
from nnU-Net and nnssl checkpoints (``nnunet``: ``write_nnunet``; ``read_published`` recognises a file holding
``network_weights``). torch and h5py are optional (the ``torch`` extra) and imported only when a file of theirs is
read or written.

    from genesis_jax.interop import load_published
    model, variables = load_published("Genesis_Chest_CT.pt")
    y = model.apply(variables, x)          # x: (N, X, Y, Z, 1) -> sigmoid (N, X, Y, Z, 1)
"""

from genesis_jax.interop.keras_h5 import read_keras_h5
from genesis_jax.interop.mapping import InteropError, UNetLayout
from genesis_jax.interop.nnunet import read_nnunet_checkpoint, write_nnunet
from genesis_jax.interop.published import load_published, published_format, read_published
from genesis_jax.interop.pytorch import read_pytorch, write_pytorch

__all__ = [
    "InteropError",
    "UNetLayout",
    "load_published",
    "published_format",
    "read_keras_h5",
    "read_published",
    "read_nnunet_checkpoint",
    "read_pytorch",
    "write_nnunet",
    "write_pytorch",
]
