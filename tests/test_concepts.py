"""Concept labels: teacher embeddings, spherical k-means, top-k labels and the rewritten manifest, with tiny
random-weight teachers saved in tmp (no downloads)."""

import argparse
import importlib
import json

import numpy as np
import pytest
import torch
import transformers
from conftest import tiny_config
from PIL import Image

from onevision_encoder import OneVisionEncoderModel
from onevision_encoder.cli import concepts_cmd
from onevision_encoder.cli.options import UsageError
from onevision_encoder.codec.frames import read_frames, sample_frame_ids
from onevision_encoder.codec.reader import VideoReader
from onevision_encoder.evaluation.teacher import image_features, load_teacher
from onevision_encoder.training.clustering import kmeans, nearest_centres
from onevision_encoder.training.concepts import build_concepts, embed_manifest
from onevision_encoder.training.data import read_records
from onevision_encoder.video.synthetic import make_clip, write_clip


def write_manifest(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def noise_image(path, colour, seed, size=(40, 48)):
    """Mostly ``colour`` (0 red, 2 blue) with a little noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
    pixels[..., colour] = rng.integers(200, 256, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def clip_teacher(tmp_path_factory):
    """A tiny CLIP vision tower with projection, saved with its (PIL) image processor."""
    folder = tmp_path_factory.mktemp("clip_teacher")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=16,
    )
    transformers.CLIPVisionModelWithProjection(config).save_pretrained(folder)
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor_class(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def onevision_teacher(tmp_path_factory):
    """Our own encoder, saved without a preprocessor config (the default processor is used)."""
    folder = tmp_path_factory.mktemp("onevision_teacher")
    torch.manual_seed(0)
    OneVisionEncoderModel(tiny_config()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six mostly red and six mostly blue images in ``images/``, with a manifest carrying extra keys."""
    root = tmp_path_factory.mktemp("images")
    (root / "images").mkdir()
    records = []
    for index in range(12):
        colour = 0 if index < 6 else 2
        noise_image(root / "images" / f"{index:02d}.png", colour, seed=index)
        records.append(
            {"path": f"images/{index:02d}.png", "head": "ocr" if index == 3 else "image", "labels": [99], "id": index}
        )
    records[0].pop("labels")
    return write_manifest(root / "train.jsonl", records)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_clip(root / "a.mp4", make_clip("moving_object", num_frames=16, size=(64, 80)))
    write_clip(root / "b.mp4", make_clip("still", num_frames=12, size=(64, 80), seed=5))
    return write_manifest(
        root / "videos.jsonl",
        [
            {"path": "a.mp4", "head": "video", "selection": "sel/a.mp4", "note": "first"},
            {"path": str(root / "b.mp4"), "head": "video"},
        ],
    )


def test_clip_teacher_loads_with_its_projection(clip_teacher):
    model, processor = load_teacher(clip_teacher)
    assert type(model).__name__ == "CLIPVisionModelWithProjection"
    assert processor(images=[np.zeros((20, 30, 3), np.uint8)], return_tensors="pt")["pixel_values"].shape == (
        1,
        3,
        32,
        32,
    )


def test_image_embeddings_are_unit_rows(images, clip_teacher):
    embeddings = embed_manifest(images, clip_teacher, batch_size=5)
    assert embeddings.shape == (12, 16) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    # batching does not change the result
    np.testing.assert_allclose(embed_manifest(images, clip_teacher, batch_size=12), embeddings, atol=1e-5)
    cut = embed_manifest(images, clip_teacher, dim=4)
    assert cut.shape == (12, 4)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1, atol=1e-5)


def test_video_embeddings_concatenate_normalised_frames(videos, clip_teacher):
    embeddings = embed_manifest(videos, clip_teacher, frames=3, dim=8, batch_size=2)
    assert embeddings.shape == (2, 3 * 8) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    # by hand: 3 uniformly sampled frames, each embedded and normalised, cut to 8 values, joined, normalised
    path = videos.parent / "a.mp4"
    with VideoReader(path) as reader:
        frames = read_frames(path, sample_frame_ids(reader.info.num_frames, 3))
    model, processor = load_teacher(clip_teacher)
    with torch.inference_mode():
        features = image_features(model, processor(images=frames, return_tensors="pt")["pixel_values"]).numpy()
    features = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = features[:, :8].reshape(-1)
    np.testing.assert_allclose(embeddings[0], expected / np.linalg.norm(expected), atol=1e-5)
    # without a cut every frame weighs the same
    full = embed_manifest(videos, clip_teacher)
    assert full.shape == (2, 8 * 16)
    np.testing.assert_allclose(np.linalg.norm(full.reshape(2, 8, 16), axis=2), 1 / np.sqrt(8), atol=1e-5)


