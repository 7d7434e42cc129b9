"""Forward-pass behaviour beyond the golden cases: backends, dtypes, paths, long clips, errors."""

import copy
import logging

import pytest
import torch
import transformers.modeling_utils
from conftest import tiny_config
from safetensors.torch import load_file
from torch.utils.checkpoint import checkpoint as torch_checkpoint
from transformers import AutoModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.logging import warning_once

from onevision_encoder import (
    OneVisionEncoderConfig,
    OneVisionEncoderModel,
    chunk_visible_indices,
    frame_positions,
    mosaic,
)
from onevision_encoder.model.modeling import check_attention_backend


def clip(batch=1, frames=4, size=56, seed=0):
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def random_sparse_indices(batch, total, count, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(total, generator=g)[:count].sort().values for _ in range(batch)])


def run(model, *args, **kwargs):
    with torch.no_grad():
        return model(*args, **kwargs)


def assert_differs(a, b):
    """Positions change the output by far more than float32 noise (random-init weights are small)."""
    assert (a - b).abs().max() > 1e-4


def with_backend(model, name):
    model.config._attn_implementation = name
    return model


def test_sdpa_and_eager_agree():
    torch.manual_seed(0)
    model = OneVisionEncoderModel(tiny_config()).eval()
    x = clip(batch=2, frames=3, size=70)
    eager = run(with_backend(model, "eager"), x, output_hidden_states=True)
    sdpa = run(with_backend(model, "sdpa"), x, output_hidden_states=True)
    torch.testing.assert_close(sdpa.last_hidden_state, eager.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(sdpa.pooler_output, eager.pooler_output, atol=1e-5, rtol=0)


def test_default_backend_is_sdpa(parity_dir):
    assert OneVisionEncoderModel.from_pretrained(parity_dir / "tiny").config._attn_implementation == "sdpa"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
def test_half_precision_loads_runs_and_stays_close(parity_dir, dtype, key):
    reference = OneVisionEncoderModel.from_pretrained(parity_dir / "tiny").eval()
    half = OneVisionEncoderModel.from_pretrained(parity_dir / "tiny", **{key: dtype}).eval()
    assert all(p.dtype == dtype for p in half.parameters())
    x = clip(batch=2, frames=2)
    expected = run(reference, x)
    got = run(half, x)
    assert got.last_hidden_state.dtype == dtype
    for a, b in ((got.last_hidden_state, expected.last_hidden_state), (got.pooler_output, expected.pooler_output)):
        assert torch.isfinite(a).all()
        cosine = torch.nn.functional.cosine_similarity(a.float().flatten(1), b.flatten(1))
        assert cosine.min() > 0.99
        assert (a.float() - b).abs().max() < 0.15


def test_gather_path_equals_mosaic_path(tiny_model):
    x = clip(batch=2, frames=16)
    per_frame = 16  # 56x56 at patch 14
    indices = random_sparse_indices(2, 16 * per_frame, 3 * per_frame, seed=1)
    gathered = run(tiny_model, x, visible_indices=indices, output_hidden_states=True)
    tiles, sorted_indices = mosaic(x, indices, 14)
    assert tiles.shape == (2, 3, 3, 56, 56)
    from_mosaic = run(tiny_model, tiles, visible_indices=sorted_indices, output_hidden_states=True)
    torch.testing.assert_close(from_mosaic.last_hidden_state, gathered.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_mosaic.pooler_output, gathered.pooler_output, atol=1e-5, rtol=0)
    # The indices really move the patches: the same mosaic without them is a different input.
    plain = run(tiny_model, tiles)
    assert_differs(plain.last_hidden_state, gathered.last_hidden_state)


def test_chunk_indices_place_frames_on_the_virtual_grid(tiny_model):
    x = clip(frames=8)
    on_grid = run(tiny_model, x, visible_indices=chunk_visible_indices(frame_positions(8), (4, 4)))
    t = frame_positions(8).repeat_interleave(16)
    h = torch.arange(4).repeat_interleave(4).repeat(8)
    w = torch.arange(4).repeat(32)
    explicit = run(tiny_model, x, patch_positions=torch.stack((t, h, w), -1)[None])
    torch.testing.assert_close(on_grid.last_hidden_state, explicit.last_hidden_state, atol=1e-6, rtol=0)
    contiguous = run(tiny_model, x)
    assert_differs(contiguous.last_hidden_state, on_grid.last_hidden_state)


def test_clip_longer_than_the_grid_continues_positions(tiny_model):
    frames = 66
    x = clip(frames=frames, size=28)
    out = run(tiny_model, x)
    assert out.last_hidden_state.shape == (1, frames * 4, 128)
    t = torch.arange(frames).repeat_interleave(4)
    hw = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]).repeat(frames, 1)
    explicit = run(tiny_model, x, patch_positions=torch.cat((t[:, None], hw), -1)[None])
    torch.testing.assert_close(out.last_hidden_state, explicit.last_hidden_state, atol=1e-6, rtol=0)


