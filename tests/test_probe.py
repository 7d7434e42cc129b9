"""Attentive-probe evaluation on small generated datasets."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from onevision_encoder import OneVisionEncoderModel
from onevision_encoder.cli.main import main
from onevision_encoder.evaluation import (
    ColorJitter,
    FeatureExtractor,
    FeatureSpec,
    ListError,
    ProbeSettings,
    cached_features,
    label_index,
    read_list,
    train_probe,
)
from onevision_encoder.evaluation.augment import view_rng
from onevision_encoder.training.synthetic import synthetic_video
from onevision_encoder.video.encode import write_video

ONEVISION = Path(sys.executable).with_name("onevision")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 classes of clips (a coloured square moving its own way), lists as CSV, and a tiny encoder."""
    root = tmp_path_factory.mktemp("probe")
    (root / "clips").mkdir()
    for split, count in (("train", 6), ("val", 3)):
        rows = [("path", "label")]
        for label in range(3):
            for index in range(count):
                path = f"clips/{split}-{label}-{index}.mp4"
                seed = 1000 * label + 10 * index + (split == "val")
                write_video(root / path, synthetic_video(2 * label, 6, 64, 20, seed), fps=25, gop=16)
                rows.append((path, f"class{label}"))
        with open(root / f"{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    torch.manual_seed(0)
    OneVisionEncoderModel(tiny_config(hidden_size=64, intermediate_size=128)).save_pretrained(root / "model")
    return root


def features(dataset, split, mode="chunk", **options):
    clips = read_list(dataset / f"{split}.csv")
    spec = FeatureSpec(str(dataset / "model"), mode, **options)
    return cached_features(spec, clips, dataset / "cache", name=split)


def test_a_separable_task_is_learned(dataset):
    train_clips, val_clips = read_list(dataset / "train.csv"), read_list(dataset / "val.csv")
    names, train_labels, val_labels = label_index(train_clips, val_clips, dataset / "val.csv")
    assert names == ["class0", "class1", "class2"]
    train_features, _ = features(dataset, "train")
    val_features, _ = features(dataset, "val")
    assert train_features.shape == (18, 8 * 256, 64)  # 8 frames x 256 patches of 224x224
    settings = ProbeSettings(epochs=15, lr=1e-3, batch_size=6)
    result = train_probe(
        train_features, torch.tensor(train_labels), val_features, torch.tensor(val_labels), 3, settings
    )
    assert result.final["top1"] > 0.9
    assert len(result.curves) == 15 and result.best["top1"] >= result.final["top1"]
    assert result.predictions.shape == (9,)


def test_codec_and_baseline_modes_give_features(dataset, tmp_path):
    codec, _ = features(dataset, "val", mode="codec", num_patches=2048)
    assert codec.shape == (9, 2048, 64)
    from transformers import CLIPVisionConfig, CLIPVisionModel

    try:
        from transformers import CLIPImageProcessorPil as ProcessorClass
    except ImportError:  # transformers 4.x: the PIL processor has the plain name
        from transformers import CLIPImageProcessor as ProcessorClass
    baseline = tmp_path / "clip"
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16
    )
    CLIPVisionModel(config).save_pretrained(baseline)
    ProcessorClass(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(baseline)
    clips = read_list(dataset / "val.csv")
    tokens, _ = cached_features(FeatureSpec(str(baseline), "baseline", frames=8), clips, tmp_path / "cache")
    assert tokens.shape == (9, 8 * 5, 32)  # 8 frames x (4 patches + class token)
    extractor = FeatureExtractor(FeatureSpec(str(baseline), "baseline", dtype="bfloat16"))
    assert next(extractor.model.parameters()).dtype == torch.bfloat16
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match=rf"{re.escape(str(missing))}: cannot load a model"):
        FeatureExtractor(FeatureSpec(str(missing), "baseline"))


