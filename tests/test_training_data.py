"""Manifests, streams, batch composition, schedule and config of the trainer."""

import json
import tarfile

import numpy as np
import pytest
import torch
from conftest import cut_after, write_stream

from onevision_encoder.codec import select_patches
from onevision_encoder.codec.frames import read_frames, sample_frame_ids
from onevision_encoder.model import OneVisionEncoderImageProcessor
from onevision_encoder.training.batches import bin_slots, image_batch, split_counts, video_batch
from onevision_encoder.training.config import VideoSettings, load_config
from onevision_encoder.training.data import HeadStream, ManifestError, Sample, read_manifest, read_shards
from onevision_encoder.training.schedule import learning_rate_factor
from onevision_encoder.training.seeds import mix_seed, sample_seed
from onevision_encoder.training.synthetic import make_synthetic_dataset
from onevision_encoder.video import chunk_visible_indices, mosaic
from onevision_encoder.video.synthetic import make_clip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-data")
    manifest = make_synthetic_dataset(folder, num_classes=4, images=8, ocr=4, videos=8, video_frames=24)
    return folder, manifest


def test_schedule_values_at_known_steps():
    values = [learning_rate_factor(step, 25, warmup_steps=5, power=2.0, min_ratio=0.0) for step in range(26)]
    assert values[0] == pytest.approx(0.2)  # the first step is already warmed up
    assert values[4] == pytest.approx(1.0) and values[5] == pytest.approx(1.0)
    assert values[15] == pytest.approx(0.25)  # (1 - 10/20) ** 2: really quadratic, not linear
    assert values[25] == pytest.approx(0.0)
    assert learning_rate_factor(15, 25, 5, 2.0, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.25)
    assert learning_rate_factor(3, 10, 0, 1.0, 0.0) == pytest.approx(0.7)


def test_manifest_reads_and_resolves_paths(dataset):
    folder, manifest = dataset
    samples = read_manifest(manifest)
    assert len(samples) == 20
    assert {s.head for s in samples} == {"image", "ocr", "video"}
    assert all(s.path.is_file() and s.path.is_relative_to(folder) for s in samples)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"m\.jsonl:2: not valid JSON"),
        ('{"head": "image", "labels": [1]}', r"m\.jsonl:2: no 'path'"),
        ('{"path": "nope.png", "labels": [1]}', r"m\.jsonl:2: .*nope\.png: no such file"),
        ('{"path": "a.png", "labels": []}', r"m\.jsonl:2: 'labels' must be a non-empty list"),
        ('{"path": "a.png", "labels": [-3]}', r"m\.jsonl:2: 'labels' must be"),
        ('{"path": "a.png", "head": "audio", "labels": [1]}', r"m\.jsonl:2: unknown head 'audio'"),
        ('{"path": "a.png", "labels": [1], "selection": "sel"}', r"m\.jsonl:2: selection .*sel: no such folder"),
    ],
)
def test_bad_manifest_lines_are_named(tmp_path, line, message):
    (tmp_path / "a.png").write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a.png", "labels": [0]}\n' + line + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(manifest)


def test_tar_shards(dataset, tmp_path):
    folder, manifest = dataset
    records = [json.loads(line) for line in manifest.read_text().splitlines()][:3]
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as archive:
        for number, record in enumerate(records):
            key = f"sample{number:03d}"
            media = folder / record["path"]
            archive.add(media, arcname=key + media.suffix)
            meta = tmp_path / f"{key}.json"
            meta.write_text(json.dumps({"head": record["head"], "labels": record["labels"]}))
            archive.add(meta, arcname=f"{key}.json")
    samples = read_shards([shard])
    assert [s.labels for s in samples] == [tuple(r["labels"]) for r in records]
    assert all(s.path.is_file() for s in samples)