def test_native_resolution_images_of_any_patch_multiple(tiny_model):
    for height, width in [(14, 14), (28, 98), (154, 42)]:
        out = run(tiny_model, torch.randn(1, 3, height, width))
        assert out.last_hidden_state.shape == (1, height // 14 * width // 14, 128)
        assert out.pooler_output.shape == (1, 128)


def test_hidden_states_are_taken_before_the_post_norm(tiny_model):
    out = run(tiny_model, torch.randn(1, 3, 28, 28), output_hidden_states=True)
    assert len(out.hidden_states) == 3
    torch.testing.assert_close(tiny_model.layernorm_post(out.hidden_states[-1]), out.last_hidden_state)


def test_output_attentions_with_eager():
    torch.manual_seed(0)
    model = with_backend(OneVisionEncoderModel(tiny_config()).eval(), "eager")
    out = run(model, torch.randn(2, 3, 28, 42), output_attentions=True)
    assert len(out.attentions) == 2
    assert out.attentions[0].shape == (2, 2, 6, 6)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 2, 6))


def test_output_attentions_under_sdpa_computes_that_call_with_eager_and_warns_once(tiny_model, caplog):
    x = torch.randn(2, 3, 28, 42)
    eager = run(with_backend(copy.deepcopy(tiny_model), "eager"), x, output_attentions=True)
    warning_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="onevision_encoder"):
        first = run(tiny_model, x, output_attentions=True)
        second = run(tiny_model, x, output_attentions=True)
    warnings = [r.getMessage() for r in caplog.records if "output_attentions=True" in r.getMessage()]
    assert len(warnings) == 1 and "sdpa attention backend does not return attention weights" in warnings[0]
    assert "computed with eager" in warnings[0] and "set_attn_implementation('eager')" in warnings[0]
    assert tiny_model.config._attn_implementation == "sdpa"  # the backend itself is unchanged
    for got in (first, second):
        assert len(got.attentions) == 2
        for weights, expected in zip(got.attentions, eager.attentions, strict=True):
            torch.testing.assert_close(weights, expected)
        torch.testing.assert_close(got.last_hidden_state, run(tiny_model, x).last_hidden_state, atol=1e-5, rtol=0)


def test_set_attn_implementation_switches_the_backend_both_ways(tiny_model, monkeypatch):
    calls = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", counting_sdpa)  # the blocks look it up at every call
    x = torch.randn(2, 3, 28, 42)
    expected = run(tiny_model, x).last_hidden_state
    assert len(calls) == 2  # one per block
    tiny_model.set_attn_implementation("eager")
    assert tiny_model.config._attn_implementation == "eager"
    eager = run(tiny_model, x, output_attentions=True)
    assert len(calls) == 2 and all(w is not None for w in eager.attentions)
    torch.testing.assert_close(eager.last_hidden_state, expected, atol=1e-5, rtol=0)
    tiny_model.set_attn_implementation("sdpa")
    assert tiny_model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(run(tiny_model, x).last_hidden_state, expected)
    assert len(calls) == 4


@pytest.mark.parametrize("name", ["flex_attention", "paged|eager", "foo"])
def test_set_attn_implementation_refuses_what_cannot_run_this_model(tiny_model, name):
    with pytest.raises(ValueError, match="not support"):
        tiny_model.set_attn_implementation(name)
    assert tiny_model.config._attn_implementation == "sdpa"


def test_return_dict_false_gives_a_tuple(tiny_model):
    out = run(tiny_model, torch.randn(1, 3, 28, 28), return_dict=False, output_hidden_states=True)
    assert isinstance(out, tuple) and len(out) == 3
    assert out[0].shape == (1, 4, 128) and out[1].shape == (1, 128) and len(out[2]) == 3


