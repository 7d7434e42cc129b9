"""Inputs the model cannot use are refused with errors naming the argument, the shape expected and got."""

import pytest
import torch

from onevision_encoder import vision_tower_features

IMAGE = torch.randn(3, 28, 28)  # a 2x2 patch grid of the tiny model (patch size 14)
PROCESSOR = r"OneVisionEncoderImageProcessor"

FORWARD = [
    ("empty batch", dict(pixel_values=torch.randn(0, 3, 28, 28)), ValueError, r"holds no sample \(shape \(0, 3, 28"),
    ("empty clip batch", dict(pixel_values=torch.randn(0, 3, 2, 28, 28)), ValueError, "holds no sample"),
    (
        "empty batch with indices",
        dict(pixel_values=torch.randn(0, 3, 2, 28, 28), visible_indices=torch.tensor([0, 1])),
        ValueError,
        "holds no sample",
    ),
    ("uint8 pixels", dict(pixel_values=torch.zeros(1, 3, 28, 28, dtype=torch.uint8)), TypeError, PROCESSOR),
    ("int64 pixels", dict(pixel_values=torch.zeros(1, 3, 28, 28, dtype=torch.int64)), TypeError, r"dtype torch\.int64"),
    ("bool pixels", dict(pixel_values=torch.zeros(1, 3, 28, 28, dtype=torch.bool)), TypeError, PROCESSOR),
    ("size", dict(pixel_values=torch.randn(1, 3, 30, 28)), ValueError, r"pixel_values has height x width 30x28"),
    (
        "0-d indices",
        dict(pixel_values=torch.randn(1, 3, 28, 28), visible_indices=torch.tensor(3)),
        ValueError,
        r"visible_indices must have shape \[N\] or \[B, N\], got \(\)",
    ),
]


@pytest.mark.parametrize(("label", "inputs", "kind", "message"), FORWARD, ids=[case[0] for case in FORWARD])
def test_forward_refuses(tiny_model, label, inputs, kind, message):
    with pytest.raises(kind, match=message):
        tiny_model(**inputs)


PACKED = [
    ("not a list", torch.randn(2, 3, 28, 28), TypeError, "samples must be a list of dicts .* got Tensor"),
    (
        "uint8 pixels",
        [{"pixel_values": IMAGE}, {"pixel_values": torch.zeros(3, 28, 28, dtype=torch.uint8)}],
        TypeError,
        rf"sample 1: pixel_values has dtype torch\.uint8.*{PROCESSOR}",
    ),
    (
        "channels",
        [{"pixel_values": torch.randn(28, 28, 3)}],
        ValueError,
        r"sample 0: pixel_values has 28 channels in dimension 0, the model expects 3",
    ),
    ("size", [{"pixel_values": torch.randn(3, 28, 30)}], ValueError, "sample 0: pixel_values has height x width 28x30"),
    ("no frames", [{"pixel_values": torch.randn(3, 0, 28, 28)}], ValueError, "sample 0: pixel_values has no frames"),
    (
        "index out of range",
        [{"pixel_values": IMAGE}, {"pixel_values": IMAGE, "visible_indices": torch.tensor([0, 9])}],
        ValueError,
        "sample 1: visible_indices contains index 9, out of range for 4 patches",
    ),
    (
        "float indices",
        [{"pixel_values": IMAGE, "visible_indices": torch.tensor([0.0, 1.0])}],
        ValueError,
        r"sample 0: visible_indices must hold integers, got dtype torch\.float32",
    ),
    (
        "indices rank",
        [{"pixel_values": IMAGE, "visible_indices": torch.tensor([[0, 1]])}],
        ValueError,
        r"sample 0: visible_indices must have 1 dimension\(s\), got \(1, 2\)",
    ),
    (
        "positions shape",
        [{"pixel_values": IMAGE, "patch_positions": torch.zeros(4, 2)}],
        ValueError,
        r"sample 0: patch_positions must have shape \[B=1, N=4, 3\].*got \(1, 4, 2\)",
    ),
]


@pytest.mark.parametrize(("label", "samples", "kind", "message"), PACKED, ids=[case[0] for case in PACKED])
def test_forward_packed_refuses(tiny_model, label, samples, kind, message):
    with pytest.raises(kind, match=message):
        tiny_model.forward_packed(samples)


def test_vision_tower_refuses_raw_pixels(tiny_model):
    with pytest.raises(TypeError, match=rf"sample 0: .*{PROCESSOR}"):
        vision_tower_features(tiny_model, [{"pixel_values": torch.zeros(3, 28, 28, dtype=torch.uint8)}])