def test_streams_give_the_same_global_order_on_any_world_size():
    samples = [Sample(path=__import__("pathlib").Path(f"{i}.png"), head="image", labels=(i,)) for i in range(10)]
    one = HeadStream(samples, 0, seed=3)
    two = [HeadStream(samples, 0, seed=3) for _ in range(2)]
    for _ in range(7):  # crosses epochs
        whole = one.next_batch(4, rank=0, world=1)
        halves = two[0].next_batch(2, rank=0, world=2) + two[1].next_batch(2, rank=1, world=2)
        assert whole == halves
    assert one.state_dict() == two[0].state_dict() == two[1].state_dict()
    resumed = HeadStream(samples, 0, seed=3)
    resumed.load_state_dict(one.state_dict())
    assert resumed.next_batch(4, 0, 1) == one.next_batch(4, 0, 1)


def test_seeds_keep_their_numbers():
    """Checkpoints depend on them: the data order and augmentations (sample_seed), the loss's centres and draws
    (mix_seed). The two mixes differ; neither may change."""
    assert [sample_seed(*v) for v in [(0,), (1, 2), (123456789, 5, 7, 9), (7, 0, 1, 2, 3)]] == [
        2968811710,
        1596810411,
        3916896170,
        170488340,
    ]
    assert [mix_seed(*v) for v in [(0,), (1, 2), (123456789, 5, 7, 9), (-1, 2)]] == [
        7070836379803831727,
        4384777280886605419,
        841322222526056109,
        5886236958684341581,
    ]


def test_video_split_counts():
    assert split_counts(16, {"codec": 0.5, "sampling": 0.375, "collage": 0.125}) == {
        "codec": 8,
        "sampling": 6,
        "collage": 2,
    }
    assert sum(split_counts(5, {"codec": 0.5, "sampling": 0.375, "collage": 0.125}).values()) == 5
    with pytest.raises(ValueError, match="ratios"):
        split_counts(4, {"codec": 0})


def test_video_batch_matches_a_hand_built_batch(dataset, tmp_path):
    _, manifest = dataset
    videos = [s for s in read_manifest(manifest) if s.head == "video"][:8]
    # The first codec sample carries a precomputed selection; the others are selected on the fly.
    selected = select_patches(videos[0].path, num_patches=128, size=56, patch_size=14)
    folder = selected.save(tmp_path / "sel")
    videos[0] = Sample(videos[0].path, "video", videos[0].labels, folder, "m:1")
    picks = [(sample, 1000 + index) for index, sample in enumerate(videos)]
    settings = VideoSettings(resolution=56, patch_size=14, num_frames=64, num_patches=128)
    batch = video_batch(picks, settings)
    assert batch.modes == ["codec"] * 4 + ["sampling"] * 3 + ["collage"]
    assert [tuple(f["pixel_values"].shape) for f in batch.forwards] == [(7, 3, 8, 56, 56), (1, 3, 448, 56)]
    assert batch.tokens(14) == 7 * 128 + 128

    processor = OneVisionEncoderImageProcessor(
        video_size={"shortest_edge": 56}, video_crop_size={"height": 56, "width": 56}
    )
    # codec with the precomputed selection: its frame_ids' frames, its patches, re-tiled with true positions
    clip = processor(videos=[read_frames(videos[0].path, selected.frame_ids)])["pixel_values_videos"]
    tiles, indices = mosaic(clip, torch.from_numpy(selected.visible_indices), 14)
    torch.testing.assert_close(batch.forwards[0]["pixel_values"][0], tiles[0])
    assert torch.equal(batch.forwards[0]["visible_indices"][0], indices[0])
    # frame sampling: one frame per 8-frame bin, all their patches placed at those grid frames
    slots = bin_slots(1004, 64)
    assert all(8 * b <= slot < 8 * (b + 1) for b, slot in enumerate(slots))
    frame_ids = sample_frame_ids(24, 64)[slots]
    sampled = processor(videos=[read_frames(videos[4].path, frame_ids)])["pixel_values_videos"][0]
    torch.testing.assert_close(batch.forwards[0]["pixel_values"][4], sampled)
    assert torch.equal(batch.forwards[0]["visible_indices"][4], chunk_visible_indices(torch.from_numpy(slots), (4, 4)))
    # collage: the 8 bin-sampled frames stacked top to bottom in one image
    slots = bin_slots(1007, 64)
    frames = processor(videos=[read_frames(videos[7].path, sample_frame_ids(24, 64)[slots])])["pixel_values_videos"][0]
    torch.testing.assert_close(batch.forwards[1]["pixel_values"][0], torch.cat(list(frames.unbind(1)), dim=1))
    assert batch.labels.tolist() == [[s.labels[0]] for s in videos]


