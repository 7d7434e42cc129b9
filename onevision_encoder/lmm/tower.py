"""The encoder as the vision tower of a multimodal LLM: a chosen layer, 2x2 merging, token positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.modeling import OneVisionEncoderModel


@dataclass
class TowerFeatures:
    """One sample's tokens for a projector: ``features [N, D * merge**2]`` and ``positions_thw [N, 3]``."""

    features: torch.Tensor
    positions_thw: torch.Tensor


def vision_tower_features(
    model: OneVisionEncoderModel,
    samples: list[dict[str, torch.Tensor]],
    layer: int = -2,
    spatial_merge: int = 2,
) -> list[TowerFeatures]:
    """Features of ``hidden_states[layer]`` (the release's LLaVA integration uses -2) for each sample.

    Samples are those of :meth:`OneVisionEncoderModel.forward_packed` and run as one packed batch.
    With ``spatial_merge = m > 1`` each frame's ``m x m`` neighbouring tokens are concatenated into one
    (``D * m**2`` wide) and positioned at ``(t, h // m, w // m)`` of the block's first token. Merging
    needs a whole token grid: images, clips and mosaics, not gathered sparse patches.
    """
    if spatial_merge < 1:
        raise ValueError(f"spatial_merge must be >= 1, got {spatial_merge}")
    output = model.forward_packed(samples, output_hidden_states=True, output_pooler=False)
    count = len(output.hidden_states)
    if not -count <= layer < count:
        raise ValueError(f"layer {layer} is out of range: the model has {count} hidden states")
    states = output.split(output.hidden_states[layer])
    positions = output.split(output.positions_thw)
    results = []
    for number, (sample, tokens, where) in enumerate(zip(samples, states, positions, strict=True)):
        if spatial_merge == 1:
            results.append(TowerFeatures(tokens, where))
            continue
        pixels = sample["pixel_values"]
        frames = pixels.shape[1] if pixels.ndim == 4 else 1
        hp, wp = (side // model.config.patch_size for side in pixels.shape[-2:])
        m = spatial_merge
        if tokens.shape[0] != frames * hp * wp:
            raise ValueError(
                f"sample {number}: spatial merging needs whole frames, not {tokens.shape[0]} gathered patches"
            )
        if hp % m or wp % m:
            raise ValueError(f"sample {number}: a {hp}x{wp} patch grid does not split into {m}x{m} blocks")
        blocks = tokens.reshape(frames, hp // m, m, wp // m, m, -1).permute(0, 1, 3, 2, 4, 5)
        corner = where.reshape(frames, hp // m, m, wp // m, m, 3)[:, :, 0, :, 0]
        merged_positions = torch.stack((corner[..., 0], corner[..., 1] // m, corner[..., 2] // m), dim=-1)
        results.append(TowerFeatures(blocks.reshape(-1, m * m * tokens.shape[-1]), merged_positions.reshape(-1, 3)))
    return results
