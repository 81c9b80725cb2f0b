"""Ready-made targets on real models: CLIP prompts on a Hugging Face ``CLIPModel`` (random weights, tiny config),
explained per prompt."""

import pytest
import torch
from torch import nn

from lightning_rollout import explain
from lightning_rollout.targets import EmbeddingSimilarity

transformers = pytest.importorskip("transformers")

TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


class CLIPImageEmbedding(nn.Module):
    """A CLIP model's image tower as ``explain`` sees it: images in, ``get_image_features`` out (its
    ``pooler_output`` is the projected image embedding)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor):
        return self.clip.get_image_features(pixel_values=images)


def _clip():
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=50, max_position_embeddings=8, bos_token_id=0, eos_token_id=49, **TOWER),
        vision_config=dict(image_size=32, patch_size=8, **TOWER),
        projection_dim=16,
    )
    return transformers.CLIPModel(config).eval()


def test_clip_prompt_similarity_is_clips_own_logit_and_explains_per_prompt():
    clip = _clip()
    prompts = torch.tensor([[0, 5, 9, 12, 49], [0, 7, 3, 30, 49]])  # two token-id "prompts", pooled at their end
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        text = clip.get_text_features(input_ids=prompts).pooler_output  # (2, 16)
        image = clip.get_image_features(pixel_values=images).pooler_output  # (2, 16)
        logits_per_image = clip(input_ids=prompts, pixel_values=images).logits_per_image  # (2 images, 2 prompts)
    assert not torch.allclose(text[0], text[1])
    # The score is CLIP's own image-text logit without its temperature: image embedding . prompt embedding,
    # both normalised.
    for prompt in (0, 1):
        score = EmbeddingSimilarity(text, index=prompt)(image)
        assert torch.allclose(score, logits_per_image[:, prompt] / clip.logit_scale.exp(), atol=1e-5)

    tower = CLIPImageEmbedding(clip)
    options = dict(output_key="pooler_output")
    maps = {p: explain(tower, images, "chefer", target=EmbeddingSimilarity(text, p), **options) for p in (0, 1)}
    for value in maps.values():
        assert value.shape == (2, 4, 4) and bool((value >= 0).all()) and float(value.sum()) > 0
    assert not torch.allclose(maps[0], maps[1]), "each prompt gets its own map"
    # A per-sample prompt index explains each image against its own prompt, as the two runs above did.
    mixed = explain(tower, images, "chefer", target=EmbeddingSimilarity(text, index=[1, 0]), **options)
    assert torch.allclose(mixed[0], maps[1][0], atol=1e-6) and torch.allclose(mixed[1], maps[0][1], atol=1e-6)