def test_image_batch_is_reproducible_from_the_seeds(dataset):
    _, manifest = dataset
    images = [s for s in read_manifest(manifest) if s.head == "image"][:4]
    picks = [(sample, index) for index, sample in enumerate(images)]
    first, again = image_batch(picks, 56), image_batch(picks, 56)
    assert first.forwards[0]["pixel_values"].shape == (4, 3, 56, 56)
    assert torch.equal(first.forwards[0]["pixel_values"], again.forwards[0]["pixel_values"])
    other = image_batch([(s, seed + 100) for s, seed in picks], 56)
    assert not torch.equal(first.forwards[0]["pixel_values"], other.forwards[0]["pixel_values"])
    assert first.labels.shape == (4, 1)


def test_an_unreadable_image_names_its_manifest_line_and_file(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a picture")
    sample = Sample(fake, "image", (0,), None, "m.jsonl:3")
    with pytest.raises(ManifestError, match=rf"^m\.jsonl:3: {fake}: cannot be read as an image"):
        image_batch([(sample, 0)], 56)


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("heads: {image: {num_classes: 4}}\ndata: {manifest: m.jsonl}\noptim: {learning_rate: 1}\n")
    with pytest.raises(ValueError, match=r"optim: unknown key\(s\) \['learning_rate'\]"):
        load_config(path)
    path.write_text("heads: {audio: {}}\ndata: {manifest: m.jsonl}\n")
    with pytest.raises(ValueError, match="heads must be some of image, ocr, video"):
        load_config(path)
    path.write_text("heads: {image: {}, video: {}}\ndata: {manifest: m.jsonl}\n")
    config = load_config(path, {"train.max_steps": 7})
    assert config.train.max_steps == 7
    assert (config.heads["image"].resolution, config.heads["video"].resolution) == (448, 224)  # as the release
    assert load_config(path).resolve("m.jsonl") == tmp_path.resolve() / "m.jsonl"


def test_the_video_head_defaults_are_the_batch_settings_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {manifest: m.jsonl}\nheads: {video: {}, image: {}}\n")
    config = load_config(path)
    assert config.heads["video"].video(VideoSettings.patch_size) == VideoSettings()
    assert config.heads["image"].resolution == 448


def test_synthetic_labels_follow_the_pictures(dataset):
    _, manifest = dataset
    samples = read_manifest(manifest)
    assert sorted({s.labels[0] for s in samples if s.head == "image"}) == [0, 1, 2, 3]
    assert np.all([len(s.labels) >= 1 for s in samples])


def test_a_selection_of_a_truncated_video_trains_on_the_frames_it_was_made_from(tmp_path):
    whole = write_stream(tmp_path / "whole.webm", make_clip("moving_object", num_frames=24).frames, "libvpx-vp9")
    cut = cut_after(whole, tmp_path / "cut.webm", 12)
    selected = select_patches(cut, num_patches=128, size=56, patch_size=14, allow_truncated=True)
    sample = Sample(cut, "video", [1], selected.save(tmp_path / "sel"), "m:1")
    settings = VideoSettings(resolution=56, patch_size=14, num_frames=64, num_patches=128, ratios={"codec": 1.0})
    batch = video_batch([(sample, 1000)], settings)
    assert batch.modes == ["codec"]
    assert tuple(batch.forwards[0]["visible_indices"].shape) == (1, 128)
