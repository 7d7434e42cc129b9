"""Packed (varlen) and padded batches of mixed samples, and the LMM vision-tower helper."""

import itertools

import pytest
import torch
from conftest import tiny_config
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from onevision_encoder import OneVisionEncoderModel, TokenLayout, vision_tower_features
from onevision_encoder.model import modeling
from onevision_encoder.model.modeling import eager_attention_forward


def mixed_samples():
    g = torch.Generator().manual_seed(0)
    return [
        {"pixel_values": torch.randn(3, 28, 42, generator=g)},  # image, 6 tokens
        {"pixel_values": torch.randn(3, 56, 56, generator=g)},  # image, 16 tokens
        {"pixel_values": torch.randn(3, 4, 28, 28, generator=g), "visible_indices": torch.tensor([0, 3, 5, 9, 12])},
        {"pixel_values": torch.randn(3, 28, 42, generator=g)},  # same length as the first: one group
        {"pixel_values": torch.randn(3, 2, 28, 28, generator=g), "visible_indices": torch.arange(60, 68)},  # mosaic
        {"pixel_values": torch.randn(3, 2, 28, 28, generator=g), "patch_positions": torch.randint(0, 9, (8, 3))},
    ]


def alone(model, sample):
    extras = {k: v[None] for k, v in sample.items() if k != "pixel_values"}
    return model(sample["pixel_values"][None], output_hidden_states=True, **extras)


def make_model(backend, use_head):
    torch.manual_seed(0)
    model = OneVisionEncoderModel(tiny_config(use_head=use_head)).eval()
    model.config._attn_implementation = backend
    return model


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("use_head", [True, False])
def test_one_call_equals_each_sample_alone(padded, backend, use_head):
    model = make_model(backend, use_head)
    samples = mixed_samples()
    with torch.no_grad():
        expected = [alone(model, s) for s in samples]
        out = model.forward_packed(samples, padded=padded, output_hidden_states=True)
    lengths = [6, 16, 5, 6, 8, 8]
    assert out.cu_seqlens.tolist() == [0, 6, 22, 27, 33, 41, 49]
    if not padded:
        assert out.last_hidden_state.shape == (sum(lengths), 128) and out.attention_mask is None
    else:
        assert out.last_hidden_state.shape == (6, 16, 128) and out.attention_mask.sum(1).tolist() == lengths
    for got, want in zip(out.split(), expected, strict=True):
        torch.testing.assert_close(got, want.last_hidden_state[0], atol=1e-5, rtol=0)
    for got, want in zip(out.split(out.hidden_states[-2]), expected, strict=True):
        torch.testing.assert_close(got, want.hidden_states[-2][0], atol=1e-5, rtol=0)
    if use_head:  # each sample pooled over its own tokens only
        torch.testing.assert_close(out.pooler_output, torch.cat([e.pooler_output for e in expected]), atol=1e-5, rtol=0)
    else:
        assert out.pooler_output is None


def test_packed_flash_attention_gets_one_row_cut_by_cu_seqlens(monkeypatch):
    """flash-attn runs on CUDA only: a stand-in registered under its name in transformers' attention functions
    (each segment attended alone, with eager) checks what the packed path hands transformers' varlen call."""
    calls = []

    def varlen_stand_in(module, query, key, value, attention_mask, dropout, scaling, is_causal, **varlen):
        calls.append({**varlen, "shape": tuple(query.shape), "mask": attention_mask, "is_causal": is_causal})
        bounds = varlen["cu_seq_lens_q"].tolist()
        pieces = [
            eager_attention_forward(module, *(t[:, :, a:b] for t in (query, key, value)), None, scaling)[0]
            for a, b in itertools.pairwise(bounds)
        ]
        return torch.cat(pieces, dim=1), None

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "flash_attention_2", varlen_stand_in)
    monkeypatch.setattr(modeling, "check_attention_backend", lambda name, *device_and_dtype: name)
    samples = mixed_samples()
    with torch.no_grad():
        expected = make_model("eager", True).forward_packed(samples)
        out = make_model("flash_attention_2", True).forward_packed(samples)
    assert len(calls) == 2  # one call per block over all 49 tokens, no per-length groups
    for call in calls:
        assert call["shape"] == (1, 2, 49, 64) and call["mask"] is None and call["is_causal"] is False
        assert call["cu_seq_lens_q"].tolist() == call["cu_seq_lens_k"].tolist() == [0, 6, 22, 27, 33, 41, 49]
        assert call["cu_seq_lens_q"].dtype == torch.int32
        assert call["max_length_q"] == call["max_length_k"] == 16
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, expected.pooler_output, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="takes packed sequences, not padded ones"):
        make_model("flash_attention_2", True).forward_packed(samples, padded=True)


