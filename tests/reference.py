"""An independent, deliberately plain reference: one image at a time, every layer's maps kept.

It follows the textbook recipes step by step (full relevance matrices, all gradients at once through
``torch.autograd.grad``) so that the batched, accumulate-as-you-go engine can be compared against it.
"""

import torch


def _attentions_and_grads(model, image, target, need_grads):
    captured = []
    handles = []
    flags = {m: m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)}
    for module in flags:
        module.fused_attn = False
    for name, module in model.named_modules():
        if name.endswith("attn_drop"):
            handles.append(module.register_forward_hook(lambda m, i, o: captured.append(o)))
    try:
        with torch.enable_grad():
            x = image[None].clone().requires_grad_(need_grads)
            logits = model(x)
            grads = None
            if need_grads:
                cls = int(logits.argmax()) if target is None else int(target)
                grads = torch.autograd.grad(logits[0, cls], captured)
    finally:
        for h in handles:
            h.remove()
        for module, flag in flags.items():
            module.fused_attn = flag
    return [a.detach()[0] for a in captured], None if grads is None else [g[0] for g in grads]


def _discard(fused, ratio):
    """vit-explain's count rule: the int(N² ratio) smallest of all N² entries, less entry [0, 0], are zeroed."""
    n = fused.shape[0]
    flat = fused.flatten().clone()
    smallest = torch.argsort(flat, stable=True).tolist()[: int(n * n * ratio)]
    for index in smallest:
        if index != 0:
            flat[index] = 0
    return flat.reshape(n, n)


def _normalised(fused):
    a = (fused + torch.eye(fused.shape[0])) / 2
    for row in range(a.shape[0]):
        a[row] = a[row] / a[row].sum()
    return a


def reference_map(model, image, method, geometry, head_fusion="mean", discard_ratio=0.9, target=None):
    """Map of one image, shape (grid_h, grid_w); ``geometry`` is (num_prefix_tokens, read-out, grid)."""
    prefix, readout, (gh, gw) = geometry
    need_grads = method != "rollout"
    attentions, grads = _attentions_and_grads(model, image, target, need_grads)
    n = attentions[0].shape[-1]
    relevance = torch.eye(n)
    for layer, attention in enumerate(attentions):
        if method == "rollout":
            fused = {"mean": attention.mean(0), "max": attention.max(0).values, "min": attention.min(0).values}[
                head_fusion
            ]
            relevance = _normalised(_discard(fused, discard_ratio)) @ relevance
        elif method == "grad_rollout":
            fused = torch.clamp((attention * grads[layer]).mean(0), min=0)
            relevance = _normalised(_discard(fused, discard_ratio)) @ relevance
        elif method == "chefer":
            fused = torch.clamp(grads[layer] * attention, min=0).mean(0)
            relevance = relevance + fused @ relevance
    row = read_out(relevance, prefix, readout)
    return row[prefix:].reshape(gh, gw)


def read_out(relevance, prefix, readout):
    """The token scores a head reads from R: "cls" (row 0), "cls_dist" (mean of rows 0 and 1), "pool"
    (mean of the patch rows with their diagonal entries zeroed)."""
    if readout == "cls":
        return relevance[0]
    if readout == "cls_dist":
        return (relevance[0] + relevance[1]) / 2
    assert readout == "pool", readout
    off_diagonal = relevance.clone()
    off_diagonal.fill_diagonal_(0)
    return off_diagonal[prefix:].mean(0)
