"""facevae: learn one actor's facial expressions with a VAE and let anyone's face drive them."""

__version__ = "0.1.0"