def test_the_cache_is_reused_and_invalidated(dataset, tmp_path):
    clips = read_list(dataset / "val.csv")[:2]
    spec = FeatureSpec(str(dataset / "model"), "chunk", frames=8)
    first, cached = cached_features(spec, clips, tmp_path)
    assert not cached
    again, cached = cached_features(spec, clips, tmp_path)
    assert cached and torch.equal(first[:], again[:])
    _, cached = cached_features(FeatureSpec(str(dataset / "model"), "chunk", frames=16), clips, tmp_path)
    assert not cached  # other parameters, other features
    _, cached = cached_features(spec, clips[:1], tmp_path)
    assert not cached  # other clips
    _, cached = cached_features(FeatureSpec(str(dataset / "model"), "chunk", frames=8, view=1), clips, tmp_path)
    assert not cached  # another view
    copy = tmp_path / "copy"
    OneVisionEncoderModel.from_pretrained(dataset / "model").save_pretrained(copy)
    _, cached = cached_features(FeatureSpec(str(copy), "chunk", frames=8), clips, tmp_path)
    assert cached  # the same weights elsewhere (another path, other times): the same model
    retrained = OneVisionEncoderModel.from_pretrained(dataset / "model")
    with torch.no_grad():
        next(retrained.parameters()).add_(0.01)
    retrained.save_pretrained(copy)
    _, cached = cached_features(FeatureSpec(str(copy), "chunk", frames=8), clips, tmp_path)
    assert not cached  # other weights


def test_the_store_reads_the_rows_asked_for_and_an_interrupted_extraction_resumes(dataset, tmp_path):
    clips = read_list(dataset / "val.csv")[:5]
    spec = FeatureSpec(str(dataset / "model"), "chunk", frames=8)
    store, _ = cached_features(spec, clips, tmp_path, clips_per_part=2)
    parts = sorted(store.folder.glob("part-*.safetensors"))
    assert [p.name for p in parts] == ["part-00000.safetensors", "part-00001.safetensors", "part-00002.safetensors"]
    assert len(store) == 5 and store.shape == (5, 8 * 256, 64)
    extractor = FeatureExtractor(spec)
    direct = torch.stack([extractor(clip.path) for clip in clips])
    torch.testing.assert_close(store[:], direct, rtol=0, atol=1e-5)
    assert torch.equal(store[torch.tensor([4, 0, 2])], store[:][[4, 0, 2]])  # the order asked, across parts
    assert torch.equal(store[3], store[:][3])
    with pytest.raises(IndexError):
        store[[5]]

    kept = {p.name: p.stat().st_mtime_ns for p in parts}
    before = store[:]
    parts[1].unlink()  # as if the run stopped before writing it
    with pytest.raises(FileNotFoundError, match=r"part-00001\.safetensors: this part of the feature cache"):
        store[[2]]
    resumed, cached = cached_features(spec, clips, tmp_path, clips_per_part=2)
    assert not cached and torch.equal(resumed[:], before)
    assert parts[0].stat().st_mtime_ns == kept[parts[0].name] and parts[2].stat().st_mtime_ns == kept[parts[2].name]
    parts[2].write_bytes(parts[2].read_bytes()[:100])  # damaged on disk
    with pytest.raises(ValueError, match=r"part-00002\.safetensors: unreadable feature-cache part .* delete it"):
        resumed[[4]]


def test_jittered_views_are_augmented_and_repeatable(dataset, tmp_path):
    clips = read_list(dataset / "val.csv")[:3]
    plain = FeatureExtractor(FeatureSpec(str(dataset / "model"), "chunk", frames=8))
    view = FeatureExtractor(FeatureSpec(str(dataset / "model"), "chunk", frames=8, view=1))
    other = FeatureExtractor(FeatureSpec(str(dataset / "model"), "chunk", frames=8, view=2))
    jittered = [not torch.allclose(plain(c.path), view(c.path), atol=1e-4) for c in clips]
    assert any(jittered)  # p = 0.8 per clip and view
    assert torch.equal(view(clips[0].path), view(clips[0].path))
    assert not all(torch.equal(view(c.path), other(c.path)) for c in clips)
    codec = FeatureExtractor(FeatureSpec(str(dataset / "model"), "codec", num_patches=2048, view=1))
    codec_plain = FeatureExtractor(FeatureSpec(str(dataset / "model"), "codec", num_patches=2048))
    assert any(not torch.allclose(codec(c.path), codec_plain(c.path), atol=1e-4) for c in clips)


