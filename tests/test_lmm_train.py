"""`onevision lmm-train`: the LMM probe trained with transformers' Trainer on what `preprocess --pack` writes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from test_llava import tiny_text_config
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedTokenizerFast,
    Qwen2ForCausalLM,
)

from onevision_encoder import OneVisionEncoderConfig, OneVisionEncoderModel
from onevision_encoder.cli.main import main
from onevision_encoder.lmm.data import (
    ConversationCollator,
    ConversationDataset,
    ConversationSource,
    SkippedItems,
)
from onevision_encoder.lmm.training import build_model_and_processor, load_lmm_config
from onevision_encoder.video.synthetic import make_clip, write_clip

WORDS = ["user", "assistant", ":", "describe", "the", "picture", "clip", "what", "is", "a", "red", "cat", "blue", "dog"]
VIDEO_ANSWER, IMAGE_ANSWER, TEXT_ANSWER = "a red cat", "a blue dog", "a dog"
# 8 mosaics of 32x32 pixels in 4-pixel patches, merged 2x2: 16 tokens each.
SELECTION = ["--size", "32", "--patch-size", "4", "-k", str(8 * 64), "--frames", "16"]
VIDEO_TOKENS = 8 * 16


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer without the placeholders (lmm-train adds them) and without a chat template."""
    vocab = {word: index for index, word in enumerate(["<pad>", "<unk>", "<eos>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def turns(prompt: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny encoder and LM (with its tokenizer) saved as folders, a video packed by `preprocess --pack
    --conversations`, an image conversation file, and a config joining them."""
    root = tmp_path_factory.mktemp("lmm")
    torch.manual_seed(0)
    encoder = OneVisionEncoderModel(
        OneVisionEncoderConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=4
        )
    )
    encoder.save_pretrained(root / "encoder")
    tokenizer = make_tokenizer()
    # The placeholders are not in the tokenizer yet: lmm-train adds them and resizes these (tied) embeddings.
    language_model = Qwen2ForCausalLM(tiny_text_config(tokenizer, max_position_embeddings=256))
    language_model.save_pretrained(root / "lm")
    # Apart: in the LM's folder transformers 5 would read it as the Qwen2 tokenizer its config.json names.
    tokenizer.save_pretrained(root / "tokenizer")

    videos = root / "videos"
    write_clip(videos / "walk.mp4", make_clip("moving_object", num_frames=16, size=(48, 64)))
    (root / "llava.json").write_text(json.dumps([{"id": "v", "video": "walk.mp4", "conversations": turns(
        "<video>\ndescribe the clip", VIDEO_ANSWER)}]))  # fmt: skip
    code = main(["preprocess", str(videos), "--preset", "lmm", "--pack", "--conversations", str(root / "llava.json"),
                 "--out", str(root / "packed"), *SELECTION])  # fmt: skip
    assert code == 0

    (root / "images").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "images" / "red.png")
    items = [
        {"id": "i", "image": "red.png", "conversations": turns("describe the picture <image>", IMAGE_ANSWER)},
        {"id": "t", "conversations": turns("what is a dog", TEXT_ANSWER)},
    ]
    (root / "images" / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    write_config(root / "lmm.yaml")
    return root


def write_config(path: Path, **changes) -> Path:
    config = {
        "model": {"encoder": "encoder", "language_model": "lm", "tokenizer": "tokenizer",
                  "image_processor": {"min_pixels": 64, "max_pixels": 1024}},
        "train": {"vision_tower": False},
        "data": {"conversations": ["packed/conversations.packed.json", {"path": "images/items.jsonl"}]},
        "trainer": {"per_device_train_batch_size": 3, "learning_rate": 0.01, "max_steps": 25, "logging_steps": 1,
                    "save_steps": 10, "use_cpu": True, "seed": 0, "lr_scheduler_type": "constant"},
    }  # fmt: skip
    for section, values in changes.items():
        config[section] = {**config[section], **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(config))
    return path


def lmm_train(capsys, *args) -> tuple[int, str]:
    code = main(["lmm-train", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def losses(out: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


@pytest.fixture(scope="module")
def trained(workspace) -> Path:
    out = workspace / "run"
    assert main(["lmm-train", "--config", str(workspace / "lmm.yaml"), "--out", str(out)]) == 0
    return out


def test_samples_learn_only_the_answers(workspace):
    config = load_lmm_config(workspace / "lmm.yaml")
    _, processor = build_model_and_processor(config)
    sources = [ConversationSource(workspace / "packed" / "conversations.packed.json")]
    sources.append(ConversationSource(workspace / "images" / "items.jsonl"))
    dataset = ConversationDataset(sources, processor)
    video, image, text = (dataset[n] for n in range(3))
    tokenizer = processor.tokenizer
    for sample, answer in ((video, VIDEO_ANSWER), (image, IMAGE_ANSWER), (text, TEXT_ANSWER)):
        learnt = sample["labels"][sample["labels"] != -100]
        # The answer and its end, nothing of the prompt.
        assert tokenizer.convert_ids_to_tokens(learnt.tolist()) == [*answer.split(), "<eos>"]
    # The packed item's 8 <image> mosaics are one video: 8 x 16 video placeholders, its positions from the pack.
    assert int((video["input_ids"] == processor.video_token_id).sum()) == VIDEO_TOKENS
    assert video["pixel_values_videos"][0].shape == (8, 3, 32, 32)
    positions = np.load(workspace / "packed" / "walk.mp4" / "positions_thw.npy")
    assert torch.equal(video["video_positions_thw"][0], torch.from_numpy(positions).long())
    image_tokens = int((image["input_ids"] == processor.image_token_id).sum())
    assert image_tokens == processor.token_count(image["pixel_values"][0]) > 0

    batch = ConversationCollator(tokenizer.pad_token_id)([video, image, text])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert int(batch["attention_mask"][2].sum()) == len(text["input_ids"])
    assert len(batch["pixel_values"]) == len(batch["pixel_values_videos"]) == 1


def test_training_drives_the_loss_down_and_saves_a_loadable_model(workspace, trained):
    history = losses(trained)
    assert sorted(history) == list(range(1, 26))
    assert np.mean([history[s] for s in (23, 24, 25)]) < 0.3 * np.mean([history[s] for s in (1, 2, 3)])

    model = AutoModelForImageTextToText.from_pretrained(trained / "final").eval()
    processor = AutoProcessor.from_pretrained(trained / "final")
    # The frozen encoder is the encoder folder's; the language model learnt (and grew the two placeholders).
    encoder = load_file(workspace / "encoder" / "model.safetensors")
    for name, value in model.vision_tower.state_dict().items():
        assert torch.equal(value, encoder[name]), name
    start = Qwen2ForCausalLM.from_pretrained(workspace / "lm")
    assert model.language_model.get_input_embeddings().num_embeddings == len(make_tokenizer()) + 2
    assert not torch.equal(model.language_model.model.norm.weight, start.model.norm.weight)

    # The trained model answers the packed video with its answer, through the processor saved beside it.
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": "<video>\ndescribe the clip"}], tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=prompt, videos=workspace / "packed" / "walk.mp4")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    answer = processor.tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :])
    assert answer.startswith(VIDEO_ANSWER)


def test_resume_continues_the_run_as_if_never_stopped(workspace, tmp_path, capsys):
    config = write_config(
        workspace / "short.yaml", train={"projector_lr": 0.005}, trainer={"max_steps": 4, "save_steps": 2}
    )  # the optimiser's per-part groups restored too
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert lmm_train(capsys, "--config", config, "--out", whole, "--max-steps", 4)[0] == 0
    assert lmm_train(capsys, "--config", config, "--out", stopped, "--max-steps", 2)[0] == 0

    code, output = lmm_train(capsys, "--config", config, "--out", stopped, "--max-steps", 4)
    assert code == 2 and "already holds a run" in output and "--resume" in output
    code, output = lmm_train(capsys, "--config", config, "--out", stopped, "--max-steps", 4, "--resume")
    assert code == 0, output
    assert sorted(losses(stopped)) == [1, 2, 3, 4]
    assert losses(stopped) == pytest.approx(losses(whole), rel=1e-5)
    resumed = load_file(stopped / "final" / "model.safetensors")
    for name, value in load_file(whole / "final" / "model.safetensors").items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)

    code, output = lmm_train(capsys, "--config", config, "--out", stopped, "--max-steps", 1, "--overwrite")
    assert code == 0, output
    assert sorted(losses(stopped)) == [1] and not (stopped / "checkpoint-4").exists()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"model": {"colour": 1}}, "model: unknown key(s) ['colour']"),
        ({"train": {"vision_tower": False, "projector": False, "language_model": False}}, "train freezes every part"),
        ({"trainer": {"per_device_batch": 1}}, "trainer:"),
        ({"trainer": ["max_steps", 1]}, "trainer: expected a mapping"),
        ({"data": {"conversations": ["missing.json"]}}, "missing.json: cannot read"),
        ({"train": {"vision_tower_lr": 1e-5}}, "train.vision_tower_lr is set but train.vision_tower is false"),
        ({"train": {"projector_lr": "fast"}}, "train.projector_lr must be a positive number, got 'fast'"),
        ({"train": {"projector_lr": True}}, "train.projector_lr must be a positive number, got True"),
        ({"train": {"projector_lr": -1e-5}}, "train.projector_lr must be a positive number"),
    ],
)
def test_bad_configs_are_usage_errors(workspace, capsys, change, problem):
    config = write_config(workspace / "bad.yaml", **change)
    code, output = lmm_train(capsys, "--config", config, "--out", workspace / "bad-run")
    assert code == 2 and problem in output
    assert not (workspace / "bad-run" / "final").exists()


def test_a_missing_image_names_the_item(workspace, capsys):
    items = workspace / "images" / "broken.json"
    items.write_text(json.dumps([{"id": "x", "image": "gone.png", "conversations": turns("<image>", "a dog")}]))
    config = write_config(workspace / "broken.yaml", data={"conversations": ["images/broken.json"]})
    code, output = lmm_train(capsys, "--config", config, "--out", workspace / "broken-run")
    assert code == 2 and f"{items}: item 1: gone.png: no such file" in output


def test_an_unreadable_image_names_the_item_and_the_file(workspace):
    (workspace / "images" / "broken.png").write_bytes(b"not a picture")
    items = workspace / "images" / "unreadable.json"
    items.write_text(json.dumps([{"id": "x", "image": "broken.png", "conversations": turns("<image>", "a dog")}]))
    _, processor = build_model_and_processor(load_lmm_config(workspace / "lmm.yaml"))
    dataset = ConversationDataset([ConversationSource(items)], processor)
    with pytest.raises(ValueError, match=r"unreadable.json: item 1: .*broken.png: cannot be read as an image"):
        dataset[0]


def test_an_item_over_max_length_is_skipped_and_recorded_as_it_is_met(workspace, tmp_path):
    _, processor = build_model_and_processor(load_lmm_config(workspace / "lmm.yaml"))
    packed = workspace / "packed" / "conversations.packed.json"
    sources = [ConversationSource(packed), ConversationSource(workspace / "images" / "items.jsonl")]
    video, image, text = (len(ConversationDataset(sources, processor)[n]["input_ids"]) for n in range(3))
    assert video > max(image, text)
    record = tmp_path / "skipped.jsonl"
    dataset = ConversationDataset(sources, processor, max_length=video - 1, skipped=SkippedItems(record))

    # The video item is too long: the next item (the image) takes its place, and the record is on disk at once.
    assert torch.equal(dataset[0]["input_ids"], dataset[1]["input_ids"])
    expected = {"item": f"{packed}: item 1", "reason": f"{video} tokens, more than max_length {video - 1}"}
    assert [json.loads(line) for line in record.read_text().splitlines()] == [expected]
    # Met again, here or by a fresh copy (another epoch's worker, another rank): recorded once.
    dataset[0]
    ConversationDataset(sources, processor, max_length=video - 1, skipped=SkippedItems(record))[0]
    assert record.read_text().count("\n") == 1

    nothing_fits = ConversationDataset(sources, processor, max_length=2, skipped=SkippedItems(tmp_path / "all.jsonl"))
    with pytest.raises(ValueError, match=r"all 3 items are longer than max_length 2 tokens: raise data\.max_length"):
        nothing_fits[1]
    assert len(SkippedItems(tmp_path / "all.jsonl").items()) == 3


def test_lmm_train_skips_an_item_over_max_length_and_reports_it(workspace, tmp_path, capsys, caplog):
    config = write_config(workspace / "long.yaml", data={"max_length": 60}, trainer={"max_steps": 2})
    code, output = lmm_train(capsys, "--config", config, "--out", tmp_path / "run")
    assert code == 0, output
    packed = workspace / "packed" / "conversations.packed.json"
    records = [json.loads(line) for line in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert [record["item"] for record in records] == [f"{packed}: item 1"]
    assert "more than max_length 60" in records[0]["reason"]
    assert f"1 item(s) skipped, over data.max_length: {tmp_path / 'run' / 'skipped.jsonl'}" in output
    assert f"skipped {packed}: item 1: " in caplog.text
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    # The record is the run's: --overwrite deletes it with the run, and a run that skips nothing writes none.
    unlimited = write_config(workspace / "unlimited.yaml", trainer={"max_steps": 1})
    code, output = lmm_train(capsys, "--config", unlimited, "--out", tmp_path / "run", "--overwrite")
    assert code == 0, output
    assert not (tmp_path / "run" / "skipped.jsonl").exists() and "skipped" not in output


def test_the_shipped_stage2_config_reads(tmp_path):
    from transformers import TrainingArguments

    config = load_lmm_config(Path(__file__).resolve().parents[1] / "configs" / "lmm-stage2.yaml")
    assert (config.model.encoder, config.model.language_model) == (
        "lmms-lab-encoder/onevision-encoder-large",
        "Qwen/Qwen2.5-1.5B-Instruct",
    )
    assert config.model.video_selection == {}  # the processor selects in the encoder's patches
    assert config.train.rates() == {"vision_tower": 2e-6}
    assert TrainingArguments(output_dir=str(tmp_path), **{**config.trainer, "bf16": False}).learning_rate == 1e-5


def test_resume_without_a_checkpoint_is_a_usage_error(workspace, tmp_path, capsys):
    code, output = lmm_train(capsys, "--config", workspace / "lmm.yaml", "--out", tmp_path / "new", "--resume")
    assert code == 2 and "no complete checkpoint-N folder" in output


def test_every_trainable_parameter_gets_a_gradient(workspace):
    """What DDP needs of a model whose tower trains: the blocks after the feature layer (-2), the final norm
    and the pooling head never reach the LM, so they are frozen; everything else trainable gets a gradient."""
    config = load_lmm_config(write_config(workspace / "all.yaml", train={"vision_tower": True}))
    model, processor = build_model_and_processor(config)
    sources = [ConversationSource(workspace / "packed" / "conversations.packed.json")]
    sources.append(ConversationSource(workspace / "images" / "items.jsonl"))
    dataset = ConversationDataset(sources, processor)
    batch = ConversationCollator(processor.tokenizer.pad_token_id)([dataset[n] for n in range(3)])
    model(**batch).loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert [name for name, p in trainable.items() if p.grad is None] == []
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(("vision_tower.encoder.layers.1.", "vision_tower.head.",
                                           "vision_tower.layernorm_post.")) for name in frozen)  # fmt: skip
    assert any(name.startswith("vision_tower.encoder.layers.0.") for name in trainable)


def test_each_part_learns_at_its_own_rate(workspace, tmp_path, capsys):
    """One AdamW step moves a weight by about its learning rate (the first step normalises the gradient):
    the tower, the projector and the LM each moved by their own."""
    from transformers import set_seed

    rates = {"vision_tower": 1e-4, "projector": 1e-3, "language_model": 1e-2}  # the LM's: trainer.learning_rate
    config = write_config(
        workspace / "rates.yaml",
        train={"vision_tower": True, "vision_tower_lr": "1e-4", "projector_lr": 1e-3},  # YAML reads 1e-4 as text
    )
    set_seed(0)  # as lmm-train does before building: the same new projector
    start, _ = build_model_and_processor(load_lmm_config(config))
    assert lmm_train(capsys, "--config", config, "--out", tmp_path / "run", "--max-steps", 1)[0] == 0
    trained = load_file(tmp_path / "run" / "final" / "model.safetensors")
    moved = {part: 0.0 for part in rates}
    for name, value in start.state_dict().items():
        part = "projector" if name.startswith("multi_modal_projector.") else name.split(".")[0]
        if part in moved and name in trained:
            moved[part] = max(moved[part], (trained[name] - value).abs().max().item())
    for part, rate in rates.items():
        assert moved[part] == pytest.approx(rate, rel=0.02), part


def test_per_part_rates_refuse_an_optimiser_that_deepspeed_builds():
    """A DeepSpeed config with an optimizer section: DeepSpeed builds the optimiser, not the Trainer, and
    would drop the parts' rates (DeepSpeed is not installed here, so its parsed config stands in)."""
    from types import SimpleNamespace

    from onevision_encoder.lmm.training import deepspeed_builds_optimiser

    def args(config):
        return SimpleNamespace(deepspeed="ds.json", hf_deepspeed_config=SimpleNamespace(config=config))

    assert deepspeed_builds_optimiser(args({"optimizer": {"type": "AdamW"}, "zero_optimization": {"stage": 3}}))
    assert not deepspeed_builds_optimiser(args({"zero_optimization": {"stage": 3}}))
    assert not deepspeed_builds_optimiser(SimpleNamespace(deepspeed=None))


def test_parameter_names_under_wrappers_find_their_part():
    from onevision_encoder.lmm.trainer import part_of

    assert part_of("_fsdp_wrapped_module.vision_tower._fsdp_wrapped_module.encoder.layers.0.mlp.fc1.weight") == (
        "vision_tower"
    )
    assert part_of("module.language_model.model.layers.0.self_attn.q_proj.weight") == "language_model"
    assert part_of("multi_modal_projector.linear_1.weight") == "projector"
    assert part_of("lm_head.weight") is None


def test_the_lmm_train_example_runs_as_documented(tmp_path):
    """docs/lmm.md's three commands of examples/lmm-train/, as printed there, with its folder in a temporary one:
    they train the tiny model on the generated data, which then answers with what it learnt, and they write
    nothing into the repository."""
    root = Path(__file__).resolve().parents[1]
    section = (root / "docs" / "lmm.md").read_text().split("## A first LMM training run", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [line.replace("runs/lmm-example", str(tmp_path / "example")) for line in block.splitlines()]
    assert len(commands) == 3 and commands[0].startswith("python examples/lmm-train/prepare.py")
    before = sorted(path for path in (root / "examples").rglob("*"))
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=root, env=environment, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    assert sorted(path for path in (root / "examples").rglob("*")) == before

    run = tmp_path / "example" / "run"
    history = losses(run)
    assert sorted(history) == list(range(5, 41, 5))
    assert history[40] < 0.25 * history[5]
    assert outputs[2].strip() == "the camera pans while a red square moves"
    # Run again into the same folder: refused, the earlier data untouched.
    again = subprocess.run(["bash", "-c", commands[0]], cwd=root, env=environment, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stdout + again.stderr
