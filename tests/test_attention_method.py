"""Method ``"attention"`` and ``attention_per_head``: the last layer's attention read out, checked by hand."""

import pytest
import torch
from call_counts import Counts
from model_zoo import FAMILIES, tiny_vit

from lightning_rollout import attention_per_head, explain, explain_many
from lightning_rollout.methods import attention_per_head_scores, attention_scores
from lightning_rollout.models.readout import Readout, token_readout

# Two heads over N = 3 tokens (a class token and two patches); rows sum to 1.
HEADS = torch.tensor(
    [
        [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]],
        [[0.1, 0.1, 0.8], [0.4, 0.4, 0.2], [0.3, 0.5, 0.2]],
    ]
).unsqueeze(0)


def test_class_token_row_by_hand():
    readout = token_readout(3)
    per_head = attention_per_head_scores(HEADS, readout)
    torch.testing.assert_close(per_head, torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]]))
    torch.testing.assert_close(attention_scores(HEADS, readout, "mean"), torch.tensor([[0.3, 0.2, 0.5]]))
    torch.testing.assert_close(attention_scores(HEADS, readout, "max"), torch.tensor([[0.5, 0.3, 0.8]]))
    torch.testing.assert_close(attention_scores(HEADS, readout, "min"), torch.tensor([[0.1, 0.1, 0.2]]))


def test_pooled_patch_rows_without_their_self_attention_by_hand():
    # An average-pooling head over the two patches: mean of rows 1 and 2, each without its diagonal entry.
    readout = Readout(pooled=torch.tensor([0.0, 0.5, 0.5]))
    per_head = attention_per_head_scores(HEADS, readout)
    expected = torch.tensor([[[(0.1 + 0.2) / 2, 0.2 / 2, 0.3 / 2], [(0.4 + 0.3) / 2, 0.5 / 2, 0.2 / 2]]])
    torch.testing.assert_close(per_head, expected)
    torch.testing.assert_close(attention_scores(HEADS, readout, "mean"), expected.mean(dim=1))


def _last_attention(model, images):
    """The last block's post-softmax attention of a timm ViT, computed from its own weights."""
    captured = []
    block = model.blocks[-1]
    handle = block.attn.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    with torch.no_grad():
        model(images)
    handle.remove()
    x = captured[0]
    attn = block.attn
    batch, num_tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, num_tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def test_timm_class_token_maps_are_the_last_layer_s_class_row(vit, images):
    attention = _last_attention(vit, images)
    expected_heads = attention[:, :, 0, 1:].reshape(3, 2, 4, 4)
    torch.testing.assert_close(attention_per_head(vit, images), expected_heads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explain(vit, images, "attention"), expected_heads.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        explain(vit, images, "attention", head_fusion="max"), expected_heads.amax(1), rtol=1e-5, atol=1e-6
    )


def test_timm_avg_pool_maps_average_the_patch_rows(images):
    model = tiny_vit(global_pool="avg")
    attention = _last_attention(model, images).mean(dim=1)[:, 1:]  # patch rows (B, 16, 17)
    eye = torch.eye(17)[1:].bool()
    expected = attention.masked_fill(eye, 0).mean(dim=1)[:, 1:].reshape(3, 4, 4)
    torch.testing.assert_close(explain(model, images, "attention"), expected, rtol=1e-5, atol=1e-6)


def test_forward_only_and_class_agnostic(vit, images, monkeypatch):
    counts = Counts(vit, monkeypatch)
    maps = explain_many(vit, images, ["attention", "rollout"])
    assert (counts.forwards, counts.backwards) == (1, 0)
    torch.testing.assert_close(explain(vit, images, "attention", target=3), maps["attention"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_rollout_family_serves_it(family, images):
    build, options = FAMILIES[family]
    model = build()
    heads = attention_per_head(model, images, **options)
    assert heads.shape == (3, 2, 4, 4) and bool((heads >= 0).all())
    assert bool((heads.sum(dim=(2, 3)) <= 1 + 1e-5).all())  # a share of one softmax row per head
    torch.testing.assert_close(explain(model, images, "attention", **options), heads.mean(dim=1))


def test_cait_reads_the_last_class_attention_row(images):
    model = tiny_vit(model_name="cait_xxs24_224", depth=2, depth_token_only=1)
    captured = []
    handle = model.blocks_token_only[-1].attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        heads = attention_per_head(model, images)
    finally:
        handle.remove()
    torch.testing.assert_close(heads, captured[0][:, :, 0, 1:].reshape(3, 2, 4, 4))