def test_views_are_used_one_per_epoch(dataset):
    train_clips, val_clips = read_list(dataset / "train.csv"), read_list(dataset / "val.csv")
    _, train_labels, val_labels = label_index(train_clips, val_clips, dataset / "val.csv")
    train_features, _ = features(dataset, "train")
    val_features, _ = features(dataset, "val")
    labels = torch.tensor(train_labels), torch.tensor(val_labels)
    settings = ProbeSettings(epochs=2, lr=1e-3, batch_size=6)
    single = train_probe(train_features, labels[0], val_features, labels[1], 3, settings)
    repeated = train_probe([train_features, train_features], labels[0], val_features, labels[1], 3, settings)
    assert single.curves == repeated.curves
    noise = train_features[:] + torch.randn(train_features.shape)
    second_differs = train_probe([train_features, noise], labels[0], val_features, labels[1], 3, settings)
    assert second_differs.curves[0] == single.curves[0] and second_differs.curves[1] != single.curves[1]
    with pytest.raises(ValueError, match="every training view needs 18 clips"):
        train_probe([train_features, noise[:5]], labels[0], val_features, labels[1], 3, settings)


def run_probe(dataset, out, processes, extra=()):
    options = ["--train", dataset / "train.csv", "--val", dataset / "val.csv", "--model", dataset / "model"]
    options += ["--out", out, "--epochs", "3", "--lr", "1e-3", "--batch-size", "6", *extra]
    options += ["--jitter-views", "2", "--clips-per-part", "4"]  # parts split between the processes
    if processes == 1:
        command = [str(ONEVISION), "probe"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        command += ["-m", "onevision_encoder.probe"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*command, *map(str, options)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), (out / "predictions.csv").read_text()


def test_one_and_two_processes_score_every_clip_once_and_agree(dataset, tmp_path):
    one, one_predictions = run_probe(dataset, tmp_path / "one", 1)
    two, two_predictions = run_probe(dataset, tmp_path / "two", 2, ["--export", tmp_path / "export"])
    assert one["num_val_samples"] == two["num_val_samples"] == 9
    rows = list(csv.DictReader(two_predictions.splitlines()))
    assert len(rows) == 9 and len({row["path"] for row in rows}) == 9
    assert one_predictions == two_predictions
    assert one["final_top1"] == two["final_top1"]
    assert one["jitter_views"] == 2 and len(list((tmp_path / "two" / "cache").glob("train-chunk-*"))) == 2
    for key in ("final_top1", "best_top1", "best_epoch", "num_val_samples"):
        assert key in one
    assert (tmp_path / "one" / "curves.png").stat().st_size > 1000
    # Process 0 exported the probe that all processes trained alike.
    from transformers import AutoModelForVideoClassification

    exported = AutoModelForVideoClassification.from_pretrained(tmp_path / "export")
    spec, clips = FeatureSpec(str(dataset / "model"), "chunk", frames=16), read_list(dataset / "val.csv")
    val, _ = cached_features(spec, clips, tmp_path / "two" / "cache", name="val", clips_per_part=4)
    with torch.no_grad():
        predicted = exported.probe(val[:]).argmax(-1).tolist()
    assert [exported.config.id2label[i] for i in predicted] == [row["prediction"] for row in rows]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,label\nclips/none.mp4,class0\n", r"val\.csv:2: .*none\.mp4: no such file"),
        ("path,label\n{clip},class7\n", r"val\.csv:2: label 'class7' does not occur in the training list"),
        ("path,label\n{clip}\n", r"val\.csv:2: expected 'path,label'"),
    ],
)
def test_bad_lists_name_the_line(dataset, tmp_path, content, message):
    clip = next((dataset / "clips").glob("val-0-*.mp4"))
    (tmp_path / "clips").symlink_to(dataset / "clips")
    bad = tmp_path / "val.csv"
    bad.write_text(content.format(clip=clip))
    with pytest.raises(ListError, match=message):
        label_index(read_list(dataset / "train.csv"), read_list(bad), bad)