def test_onevision_encoder_works_as_a_teacher(images, videos, onevision_teacher):
    model, _ = load_teacher(onevision_teacher)
    assert isinstance(model, OneVisionEncoderModel)
    embeddings = embed_manifest(images, onevision_teacher, batch_size=12)
    assert embeddings.shape == (12, tiny_config().hidden_size)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    video = embed_manifest(videos, onevision_teacher, frames=2, dim=16)
    assert video.shape == (2, 32)


def test_kmeans_and_nearest_centres_separate_two_groups():
    rng = np.random.default_rng(0)
    red, blue = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[5]
    data = np.concatenate([red + 0.05 * rng.standard_normal((20, 8)), blue + 0.05 * rng.standard_normal((20, 8))])
    centres = kmeans(data, 2, seed=1)
    assert centres.shape == (2, 8) and centres.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-5)
    labels = nearest_centres(data, centres, top_k=2)
    assert labels.shape == (40, 2) and labels.dtype == np.int64
    assert len(set(labels[:20, 0])) == 1 and len(set(labels[20:, 0])) == 1 and labels[0, 0] != labels[20, 0]
    assert (np.sort(labels, axis=1) == [0, 1]).all()


def test_top_labels_are_nearest_by_cosine():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((50, 6)).astype(np.float32)
    centres = kmeans(data, 7, iterations=5)
    labels = nearest_centres(data, centres, top_k=3)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    similarity = unit @ centres.T
    np.testing.assert_array_equal(labels[:, 0], similarity.argmax(axis=1))
    ranked = np.take_along_axis(similarity, labels, axis=1)
    assert (np.diff(ranked, axis=1) <= 1e-6).all()


def test_kmeans_errors():
    data = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="6 centres from 5 samples"):
        kmeans(data, 6)
    with pytest.raises(ValueError, match="top_k"):
        nearest_centres(data, kmeans(data, 2), top_k=3)
    with pytest.raises(ValueError, match="4-dim"):
        nearest_centres(data, np.ones((2, 3), np.float32))


def test_build_concepts_rewrites_the_manifest(images, clip_teacher, tmp_path):
    out = tmp_path / "elsewhere" / "labelled.jsonl"
    summary = build_concepts(images, clip_teacher, 2, out, top_k=2, seed=0)
    centres = np.load(tmp_path / "elsewhere" / "labelled.centres.npy")
    assert centres.shape == (2, 16)
    assert summary["samples"] == 12 and summary["centres"] == 2 and summary["dim"] == 16
    original = [json.loads(line) for line in images.read_text().splitlines()]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written] == [r["id"] for r in original]
    assert [r["head"] for r in written] == [r["head"] for r in original]
    assert list(written[1]) == list(original[1])  # key order kept, labels in place
    for record in written:
        assert (out.parent / record["path"]).resolve() == (images.parent / f"images/{record['id']:02d}.png").resolve()
        assert len(record["labels"]) == 2 and set(record["labels"]) == {0, 1}
    # the red and blue images fall to different nearest centres
    firsts = [r["labels"][0] for r in written]
    assert len(set(firsts[:6])) == 1 and len(set(firsts[6:])) == 1 and firsts[0] != firsts[6]
    # labels are the nearest centres of the embeddings
    embeddings = embed_manifest(images, clip_teacher)
    np.testing.assert_array_equal(nearest_centres(embeddings, centres, 2), [r["labels"] for r in written])


def test_build_concepts_in_place_and_with_heads(images, videos, clip_teacher, tmp_path):
    mixed = write_manifest(
        videos.parent / "mixed.jsonl",
        [
            *[json.loads(line) for line in videos.read_text().splitlines()],
            {"path": str(images.parent / "images" / "05.png"), "head": "image", "labels": [7]},
        ],
    )
    with pytest.raises(ValueError, match="mixes video samples with image samples"):
        build_concepts(mixed, clip_teacher, 1, tmp_path / "x.jsonl", top_k=1)
    out = videos.parent / "labelled.jsonl"
    summary = build_concepts(
        mixed, clip_teacher, 2, out, centres_out=tmp_path / "c.npy", top_k=1, heads=["video"], frames=2
    )
    assert summary["videos"] == 2 and summary["images"] == 0 and summary["dim"] == 32
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written[0]["path"] == "a.mp4" and written[0]["selection"] == "sel/a.mp4" and written[0]["note"] == "first"
    assert written[1]["path"] == str(videos.parent / "b.mp4")
    assert sorted(written[0]["labels"] + written[1]["labels"]) == [0, 1]
    assert written[2]["labels"] == [7]  # not selected: copied unchanged
    assert np.load(tmp_path / "c.npy").shape == (2, 32)
    assert not list(videos.parent.glob(".*.tmp*"))


