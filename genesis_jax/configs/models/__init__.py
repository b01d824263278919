"""Network configs: the Genesis U-Net and UNet++ at their published sizes (`genesis-jax summary`)."""