def test_lists_can_name_clips_of_longer_videos(dataset, tmp_path):
    video = next((dataset / "clips").glob("val-0-*.mp4"))  # 20 frames
    listed = tmp_path / "segments.csv"
    listed.write_text(f"path,label,start,end\n{video},a,0,10\n{video},b,10,20\n")
    clips = read_list(listed)
    assert [c.frame_range for c in clips] == [(0, 10), (10, 20)] and clips[0].key() != clips[1].key()
    jsonl = tmp_path / "segments.jsonl"
    jsonl.write_text(json.dumps({"path": str(video), "label": "a", "start": 2, "end": 9}) + "\n")
    assert read_list(jsonl)[0].frame_range == (2, 9)
    store, _ = cached_features(FeatureSpec(str(dataset / "model"), "chunk", frames=8), clips, tmp_path / "cache")
    assert not torch.allclose(store[0], store[1])  # different frames, different features
    for content, message in (
        (f"{video},a,5,5\n", r"segments\.csv:1: start 5 and end 5 are not a clip"),
        (f"{video},a,x,9\n", r"segments\.csv:1: start and end must be frame indices"),
        (f"{video},a,5\n", r"segments\.csv:1: expected 'path,label' or 'path,label,start,end'"),
    ):
        listed.write_text(content)
        with pytest.raises(ListError, match=message):
            read_list(listed)
    jsonl.write_text(json.dumps({"path": str(video), "label": "a", "start": 2}) + "\n")
    with pytest.raises(ListError, match=r"segments\.jsonl:1: 'start' and 'end' go together"):
        read_list(jsonl)


def test_bad_jsonl_and_folders(tmp_path):
    bad = tmp_path / "list.jsonl"
    bad.write_text('{"path": "a.mp4"}\n')
    with pytest.raises(ListError, match=r"list\.jsonl:1: expected an object with 'path' and 'label'"):
        read_list(bad)
    with pytest.raises(ListError, match="no videos in class subfolders"):
        read_list(tmp_path)
    with pytest.raises(ListError, match="no such list file or folder"):
        read_list(tmp_path / "missing.csv")