def test_model_without_head():
    model = OneVisionEncoderModel(tiny_config(use_head=False)).eval()
    assert not hasattr(model, "head") and not hasattr(model, "layernorm_post")
    out = run(model, torch.randn(1, 3, 28, 28), output_hidden_states=True)
    assert out.pooler_output is None
    torch.testing.assert_close(out.last_hidden_state, out.hidden_states[-1])


def test_rms_norm_variant_runs():
    model = OneVisionEncoderModel(tiny_config(layer_norm_type="rms_norm")).eval()
    assert isinstance(model.layernorm_pre, torch.nn.RMSNorm)
    assert "layernorm_pre.bias" not in model.state_dict()
    assert torch.isfinite(run(model, torch.randn(1, 3, 28, 28)).pooler_output).all()


def test_state_dict_has_the_published_keys_and_no_rotary_buffers(parity_dir):
    published = set(load_file(parity_dir / "tiny" / "model.safetensors"))
    assert set(OneVisionEncoderModel(tiny_config()).state_dict()) == published


def test_save_pretrained_round_trip(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, OneVisionEncoderModel)
    original = tiny_model.state_dict()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    x = clip(frames=2)
    torch.testing.assert_close(run(reloaded, x).pooler_output, run(tiny_model, x).pooler_output, atol=1e-6, rtol=0)


def checkpoint_spy(monkeypatch):
    """Records the keyword arguments of every torch checkpoint call that transformers' checkpointing makes."""
    calls = []

    def spy(function, *args, **kwargs):
        calls.append(kwargs)
        return torch_checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", spy)
    return calls


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_checkpoints_every_block_with_its_options(monkeypatch, use_reentrant):
    torch.manual_seed(0)
    model = OneVisionEncoderModel(tiny_config()).train()
    assert all(isinstance(layer, GradientCheckpointingLayer) for layer in model.encoder.layers)
    x = clip(frames=2)
    model(x).pooler_output.square().sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    calls = checkpoint_spy(monkeypatch)
    # transformers 5 renamed the switch (the old name warns); 4.57 only has the old one.
    enable = getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)
    enable({"use_reentrant": use_reentrant})
    assert all(layer.gradient_checkpointing for layer in model.encoder.layers)
    model(x).pooler_output.square().sum().backward()
    assert calls == [{"use_reentrant": use_reentrant}] * 2  # each of the 2 blocks, with the options given
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        model.eval()(x)
    assert len(calls) == 2  # nothing is checkpointed in evaluation
    getattr(model, "activation_checkpointing_disable", model.gradient_checkpointing_disable)()
    model.train()(x).pooler_output.sum().backward()
    assert len(calls) == 2


def test_gradient_checkpointing_every_n_layers(monkeypatch):
    model = OneVisionEncoderModel(tiny_config(num_hidden_layers=4)).train()
    if not hasattr(model, "activation_checkpointing_enable"):
        pytest.skip("transformers 4.57 checkpoints every layer: it has no every_n_layers")
    calls = checkpoint_spy(monkeypatch)
    model.activation_checkpointing_enable(every_n_layers=2)
    assert [layer.gradient_checkpointing for layer in model.encoder.layers] == [True, False, True, False]
    model(clip(frames=1)).pooler_output.sum().backward()
    assert len(calls) == 2


def test_presets():
    large = OneVisionEncoderConfig.from_preset("large")
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads) == (1024, 24, 16)
    assert OneVisionEncoderConfig.from_preset("base").hidden_size == 768
    huge = OneVisionEncoderConfig.from_preset("huge", use_head=False)
    assert (huge.hidden_size, huge.num_hidden_layers, huge.use_head) == (1280, 32, False)
    with pytest.raises(ValueError, match="unknown preset"):
        OneVisionEncoderConfig.from_preset("giant")
    with pytest.raises(ValueError, match="multiple of 16"):
        OneVisionEncoderConfig(hidden_size=120, num_attention_heads=5)


# --- backends ---------------------------------------------------------------------------------


def test_unknown_backend_is_refused(tiny_model):
    with pytest.raises(ValueError, match="not supported"):
        with_backend(tiny_model, "flex_attention")(torch.randn(1, 3, 28, 28))


def test_flash_attention_without_the_package_raises(monkeypatch, parity_dir, tiny_model):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"(?i)flash"):
        OneVisionEncoderModel.from_pretrained(parity_dir / "tiny", attn_implementation="flash_attention_2")
    with pytest.raises(ImportError, match=r"(?i)flash"):
        tiny_model.set_attn_implementation("flash_attention_2")
    assert tiny_model.config._attn_implementation == "sdpa"
    with pytest.raises(ImportError, match="flash-attn"):
        check_attention_backend("flash_attention_2")
    with pytest.raises(ImportError, match="flash-attn"):  # set on the config directly: refused at the forward
        with_backend(tiny_model, "flash_attention_2")(torch.randn(1, 3, 28, 28), output_attentions=True)