def test_gradients_flow_through_the_packed_path():
    model = make_model("sdpa", True).train()
    samples = mixed_samples()[:3]
    model.forward_packed(samples).pooler_output.square().sum().backward()
    packed = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    sum(alone(model, s).pooler_output.square().sum() for s in samples).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(packed[name], parameter.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert packed["embeddings.patch_embedding.weight"].abs().sum() > 0


def test_bad_segments_and_samples_are_refused():
    with pytest.raises(ValueError, match="start at 0 and end at the 10 packed tokens"):
        TokenLayout.from_cu_seqlens(torch.tensor([0, 4, 9]), total=10)
    with pytest.raises(ValueError, match="strictly increasing"):
        TokenLayout.from_cu_seqlens(torch.tensor([0, 4, 4, 10]), total=10)
    with pytest.raises(ValueError, match="at least 2 entries"):
        TokenLayout.from_cu_seqlens(torch.tensor([0]), total=0)
    with pytest.raises(ValueError, match="positive integer"):
        TokenLayout.from_lengths([3, 0])
    assert TokenLayout.from_cu_seqlens(torch.tensor([0, 4, 10]), total=10).lengths == [4, 6]
    model = make_model("sdpa", True)
    with pytest.raises(ValueError, match="at least one sample"):
        model.forward_packed([])
    with pytest.raises(ValueError, match=r"sample 1: pixel_values must be \[C, H, W\] or \[C, T, H, W\]"):
        model.forward_packed([{"pixel_values": torch.randn(3, 28, 28)}, {"pixel_values": torch.randn(1, 3, 2, 28, 28)}])
    with pytest.raises(ValueError, match="sample 1: pixel_values has 1 channels"):
        model.forward_packed([{"pixel_values": torch.randn(3, 28, 28)}, {"pixel_values": torch.randn(1, 3, 28, 28)}])
    with pytest.raises(ValueError, match="sample 0: visible_indices contains index 9, out of range for 4 patches"):
        model.forward_packed([{"pixel_values": torch.randn(3, 28, 28), "visible_indices": torch.tensor([0, 9])}])
    with pytest.raises(ValueError, match="sample 0: visible_indices must have 1 dimension"):
        model.forward_packed([{"pixel_values": torch.randn(3, 28, 28), "visible_indices": torch.zeros(1, 2).long()}])
    with pytest.raises(ValueError, match="must be a dict with 'pixel_values'"):
        model.forward_packed([torch.randn(3, 28, 28)])


def test_vision_tower_layer_merge_and_positions():
    model = make_model("sdpa", True)
    image = {"pixel_values": torch.randn(3, 56, 84)}  # 4 x 6 patches
    clip = {"pixel_values": torch.randn(3, 2, 28, 28), "visible_indices": torch.arange(8) + 4 * 9}  # frames 9, 10
    with torch.no_grad():
        tower = vision_tower_features(model, [image, clip], layer=-2, spatial_merge=2)
        plain = vision_tower_features(model, [image], layer=-2, spatial_merge=1)[0]
        reference = alone(model, image).hidden_states[-2][0]
    torch.testing.assert_close(plain.features, reference, atol=1e-5, rtol=0)
    assert tower[0].features.shape == (6, 4 * 128) and tower[1].features.shape == (2, 4 * 128)
    # the first merged token concatenates patches (0,0), (0,1), (1,0), (1,1) of the 4x6 grid
    grid = reference.reshape(4, 6, 128)
    torch.testing.assert_close(tower[0].features[0], torch.cat([grid[0, 0], grid[0, 1], grid[1, 0], grid[1, 1]]))
    assert tower[0].positions_thw.tolist() == [[0, h, w] for h in range(2) for w in range(3)]
    assert tower[1].positions_thw.tolist() == [[9, 0, 0], [10, 0, 0]]
    sparse = {"pixel_values": torch.randn(3, 2, 28, 28), "visible_indices": torch.tensor([0, 2, 5])}
    with pytest.raises(ValueError, match="needs whole frames"):
        vision_tower_features(model, [sparse])
    with pytest.raises(ValueError, match="does not split into 2x2 blocks"):
        vision_tower_features(model, [{"pixel_values": torch.randn(3, 42, 28)}])


def test_encoder_blocks_compile_without_graph_breaks():
    model = make_model("sdpa", True)
    layer = model.encoder.layers[0]
    compiled = torch.compile(layer, fullgraph=True, backend="eager")  # fullgraph: a graph break is an error
    x, cos, sin = torch.randn(2, 16, 128), torch.randn(2, 16, 64), torch.randn(2, 16, 64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, cos, sin)[0], layer(x, cos, sin)[0])