def test_selection_path_is_rewritten_for_another_folder(videos, clip_teacher, tmp_path):
    out = tmp_path / "deep" / "v.jsonl"
    build_concepts(videos, clip_teacher, 1, out, top_k=1, frames=1)
    written = json.loads(out.read_text().splitlines()[0])
    assert (out.parent / written["selection"]).resolve() == (videos.parent / "sel" / "a.mp4").resolve()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"head": "image"}', "no 'path'"),
        ('{"path": "missing.png"}', "missing.png: no such file"),
        ('{"path": "a.png", "head": "audio"}', "unknown head"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    noise_image(tmp_path / "a.png", 0, seed=0)
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"path": "a.png"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{message}"):
        read_records(manifest)
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{message}"):
        embed_manifest(manifest, "no-such-teacher-is-loaded-before-the-manifest-is-checked")


def test_unreadable_media_name_the_line(tmp_path, clip_teacher):
    (tmp_path / "fake.png").write_text("not an image")
    (tmp_path / "fake.mp4").write_text("not a video")
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": "fake.png"}])
    with pytest.raises(ValueError, match=r"m\.jsonl:1: .*fake\.png: cannot be read as an image"):
        embed_manifest(manifest, clip_teacher)
    manifest = write_manifest(tmp_path / "v.jsonl", [{"path": "fake.mp4", "head": "video"}])
    with pytest.raises(ValueError, match=r"v\.jsonl:1: .*fake\.mp4"):
        embed_manifest(manifest, clip_teacher)


def parse(*argv):
    parser = argparse.ArgumentParser(prog="onevision")
    concepts_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["concepts", *map(str, argv)])


def test_cli_end_to_end(images, clip_teacher, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    args = parse(images, "--teacher", clip_teacher, "--centres", "3", "--out", out, "--top-k", "2", "--device", "cpu")
    assert args.centres_out is None and args.frames == 8 and args.batch_size == 16 and args.iterations == 20
    assert concepts_cmd.run(args) == 0
    printed = capsys.readouterr()
    assert "12 samples" in printed.out and "3 centres" in printed.out and str(out) in printed.out
    assert "embedded 12/12 samples" in printed.err
    assert np.load(tmp_path / "cli.centres.npy").shape == (3, 16)
    assert all(len(json.loads(line)["labels"]) == 2 for line in out.read_text().splitlines())


def test_cli_errors_are_exceptions(images, clip_teacher, tmp_path):
    with pytest.raises(UsageError, match="--top-k 3 is more than --centres 2"):
        concepts_cmd.run(
            parse(images, "--teacher", clip_teacher, "--centres", "2", "--top-k", "3", "--out", tmp_path / "o.jsonl")
        )
    with pytest.raises(UsageError, match="13 centres from 12 samples"):
        concepts_cmd.run(
            parse(images, "--teacher", clip_teacher, "--centres", "13", "--top-k", "1", "--out", tmp_path / "o.jsonl")
        )
    assert not (tmp_path / "o.jsonl").exists()
    with pytest.raises(SystemExit):
        parse(images, "--centres", "2", "--out", tmp_path / "o.jsonl")  # --teacher is required


def test_full_clip_model_teacher_uses_image_features(images, tmp_path):
    folder = tmp_path / "clip"
    torch.manual_seed(0)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = transformers.CLIPConfig(
        text_config={**tower, "vocab_size": 64}, vision_config={**tower, "image_size": 32, "patch_size": 16}
    )
    config.projection_dim = 8
    transformers.CLIPModel(config).save_pretrained(folder)
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor_class(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    embeddings = embed_manifest(images, folder)
    assert embeddings.shape == (12, 8)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)


def test_through_the_command_line_entry_point(images, clip_teacher, tmp_path, monkeypatch, capsys):
    cli_main = importlib.import_module("onevision_encoder.cli.main")  # the package exports main() by that name
    monkeypatch.setitem(cli_main.SUBCOMMANDS, "concepts", concepts_cmd)
    out = tmp_path / "main.jsonl"
    argv = ["concepts", str(images), "--teacher", str(clip_teacher), "--centres", "2", "--top-k", "1"]
    assert cli_main.main([*argv, "--out", str(out)]) == 0
    assert out.is_file() and "12 samples" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "x.png"}\n')
    argv[1] = str(bad)
    assert cli_main.main([*argv, "--out", str(tmp_path / "never.jsonl")]) == 1
    assert f"error: {bad}:1: {tmp_path / 'x.png'}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "never.jsonl").exists()
