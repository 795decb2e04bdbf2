"""segment-anything's mask decoder for one image and many prompts, with the prompt-free work done once.

Evolution runs the mask decoder tens of times per image: the image embedding stays, the prompt moves. Part of
``MaskDecoder.predict_masks`` does not depend on the prompt, and part of it is laid out for clarity, not speed. This
module computes the same function from the same modules' weights, with four changes that leave the result equal to
float rounding (tests/models/test_decoder.py compares masks, IoU predictions and gradients with the original):

1. :func:`image_side` runs once per image: the embedding plus the no-mask embedding (what the prompt encoder adds
   when no mask is given), and the first layer's image-side projections (the keys and values of the tokens-to-image
   attention, the queries of the image-to-tokens attention). They are computed outside any autograd graph.
2. :func:`decode` broadcasts the image side over the B prompts instead of copying it B times
   (``repeat_interleave``), and computes each layer's ``keys + pe`` once instead of twice.
3. In the attentions between the few tokens (T = 7 for a click) and the N = 4096 image tokens, the projections of
   the image side move to the token side (:func:`_tokens_to_image`, :func:`_image_to_tokens`): a product with a
   projected image token is a product of the image token with a back-projected token. The work per attention
   falls from 2 x N x C x C/2 multiply-adds (projecting every image token to the attention's C/2 channels) to
   2 x heads x T x N x C (268 M to 117 M for SAM's decoder: C = 256, 8 heads, T = 7).
4. The two 2 x 2 stride-2 transposed convolutions of the upscaling are matrix products in channels-last layout
   (each input pixel writes its own 2 x 2 block, so no im2col is needed); the per-pixel ``LayerNorm2d`` is then
   ``F.layer_norm`` over the last dimension; and the masks are read from the upscaled features before they are
   interleaved into pixels, so only the K small masks are permuted, not the 32-channel feature map.

Shapes: C the transformer's width, h x w the embedding's grid (64 x 64), N = h * w image tokens, T the tokens (the
IoU token, K mask tokens and the prompt's sparse embeddings), masks at 4h x 4w (SAM's 256 x 256 low-res masks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ImageSide:
    """What the decoder needs of one image, whatever the prompt.

    keys: 1 x N x C (embedding + no-mask embedding, as tokens); key_pe: 1 x N x C (the dense positional encoding);
    first_k, first_v: 1 x heads x N x d (layer 0's tokens-to-image keys and values); first_q: 1 x heads x N x d
    (layer 0's image-to-tokens queries); grid: (h, w).
    """

    keys: Tensor
    key_pe: Tensor
    first_k: Tensor
    first_v: Tensor
    first_q: Tensor
    grid: tuple[int, int]


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """B x T x (heads * d) -> B x heads x T x d (segment-anything's ``Attention._separate_heads``)."""
    b, t, c = x.shape
    return x.reshape(b, t, num_heads, c // num_heads).transpose(1, 2)


def _project(linear: nn.Linear, x: Tensor, num_heads: int) -> Tensor:
    """B x T x C -> B x heads x T x d: a projection, split into heads."""
    return _heads(linear(x), num_heads)


def _attend(attention: nn.Module, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """segment-anything's ``Attention.forward`` after the projections: q B x heads x Tq x d, k and v
    B x heads x Tk x d (a batch of 1 broadcasts) -> B x Tq x C."""
    scores = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)
    out = scores @ v
    b, heads, t, d = out.shape
    return attention.out_proj(out.transpose(1, 2).reshape(b, t, heads * d))


def _per_head(linear: nn.Linear, num_heads: int) -> Tensor:
    """A projection's weight (heads * d) x C as heads x d x C."""
    return linear.weight.reshape(num_heads, -1, linear.weight.shape[-1])


def _tokens_to_image(attention: nn.Module, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """``attention(q=queries, k=keys, v=values)`` for T tokens attending to N image tokens: queries B x T x C,
    keys and values B x N x C -> B x T x C.

    With T << N, the key and value projections move to the token side: ``q . (W_k x + b_k) = (W_k^T q) . x + q . b_k``,
    where the last term is the same for every image token and so cancels in the softmax, and
    ``softmax . (W_v x + b_v) = W_v (softmax . x) + b_v``. That is 2 x heads x T x N x C multiply-adds instead of
    2 x N x C x (C / downsample) for projecting every image token.
    """
    heads = attention.num_heads
    q = _project(attention.q_proj, queries, heads)  # B x heads x T x d
    b, _, t, d = q.shape
    c = keys.shape[-1]
    q_in_image_space = (q @ _per_head(attention.k_proj, heads)).reshape(b, heads * t, c)
    scores = (q_in_image_space @ keys.transpose(1, 2)).reshape(b, heads, t, -1)
    weights = torch.softmax(scores / math.sqrt(d), dim=-1)
    mixed = (weights.reshape(b, heads * t, -1) @ values).reshape(b, heads, t, c)  # B x heads x T x C
    out = mixed @ _per_head(attention.v_proj, heads).transpose(1, 2) + attention.v_proj.bias.reshape(heads, 1, d)
    return attention.out_proj(out.transpose(1, 2).reshape(b, t, heads * d))


def _image_to_tokens(attention: nn.Module, image_q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """``attention(q=image, k=keys, v=values)`` for N image tokens attending to T tokens, given the image's
    projected queries ``image_q`` (B x heads x N x d) or, to project them the cheap way, the image tokens
    (B x N x C); keys and values B x T x C -> B x N x C.

    With T << N, the query and output projections move to the token side: ``(W_q x + b_q) . k = x . (W_q^T k) +
    b_q . k`` and ``W_o [softmax_h v_h] = sum_h softmax_h (v_h W_o,h^T)``.
    """
    heads = attention.num_heads
    k = _project(attention.k_proj, keys, heads)  # B x heads x T x d
    v = _project(attention.v_proj, values, heads)
    b, _, t, d = k.shape
    if image_q.ndim == 4:  # already projected (the first layer's cached queries)
        scores = (image_q @ k.transpose(-1, -2)).permute(0, 2, 1, 3)  # B x N x heads x T
    else:
        c = image_q.shape[-1]
        k_in_image_space = (k @ _per_head(attention.q_proj, heads)).reshape(b, heads * t, c)
        bias = (k @ attention.q_proj.bias.reshape(heads, d, 1)).reshape(b, 1, heads * t)
        scores = (image_q @ k_in_image_space.transpose(1, 2) + bias).reshape(b, -1, heads, t)
    weights = torch.softmax(scores / math.sqrt(d), dim=-1).reshape(b, -1, heads * t)  # B x N x (heads T)
    out_weight = attention.out_proj.weight  # C x (heads d)
    values_out = v @ out_weight.reshape(-1, heads, d).permute(1, 2, 0)  # B x heads x T x C
    return weights @ values_out.reshape(b, heads * t, -1) + attention.out_proj.bias


@torch.no_grad()
def image_side(mask_decoder: nn.Module, no_mask_embed: Tensor, features: Tensor, image_pe: Tensor) -> ImageSide:
    """The prompt-free part of the decoder for one image.

    no_mask_embed: C (``prompt_encoder.no_mask_embed.weight[0]``); features: 1 x C x h x w (the image encoder's
    output); image_pe: 1 x C x h x w (``prompt_encoder.get_dense_pe()``).
    """
    if features.shape[0] != 1:
        raise ValueError(f"image_side takes one image's features (1 x C x h x w), got {tuple(features.shape)}")
    h, w = features.shape[-2:]
    keys = (features + no_mask_embed.reshape(1, -1, 1, 1)).flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    first = mask_decoder.transformer.layers[0]
    to_image, to_tokens = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    with_pe = keys + key_pe
    return ImageSide(
        keys=keys.contiguous(),
        key_pe=key_pe.contiguous(),
        first_k=_project(to_image.k_proj, with_pe, to_image.num_heads).contiguous(),
        first_v=_project(to_image.v_proj, keys, to_image.num_heads).contiguous(),
        first_q=_project(to_tokens.q_proj, with_pe, to_tokens.num_heads).contiguous(),
        grid=(int(h), int(w)),
    )


def _upscale2x(x: Tensor, conv: nn.ConvTranspose2d) -> Tensor:
    """A 2 x 2, stride-2 transposed convolution in channels-last layout: ... x Cin -> ... x 2 x 2 x Cout (the
    output pixel (2i + a, 2j + b) of input pixel (i, j) at index [..., a, b, :])."""
    weight = conv.weight  # Cin x Cout x 2 x 2
    c_in, c_out = weight.shape[:2]
    bias = conv.bias.repeat(4) if conv.bias is not None else None  # added inside the matrix product
    return F.linear(x, weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in), bias).unflatten(-1, (2, 2, c_out))


def decode(
    mask_decoder: nn.Module, side: ImageSide, sparse: Tensor, pick: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """``mask_decoder.predict_masks`` for B prompts of one image: sparse B x S x C (the prompt encoder's sparse
    embeddings) -> (masks B x K x 4h x 4w, IoU predictions B x K), every mask token's output (slice them as
    ``MaskDecoder.forward`` does). Differentiable with respect to ``sparse``.

    ``pick``: IoU predictions B x K -> B indices of the mask token to keep. The masks are then B x 1 x 4h x 4w, the
    picked ones: the IoU head runs before the upscaling, so only the kept masks are read from the upscaled features
    (a quarter of the contraction and of its gradient with SAM's four mask tokens).
    """
    transformer = mask_decoder.transformer
    b = sparse.shape[0]
    output_tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
    queries, keys, query_pe, key_pe = tokens, side.keys, tokens, side.key_pe
    for index, layer in enumerate(transformer.layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)

        to_image, to_tokens = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        if index == 0:  # the image side is the cached one: its projections are already done
            q = _project(to_image.q_proj, queries + query_pe, to_image.num_heads)
            attn_out = _attend(to_image, q, side.first_k, side.first_v)
            image_q = side.first_q
        else:
            with_pe = keys + key_pe
            attn_out = _tokens_to_image(to_image, queries + query_pe, with_pe, keys)
            image_q = with_pe
        queries = layer.norm2(queries + attn_out)
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + _image_to_tokens(to_tokens, image_q, queries + query_pe, queries))

    attn_out = _tokens_to_image(transformer.final_attn_token_to_image, queries + query_pe, keys + key_pe, keys)
    queries = transformer.norm_final_attn(queries + attn_out)

    iou = mask_decoder.iou_prediction_head(queries[:, 0, :])
    hyper = torch.stack(
        [mlp(queries[:, 1 + i, :]) for i, mlp in enumerate(mask_decoder.output_hypernetworks_mlps)], dim=1
    )  # B x K x C/8
    if pick is not None:
        hyper = hyper[torch.arange(b, device=hyper.device), pick(iou)][:, None]  # B x 1 x C/8
    num_masks = hyper.shape[1]

    conv1, norm, act1, conv2, act2 = mask_decoder.output_upscaling
    h, w = side.grid
    x = keys.reshape(keys.shape[0], h, w, keys.shape[-1])  # channels last: B x h x w x C
    x = act1(F.layer_norm(_upscale2x(x, conv1), (conv1.out_channels,), norm.weight, norm.bias, norm.eps))
    x = act2(_upscale2x(x, conv2))  # B x h x w x 2 x 2 x 2 x 2 x C/8
    # mask[k, 4i + 2a + p, 4j + 2c + q] = hyper[k] . x[i, j, a, c, p, q]: contract channels first, then interleave
    masks = (x.reshape(b, -1, x.shape[-1]) @ hyper.transpose(1, 2)).reshape(b, h, w, 2, 2, 2, 2, num_masks)
    masks = masks.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, num_masks, 4 * h, 4 * w)
    return masks, iou
