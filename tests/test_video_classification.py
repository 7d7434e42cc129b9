"""OneVisionEncoderForVideoClassification: loading, the frozen backbone, Trainer, Auto classes and pipelines."""

import logging
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import tiny_config

from onevision_encoder import (
    CheckpointMismatchError,
    OneVisionEncoderForVideoClassification,
    OneVisionEncoderImageProcessor,
    OneVisionEncoderModel,
    chunk_visible_indices,
    frame_positions,
)
from onevision_encoder.training.synthetic import synthetic_video

LABELS = ["left", "down", "up"]
LABEL_FIELDS = dict(id2label=dict(enumerate(LABELS)), label2id={name: index for index, name in enumerate(LABELS)})
SIZES = dict(hidden_size=64, intermediate_size=128)


def label_config(**overrides):
    return tiny_config(**SIZES, **LABEL_FIELDS, **overrides)


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("encoder")
    OneVisionEncoderModel(tiny_config(**SIZES)).save_pretrained(folder)
    return folder


def clips(count_per_label, seed=0, size=56, frames=8):
    """Generated clips (a square moving one way per label) as model inputs with their labels."""
    processor = OneVisionEncoderImageProcessor(
        video_size={"shortest_edge": size}, video_crop_size={"height": size, "width": size}
    )
    grid = size // 14
    indices = chunk_visible_indices(frame_positions(frames), (grid, grid))
    samples = []
    for label in range(len(LABELS)):
        for index in range(count_per_label):
            video = synthetic_video(label, len(LABELS), size + 8, frames, seed + 100 * label + index)
            pixels = processor(videos=[video])["pixel_values_videos"][0]
            samples.append({"pixel_values": pixels, "visible_indices": indices, "labels": torch.tensor(label)})
    return samples


def batch(samples):
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def test_an_encoder_checkpoint_loads_with_a_new_head(encoder_folder, caplog):
    with caplog.at_level(logging.WARNING):
        model = OneVisionEncoderForVideoClassification.from_pretrained(
            encoder_folder, num_labels=3, id2label=dict(enumerate(LABELS))
        )
    assert "is not a OneVisionEncoderForVideoClassification checkpoint" in caplog.text
    encoder = OneVisionEncoderModel.from_pretrained(encoder_folder)
    for name, value in encoder.state_dict().items():
        assert torch.equal(model.onevision_encoder.state_dict()[name], value), name
    assert model.probe.classifier.weight.shape == (3, 64)
    # The probe's own start: near-zero logits, so the first loss is log(num_labels).
    assert model.probe.classifier.weight.abs().max() < 1e-3 and not model.probe.classifier.bias.any()
    assert 0.005 < model.probe.query.std() < 0.03
    assert not any(p.requires_grad for p in model.onevision_encoder.parameters())  # frozen by default
    assert all(p.requires_grad for p in model.probe.parameters())


def test_a_classifier_checkpoint_must_hold_its_head(encoder_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    model = OneVisionEncoderForVideoClassification.from_pretrained(encoder_folder, num_labels=3)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "probe.query"}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"missing weights: probe\.query"):
        OneVisionEncoderForVideoClassification.from_pretrained(tmp_path)


def test_forward_on_clips_and_images_with_the_loss(encoder_folder):
    torch.manual_seed(1)
    model = OneVisionEncoderForVideoClassification(label_config(label_smoothing=0.1)).eval()
    inputs = batch(clips(1))
    output = model(**inputs)
    assert output.logits.shape == (3, 3)
    expected = F.cross_entropy(output.logits, inputs["labels"], label_smoothing=0.1)
    torch.testing.assert_close(output.loss, expected)
    # The head reads the encoder's last hidden state, whatever the input: here images of two sizes.
    for shape in ((2, 3, 28, 28), (1, 3, 42, 70)):
        images = torch.randn(shape)
        tokens = model.onevision_encoder(pixel_values=images).last_hidden_state
        torch.testing.assert_close(model(pixel_values=images).logits, model.probe(tokens))
    loss, logits, hidden = model(**inputs, output_hidden_states=True, return_dict=False)
    assert torch.equal(loss, output.loss) and torch.equal(logits, output.logits)
    assert len(hidden) == 3  # embeddings + 2 blocks
    with pytest.raises(ValueError, match="problem_type 'multi_label_classification' is not supported"):
        OneVisionEncoderForVideoClassification(label_config(problem_type="multi_label_classification"))


