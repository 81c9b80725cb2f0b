"""Model adapters: what the engine needs to know about a model, one small module per family.

`find_adapter` walks the registered adapters in order and returns the first that finds its family
inside the user's model (a LightningModule holding a timm, Hugging Face or torchvision model works as
is). A new family is one file: subclass `ModelAdapter`, then `register_adapter` it.

Example:
    ```python
    from lightning_rollout.models import ModelAdapter, register_adapter

    @register_adapter
    class MyViTAdapter(ModelAdapter):
        family = "my_vit"
        ...
    ```
"""

from lightning_rollout.core.deprecation import moved_names
from lightning_rollout.models.base import CaptureCallback, ModelAdapter, UnsupportedModelError
from lightning_rollout.models.readout import Readout, patch_mean_readout, token_readout
from lightning_rollout.models.registry import find_adapter, register_adapter, registered_adapters, unregister_adapter

__all__ = [
    "CaptureCallback",
    "ModelAdapter",
    "Readout",
    "UnsupportedModelError",
    "find_adapter",
    "patch_mean_readout",
    "register_adapter",
    "registered_adapters",
    "token_readout",
    "unregister_adapter",
]

# The built-in families, in the order they are tried; the generic ones come last (mha.py registers
# torchvision's ViT, then any nn.MultiheadAttention model).
# isort: off
from lightning_rollout.models import hf, timm_vit, timm_cait, timm_spatial, mha  # noqa: E402,F401  (self-registering)
# isort: on


# Renamed: it also receives Grad-CAM's activation, and "sinks" are where the pictures go.
__getattr__ = moved_names(__name__, {"AttentionSink": "lightning_rollout.models:CaptureCallback"})