def test_class_folders(dataset, tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for clip in list((dataset / "clips").glob("val-0-*.mp4"))[:2]:
            (tmp_path / label / clip.name).symlink_to(clip)
    clips = read_list(tmp_path)
    assert [c.label for c in clips] == ["cat", "cat", "dog", "dog"]


def test_colour_jitter_follows_its_operations():
    rng = np.random.default_rng(0)
    frames = rng.integers(30, 200, size=(4, 8, 8, 3), dtype=np.uint8)
    assert ColorJitter(p=0.0)(frames, view_rng("clip", 1)) is frames
    brightness_only = ColorJitter(brightness=0.4, contrast=0, saturation=0, hue=0, p=1.0)
    factors = []
    for view in range(6):
        brighter = brightness_only(frames, view_rng("clip", view))
        ratios = brighter.astype(float).mean(axis=(1, 2, 3)) / frames.astype(float).mean(axis=(1, 2, 3))
        assert np.allclose(ratios, ratios[0], atol=0.01) and 0.6 - 0.01 < ratios[0] < 1.4  # one factor per clip
        factors.append(ratios[0])
    assert np.ptp(factors) > 0.1
    grey = np.repeat(frames[..., :1], 3, axis=-1)
    for seed in range(5):  # saturation and hue leave a grey clip alone
        colour_only = ColorJitter(brightness=0, contrast=0, saturation=0.9, hue=0.5, p=1.0)
        assert np.abs(colour_only(grey, view_rng("grey", seed)).astype(int) - grey).max() <= 1
    red = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    red[..., 0] = 255
    turned = ColorJitter(brightness=0, contrast=0, saturation=0, hue=0.5, p=1.0)(red, view_rng("red", 3))
    assert turned.max() == 255 and not np.array_equal(turned, red)  # hue moves, value stays
    assert np.array_equal(view_rng("a", 1).random(3), view_rng("a", 1).random(3))
    assert not np.array_equal(view_rng("a", 1).random(3), view_rng("a", 2).random(3))
    with pytest.raises(ValueError, match=r"uint8 frames \[T, H, W, 3\]"):
        ColorJitter()(frames.astype(np.float32), rng)


def test_export_writes_the_probe_as_a_video_classifier(dataset, tmp_path):
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    from onevision_encoder import OneVisionEncoderForVideoClassification

    export = tmp_path / "classifier"
    # 16 frames: the probe's round(i / 15 * 63) grid positions differ from the model card's floor(...) there.
    run_probe(dataset, tmp_path / "out", 1, ["--export", export, "--frames", "16"])
    model = AutoModelForVideoClassification.from_pretrained(export).eval()
    assert type(model) is OneVisionEncoderForVideoClassification
    assert model.config.id2label == {0: "class0", 1: "class1", 2: "class2"} and model.config.num_frames == 16
    assert model.config.label_smoothing == 0.1 and model.config.freeze_backbone
    assert sorted(p.name for p in export.iterdir()) == [
        "config.json",
        "model.safetensors",
        "video_preprocessor_config.json",
    ]
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").read_text().splitlines()))
    spec, clips = FeatureSpec(str(dataset / "model"), "chunk", frames=16), read_list(dataset / "val.csv")
    val_features, cached = cached_features(spec, clips, tmp_path / "out" / "cache", name="val", clips_per_part=4)
    assert cached  # the features the probe was scored on
    with torch.no_grad():
        probe_logits = model.probe(val_features[:])
    assert [model.config.id2label[i] for i in probe_logits.argmax(-1).tolist()] == [row["prediction"] for row in rows]
    # End to end: the saved video processor gives the model the inputs the probe's features came from.
    processor = AutoVideoProcessor.from_pretrained(export)
    assert (processor.num_frames, processor.frame_rounding) == (16, "round")  # the probe's grid positions
    for row, expected in zip(rows, probe_logits, strict=True):
        with torch.no_grad():
            logits = model(**processor(videos=str(dataset / row["path"]))).logits[0]
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_export_of_a_codec_probe_reproduces_its_features(dataset, tmp_path):
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    from onevision_encoder.cli.probe_cmd import export_classifier
    from onevision_encoder.evaluation import AttentiveProbe

    # Not the preset's K and side: the processor must keep the probe's (K = 1152 at 168: 8 frames of 144 patches).
    spec = FeatureSpec(str(dataset / "model"), "codec", num_patches=1152, resolution=168)
    torch.manual_seed(0)
    probe = AttentiveProbe(64, 3)
    export_classifier(tmp_path / "codec", spec, probe, ["a", "b", "c"], 0.1)
    model = AutoModelForVideoClassification.from_pretrained(tmp_path / "codec").eval()
    processor = AutoVideoProcessor.from_pretrained(tmp_path / "codec")
    extractor = FeatureExtractor(spec)
    for clip in read_list(dataset / "val.csv")[:3]:
        with torch.no_grad():
            logits = model(**processor(videos=str(clip.path), num_frames=model.config.num_frames)).logits
            expected = probe(extractor(clip.path)[None])
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--export", "{model}"], r"the output \S+/model-link would overwrite the input \S+/probe\d+/model\n"),
        (["--export", "{out}"], r"--export: .* would replace"),
        (["--export", "{existing}"], r"--export: .*existing already exists"),
        (["--export", "{new}", "--mode", "baseline"], r"baseline encoder's probe cannot be exported"),
    ],
)
def test_export_refuses_folders_it_must_not_write(dataset, tmp_path, capsys, extra, message):
    (tmp_path / "existing").mkdir()
    (tmp_path / "model-link").symlink_to(dataset / "model")
    places = {"model": tmp_path / "model-link", "out": tmp_path / "out", "existing": tmp_path / "existing"}
    places["new"] = tmp_path / "new"
    options = ["--train", dataset / "train.csv", "--val", dataset / "val.csv", "--model", dataset / "model"]
    options += ["--out", tmp_path / "out", *(str(value).format(**places) for value in extra)]
    assert main(["probe", *map(str, options)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "new").exists()  # refused before any work
