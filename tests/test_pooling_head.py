"""The pooling head runs only when its output is asked for; patch-feature callers never ask."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from conftest import tiny_config
from torch.nn.parallel import DistributedDataParallel

from onevision_encoder import OneVisionEncoderModel, vision_tower_features
from onevision_encoder.evaluation import FeatureExtractor, FeatureSpec
from onevision_encoder.jobs.features import EncoderInput, encode_tensors
from onevision_encoder.model.classification import OneVisionEncoderForVideoClassification
from onevision_encoder.video.synthetic import make_clip, write_clip


@contextmanager
def counting_head_calls(model: OneVisionEncoderModel):
    calls = []
    handle = model.head.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def pixels(batch=2, seed=0):
    return torch.randn(batch, 3, 2, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_forward_runs_the_head_only_when_asked_and_the_tokens_stay_the_same(tiny_model):
    inputs = pixels()
    with torch.no_grad(), counting_head_calls(tiny_model) as calls:
        full = tiny_model(inputs, output_hidden_states=True)
        assert len(calls) == 1 and full.pooler_output.shape == (2, 128)
        tokens_only = tiny_model(inputs, output_hidden_states=True, output_pooler=False)
        assert len(calls) == 1 and tokens_only.pooler_output is None
    torch.testing.assert_close(tokens_only.last_hidden_state, full.last_hidden_state, rtol=0, atol=1e-6)
    for ours, reference in zip(tokens_only.hidden_states, full.hidden_states, strict=True):
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_tuple_output_without_the_head_leaves_the_pooled_entry_out(tiny_model):
    with torch.no_grad():
        out = tiny_model(pixels(1), return_dict=False, output_hidden_states=True, output_pooler=False)
    assert len(out) == 2 and out[0].shape == (1, 8, 128) and len(out[1]) == 3


def test_forward_packed_runs_the_head_only_when_asked(tiny_model):
    samples = [{"pixel_values": torch.randn(3, 28, 28)}, {"pixel_values": torch.randn(3, 2, 42, 28)}]
    with torch.no_grad(), counting_head_calls(tiny_model) as calls:
        tokens_only = tiny_model.forward_packed(samples, output_pooler=False)
        assert not calls and tokens_only.pooler_output is None
        full = tiny_model.forward_packed(samples)
        assert calls and full.pooler_output.shape == (2, 128)
    torch.testing.assert_close(tokens_only.last_hidden_state, full.last_hidden_state, rtol=0, atol=1e-6)


def test_feature_extraction_runs_the_head_only_for_pooled_features(tiny_model):
    indices = torch.arange(8)
    samples = [EncoderInput(f"s{n}", "chunk", pixels(1, n)[0], indices, None, None) for n in range(2)]
    with counting_head_calls(tiny_model) as calls:
        tokens = encode_tensors(tiny_model, samples)
        assert not calls
        pooled = encode_tensors(tiny_model, samples, pooled=True)
        assert len(calls) == 1
    with torch.no_grad():
        reference = tiny_model(torch.stack([s.pixel_values for s in samples]), visible_indices=indices)
    torch.testing.assert_close(torch.stack(tokens), reference.last_hidden_state, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.stack(pooled), reference.pooler_output, rtol=0, atol=1e-6)


def test_probe_feature_extraction_does_not_run_the_head(tmp_path: Path):
    torch.manual_seed(0)
    OneVisionEncoderModel(tiny_config(hidden_size=64, intermediate_size=128)).save_pretrained(tmp_path / "model")
    video = write_clip(tmp_path / "clip.mp4", make_clip("moving_object", num_frames=16, size=(64, 64), object_size=16))
    extractor = FeatureExtractor(FeatureSpec(str(tmp_path / "model"), "chunk", frames=8))
    with counting_head_calls(extractor.model) as calls:
        features = extractor(video)
    assert not calls and features.shape == (8 * 256, 64)


def test_the_lmm_tower_does_not_run_the_head(tiny_model):
    samples = [{"pixel_values": torch.randn(3, 28, 28)}]
    with torch.no_grad(), counting_head_calls(tiny_model) as calls:
        vision_tower_features(tiny_model, samples, layer=-2, spatial_merge=2)
    assert not calls


def test_fine_tuning_the_classifier_under_ddp_finds_a_gradient_for_every_trainable_parameter(tmp_path: Path):
    torch.manual_seed(0)
    model = OneVisionEncoderForVideoClassification(tiny_config(num_labels=3, freeze_backbone=False))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        network = DistributedDataParallel(model, find_unused_parameters=False)
        with counting_head_calls(model.onevision_encoder) as calls:
            for _ in range(2):  # DDP raises at the second step when a trainable parameter got no gradient
                network(pixel_values=pixels(), labels=torch.tensor([0, 2])).loss.backward()
    finally:
        dist.destroy_process_group()
    assert not calls
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert any(name.startswith("onevision_encoder.encoder.") for name in trainable)  # the encoder is fine-tuned
    assert [name for name in trainable if model.get_parameter(name).grad is None] == []