def test_flash_attention_refuses_cpu_and_float32(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    with pytest.raises(RuntimeError, match="CUDA only"):
        check_attention_backend("flash_attention_2", torch.device("cpu"), torch.bfloat16)
    with pytest.raises(RuntimeError, match="float16 or bfloat16"):
        check_attention_backend("flash_attention_2", torch.device("cuda"), torch.float32)


# --- errors a user can act on -----------------------------------------------------------------

BAD_INPUTS = [
    ("size", dict(pixel_values=torch.randn(1, 3, 30, 28)), "multiple of the patch size 14"),
    ("rank3", dict(pixel_values=torch.randn(3, 28, 28)), r"must be \[B, C, H, W\]"),
    ("rank6", dict(pixel_values=torch.randn(1, 3, 2, 2, 28, 28)), r"must be \[B, C, H, W\]"),
    ("channels", dict(pixel_values=torch.randn(1, 28, 28, 3)), "has 28 channels"),
    ("not a tensor", dict(pixel_values=[[0.0]]), "must be a torch.Tensor"),
    (
        "index past the clip (gather)",
        dict(pixel_values=torch.randn(1, 3, 2, 28, 28), visible_indices=torch.tensor([[0, 8]])),
        "index 8, out of range for 8 patches",
    ),
    (
        "index past the grid (positions)",
        dict(pixel_values=torch.randn(1, 3, 1, 28, 28), visible_indices=torch.tensor([[0, 1, 2, 256]])),
        "index 256, out of range for 256 patches",
    ),
    (
        "image index past the frame",
        dict(pixel_values=torch.randn(1, 3, 28, 28), visible_indices=torch.tensor([[0, 4]])),
        "out of range for 4 patches",
    ),
    (
        "negative",
        dict(pixel_values=torch.randn(1, 3, 2, 28, 28), visible_indices=torch.tensor([[-1, 3]])),
        "negative index",
    ),
    (
        "duplicate",
        dict(pixel_values=torch.randn(2, 3, 2, 28, 28), visible_indices=torch.tensor([[0, 3, 5], [2, 7, 2]])),
        "repeats index 2 in sample 1",
    ),
    (
        "float indices",
        dict(pixel_values=torch.randn(1, 3, 2, 28, 28), visible_indices=torch.tensor([[0.0, 3.0]])),
        "must hold integers",
    ),
    (
        "batch mismatch",
        dict(pixel_values=torch.randn(2, 3, 2, 28, 28), visible_indices=torch.tensor([[0, 3]] * 3)),
        "batch size 3 but pixel_values has 2",
    ),
    (
        "indices rank",
        dict(pixel_values=torch.randn(1, 3, 2, 28, 28), visible_indices=torch.zeros(1, 2, 2, dtype=torch.long)),
        r"shape \[N\] or \[B, N\]",
    ),
    (
        "positions shape",
        dict(pixel_values=torch.randn(1, 3, 28, 28), patch_positions=torch.zeros(1, 4, 2)),
        r"patch_positions must have shape \[B=1, N=4, 3\]",
    ),
    (
        "positions count without indices",
        dict(pixel_values=torch.randn(1, 3, 2, 28, 28), patch_positions=torch.zeros(1, 3, 3)),
        r"\[B=1, N=8, 3\]",
    ),
    (
        "positions count with indices",
        dict(
            pixel_values=torch.randn(1, 3, 2, 28, 28),
            visible_indices=torch.tensor([0, 5]),
            patch_positions=torch.zeros(1, 3, 3),
        ),
        r"\[B=1, N=2, 3\]",
    ),
]


@pytest.mark.parametrize(("label", "inputs", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_name_the_problem(tiny_model, label, inputs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_model(**inputs)


def test_shared_indices_broadcast_over_the_batch(tiny_model):
    x = clip(batch=2, frames=2, size=28)
    shared = run(tiny_model, x, visible_indices=torch.tensor([1, 4, 6]))
    per_sample = run(tiny_model, x, visible_indices=torch.tensor([[1, 4, 6], [1, 4, 6]]))
    torch.testing.assert_close(shared.last_hidden_state, per_sample.last_hidden_state)