@pytest.mark.parametrize("frozen", [True, False])
def test_the_backbone_is_frozen_or_trained(frozen):
    torch.manual_seed(2)
    model = OneVisionEncoderForVideoClassification(label_config(freeze_backbone=frozen, attention_dropout=0.5))
    model.train()
    assert model.onevision_encoder.training is not frozen  # frozen: inference features, no dropout
    assert model.probe.training
    model(**batch(clips(1))).loss.backward()
    backbone_grads = [p.grad for p in model.onevision_encoder.encoder.parameters()]
    if frozen:
        assert all(grad is None for grad in backbone_grads)
    else:
        assert all(grad is not None and grad.abs().sum() > 0 for grad in backbone_grads)
    assert all(p.grad is not None for p in model.probe.parameters())


@pytest.mark.parametrize("frozen", [True, False])
def test_trainer_fine_tunes_it(tmp_path, frozen):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(3)
    model = OneVisionEncoderForVideoClassification(label_config(freeze_backbone=frozen))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    arguments = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=6,
        learning_rate=2e-3,
        num_train_epochs=12,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=clips(4))
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 24  # 12 clips, batches of 6, 12 epochs
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4  # from log(3) = 1.10 at the start
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])}
    assert any(name.startswith("probe.") for name in changed)
    backbone_changed = any(name.startswith("onevision_encoder.encoder.") for name in changed)
    assert backbone_changed is not frozen


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"classifier_num_heads": 3}, r"classifier_num_heads \(3\) must be a positive divisor of hidden_size \(64\)"),
        ({"classifier_mlp_ratio": 0}, "classifier_mlp_ratio must be >= 1"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"num_frames": 0}, "num_frames must be >= 1 or None"),
    ],
)
def test_head_fields_are_checked(field, message):
    with pytest.raises(ValueError, match=message):
        label_config(**field)


def test_save_and_auto_load_give_the_same_logits(encoder_folder, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

    model = OneVisionEncoderForVideoClassification.from_pretrained(
        encoder_folder, **LABEL_FIELDS, label_smoothing=0.1, classifier_num_heads=2
    ).eval()
    with torch.no_grad():  # a trained head, not the near-zero start
        for parameter in model.probe.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.num_labels == 3 and (config.id2label, config.label2id) == tuple(LABEL_FIELDS.values())
    assert (config.classifier_num_heads, config.label_smoothing, config.freeze_backbone) == (2, 0.1, True)
    loaded = AutoModelForVideoClassification.from_pretrained(tmp_path)
    assert type(loaded) is OneVisionEncoderForVideoClassification and not loaded.training
    inputs = batch(clips(1, seed=7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.onevision_encoder.parameters())
    unfrozen = AutoModelForVideoClassification.from_pretrained(tmp_path, freeze_backbone=False)
    # Every weight learns but the encoder's pooling head, which the probe never reads (frozen for DDP).
    assert all(p.requires_grad != n.startswith("onevision_encoder.head.") for n, p in unfrozen.named_parameters())
    # The classifier's folder serves as an encoder too (its head left out), as transformers' heads do.
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder) is OneVisionEncoderModel
    pixels = {name: value for name, value in inputs.items() if name != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(**pixels).last_hidden_state, model.onevision_encoder(**pixels).last_hidden_state, rtol=0, atol=0
        )


def test_image_feature_extraction_pipeline_on_an_encoder_folder(encoder_folder, tmp_path):
    import shutil

    from PIL import Image
    from transformers import pipeline

    folder = tmp_path / "encoder"
    shutil.copytree(encoder_folder, folder)
    processor = OneVisionEncoderImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor.save_pretrained(folder)
    image = Image.fromarray(synthetic_video(0, 3, 80, 1, 0)[0])
    extractor = pipeline("image-feature-extraction", model=str(folder))
    assert isinstance(extractor.model, OneVisionEncoderModel)
    features = torch.tensor(extractor(image))
    encoder = OneVisionEncoderModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = encoder(pixel_values=processor(images=image)["pixel_values"]).last_hidden_state
    assert features.shape == (1, 16, 64)  # 56x56: 4x4 patches of width 64
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)


@pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5,
    reason="transformers 4's video-classification pipeline never calls a video processor: it decodes the first "
    "num_frames frames itself and hands them to an image processor as separate images",
)
@pytest.mark.parametrize("sampling", ["uniform", "codec"])
def test_video_classification_pipeline_on_a_video_file(tmp_path, sampling):
    from transformers import pipeline

    from onevision_encoder.model import OneVisionEncoderVideoProcessor
    from onevision_encoder.video.encode import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, synthetic_video(1, 3, 64, 20, 0), fps=25, gop=16)
    torch.manual_seed(4)
    # num_frames: what transformers 5's pipeline asks the processor for (codec: the 64 frames selected from).
    model = OneVisionEncoderForVideoClassification(label_config(num_frames=8 if sampling == "uniform" else 64))
    with torch.no_grad():  # distinct logits, so the order of the labels is tested
        model.probe.classifier.weight.normal_(std=1.0)
    side = {"size": {"shortest_edge": 56}, "crop_size": {"height": 56, "width": 56}} if sampling == "uniform" else {}
    processor = OneVisionEncoderVideoProcessor(sampling=sampling, **side)
    folder = tmp_path / "classifier"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    classify = pipeline("video-classification", model=str(folder))
    assert isinstance(classify.model, OneVisionEncoderForVideoClassification)
    assert isinstance(classify.video_processor, OneVisionEncoderVideoProcessor)
    assert classify.video_processor.sampling == sampling
    results = classify(str(video))
    inputs = processor(videos=str(video), num_frames=model.config.num_frames)
    with torch.no_grad():
        probabilities = model.eval()(**inputs).logits[0].softmax(-1)
    expected = sorted(zip(probabilities.tolist(), LABELS, strict=True), reverse=True)
    assert [r["label"] for r in results] == [label for _, label in expected]
    assert [r["score"] for r in results] == pytest.approx([score for score, _ in expected], abs=1e-5)
    tokens = {"uniform": 8 * 16, "codec": 2048}[sampling]
    assert inputs["visible_indices"].shape == (1, tokens)


def readme_examples():
    """The python blocks of docs/training.md's "Video classification" section."""
    readme = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    section = readme.split("\n## Video classification\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    from onevision_encoder.video.encode import write_video

    examples = readme_examples()
    assert len(examples) == 2
    torch.manual_seed(5)
    # The example's names: an encoder folder and generated clips, one per label, and one to classify.
    OneVisionEncoderModel(tiny_config(**SIZES)).save_pretrained(tmp_path / "onevision-encoder-large")
    for label, name in enumerate([*LABELS, "clip"]):
        write_video(tmp_path / f"{name}.mp4", synthetic_video(label % 3, 3, 64, 20, label), fps=25, gop=16)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(examples[0], "docs/training.md", "exec"), namespace)
    assert capsys.readouterr().out.strip().splitlines()[-1] in LABELS
    model = namespace["model"]
    assert type(model) is OneVisionEncoderForVideoClassification and model.config.id2label == dict(enumerate(LABELS))
    assert model.probe.classifier.weight.abs().max() > 1e-3  # trained: it starts at std 2e-5
    assert (tmp_path / "classifier" / "video_preprocessor_config.json").is_file()
    if int(transformers.__version__.split(".")[0]) >= 5:
        exec(compile(examples[1], "docs/training.md", "exec"), {})
        printed = capsys.readouterr().out
        assert all(f"'label': '{label}'" in printed for label in LABELS)
