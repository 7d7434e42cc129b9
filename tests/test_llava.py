"""The LMM probe (OneVisionLlavaForConditionalGeneration): a tiny encoder, a tiny Qwen2 and a test-built tokenizer."""

import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

from onevision_encoder import (
    OneVisionEncoderConfig,
    OneVisionEncoderModel,
    OneVisionLlavaConfig,
    OneVisionLlavaForConditionalGeneration,
    indices_to_positions,
)

LMM_PAGE = Path(__file__).resolve().parents[1] / "docs" / "lmm.md"
WORDS = ["user", "assistant", ":", "describe", "the", "picture", "clip", "a", "red", "cat", "blue", "dog", "jumps"]
PATCH, MERGE = 4, 2
IMAGE_TOKENS = (16 // PATCH // MERGE) * (24 // PATCH // MERGE)  # a 16x24 image: 6 merged tokens
VIDEO_TOKENS = 2 * (16 // PATCH // MERGE) ** 2  # 2 mosaics of 16x16: 8 merged tokens


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: index for index, word in enumerate(["<pad>", "<unk>", "<eos>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    return tokenizer


def make_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, patch_size: int = PATCH, max_position_embeddings: int = 128
) -> OneVisionLlavaForConditionalGeneration:
    torch.manual_seed(seed)
    config = OneVisionLlavaConfig(
        # Weights large enough that the random encoder's attention is far from uniform, so positions matter.
        vision_config=OneVisionEncoderConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            patch_size=patch_size,
            initializer_range=0.2,
        ),
        # A dict with model_type, as config.json holds it.
        text_config=tiny_text_config(tokenizer, max_position_embeddings).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
    )
    return OneVisionLlavaForConditionalGeneration(config).eval()


def tiny_text_config(tokenizer: PreTrainedTokenizerFast, max_position_embeddings: int = 128) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,  # as the small Qwen2 releases: tied weights must survive saving and loading
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def vision_inputs(seed: int = 0) -> dict:
    """An image at native size and a codec video: 2 mosaics of 16x16 with the (t, h, w) of their 32 patches."""
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(64 * 16, generator=generator)[:32].sort().values  # 32 patches of a 64-frame 4x4 grid
    return {
        "pixel_values": [torch.randn(3, 16, 24, generator=generator)],
        "pixel_values_videos": [torch.randn(2, 3, 16, 16, generator=generator)],
        "video_positions_thw": [indices_to_positions(indices, (4, 4))],
    }


def conversation(tokenizer: PreTrainedTokenizerFast, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids and labels of one exchange: only the answer is learnt (the caller masks the prompt)."""
    prompt_ids = tokenizer(f"user : {prompt} assistant :", add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def batch(tokenizer: PreTrainedTokenizerFast, image_tokens: int = IMAGE_TOKENS, padding_side: str = "right") -> dict:
    """Sample 0 asks about the image, sample 1 about the video; padded to one length."""
    samples = [
        conversation(tokenizer, "describe the picture " + "<image> " * image_tokens, "a red cat"),
        conversation(tokenizer, "describe the clip " + "<video> " * VIDEO_TOKENS, "a blue dog jumps"),
    ]
    length = max(len(ids) for ids, _ in samples)
    input_ids, labels, mask = [], [], []
    for ids, targets in samples:
        pad = length - len(ids)
        if padding_side == "left":
            input_ids.append([tokenizer.pad_token_id] * pad + ids)
            labels.append([-100] * pad + targets)
            mask.append([0] * pad + [1] * len(ids))
        else:
            input_ids.append(ids + [tokenizer.pad_token_id] * pad)
            labels.append(targets + [-100] * pad)
            mask.append([1] * len(ids) + [0] * pad)
    return {
        "input_ids": torch.tensor(input_ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
        **vision_inputs(),
    }


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


def test_config_round_trip_and_auto(tokenizer):
    config = make_model(tokenizer).config
    loaded = AutoConfig.for_model(**config.to_dict())
    assert isinstance(loaded, OneVisionLlavaConfig)
    assert isinstance(loaded.vision_config, OneVisionEncoderConfig) and loaded.vision_config.patch_size == PATCH
    assert isinstance(loaded.text_config, Qwen2Config) and loaded.text_config.hidden_size == 32
    assert (loaded.vision_feature_layer, loaded.spatial_merge) == (-2, 2)
    assert loaded.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert OneVisionLlavaConfig().text_config.model_type == "qwen2"  # default-constructible, as transformers needs


def test_mixed_batch_forward_loss_and_gradients(tokenizer):
    model = make_model(tokenizer).train()
    inputs = batch(tokenizer)
    images, videos = model.get_vision_features(
        inputs["pixel_values"], inputs["pixel_values_videos"], inputs["video_positions_thw"]
    )
    assert [part.features.shape for part in images] == [(IMAGE_TOKENS, 32)]
    assert [part.features.shape for part in videos] == [(VIDEO_TOKENS, 32)]
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == IMAGE_TOKENS
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) == VIDEO_TOKENS
    # Each merged video token sits at its block's first patch: the mosaic's own (t, h / 2, w / 2).
    first_patches = inputs["video_positions_thw"][0].reshape(2, 2, 2, 2, 2, 3)[:, :, 0, :, 0].reshape(-1, 3)
    expected = first_patches // torch.tensor([1, MERGE, MERGE])
    assert torch.equal(videos[0].positions_thw.long(), expected.long())

    output = model(**inputs)
    assert output.logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(output.loss)
    output.loss.backward()
    for part in (model.multi_modal_projector.linear_1, model.multi_modal_projector.linear_2):
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0
    assert model.vision_tower.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_placeholder_labels_are_masked(tokenizer):
    model = make_model(tokenizer)
    inputs = batch(tokenizer)
    with torch.no_grad():
        reference = model(**inputs).loss
        unmasked = inputs["labels"].clone()
        placeholders = model._placeholder_mask(inputs["input_ids"])
        unmasked[placeholders] = inputs["input_ids"][placeholders]  # a caller that forgot to mask them
        assert torch.equal(model(**{**inputs, "labels": unmasked}).loss, reference)


def test_video_positions_change_the_output(tokenizer):
    model = make_model(tokenizer)
    inputs = batch(tokenizer)
    # Rotary attention sees relative positions only, so the patches are moved relative to each other.
    moved = [inputs["video_positions_thw"][0].flip(0)]
    with torch.no_grad():
        logits = model(**inputs).logits
        other = model(**{**inputs, "video_positions_thw": moved}).logits
    video_rows = inputs["input_ids"][1] == model.config.video_token_id
    assert not torch.allclose(logits[1, video_rows], other[1, video_rows], atol=1e-5)
    assert torch.equal(logits[0], other[0])  # the image's sample does not see the video


def test_placeholder_count_mismatch_names_both_counts(tokenizer):
    model = make_model(tokenizer)
    inputs = batch(tokenizer, image_tokens=IMAGE_TOKENS - 1)
    with pytest.raises(ValueError, match=rf"{IMAGE_TOKENS - 1} image placeholder.*make {IMAGE_TOKENS} image tokens"):
        model(**inputs)
    with pytest.raises(TypeError, match="must be a list"):
        model(**{**batch(tokenizer), "pixel_values": torch.stack(inputs["pixel_values"])})


def test_bad_vision_inputs_name_the_argument(tokenizer):
    model = make_model(tokenizer)
    inputs = batch(tokenizer)
    short = [inputs["video_positions_thw"][0][:30]]
    with pytest.raises(ValueError, match=r"^pixel_values_videos\[0\] \(with video_positions_thw\[0\]\).*N=32"):
        model(**{**inputs, "video_positions_thw": short})
    with pytest.raises(ValueError, match=r"^pixel_values\[0\]: a 3x6 patch grid does not split into 2x2 blocks"):
        model(**{**inputs, "pixel_values": [torch.randn(3, 12, 24)]})
    with pytest.raises(ValueError, match="2 entries for 1 videos"):
        model(**{**inputs, "video_positions_thw": inputs["video_positions_thw"] * 2})


def test_trainer_drives_the_loss_down(tokenizer, tmp_path):
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    model = make_model(tokenizer).train()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=1,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    # One item is the whole two-sample batch (an image and a video sample), as a collator would make it.
    trainer = Trainer(model=model, args=args, train_dataset=[batch(tokenizer)], data_collator=lambda items: items[0])
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 20
    assert losses[-1] < 0.5 * losses[0]


def test_generate_returns_new_tokens(tokenizer):
    model = make_model(tokenizer)
    inputs = batch(tokenizer, padding_side="left")
    # Prompts only: cut each sample before its answer (the two answers have different lengths, so cut by label).
    prompt_length = int((inputs["labels"] == -100).all(dim=0).sum())
    prompt = {key: value[:, :prompt_length] for key, value in inputs.items() if key in ("input_ids", "attention_mask")}
    vision = {key: inputs[key] for key in ("pixel_values", "pixel_values_videos", "video_positions_thw")}
    generated = model.generate(**prompt, **vision, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape == (2, prompt_length + 4)
    assert torch.equal(generated[:, :prompt_length], prompt["input_ids"])
    with torch.no_grad():  # greedy with the cache equals the full forward's argmax at the first new token
        first = model(**prompt, **vision).logits[:, -1].argmax(-1)
    assert torch.equal(generated[:, prompt_length], first)


def test_beam_search_and_several_sequences_repeat_each_rows_media(tokenizer):
    """Row 0 holds one image, row 1 another image and a video: with beams and two sequences per row, each row
    generates what it generates alone, so every repeated row got its own media."""
    model = make_model(tokenizer)
    generator = torch.Generator().manual_seed(3)
    images = [torch.randn(3, 16, 24, generator=generator), torch.randn(3, 8, 16, generator=generator)]  # 6, 2 tokens
    video = vision_inputs()
    prompts = [
        "user : describe the picture " + "<image> " * 6 + "assistant :",
        "user : describe the picture " + "<image> " * 2 + "and the clip " + "<video> " * VIDEO_TOKENS + "assistant :",
    ]
    media = [
        {"pixel_values": images[:1]},
        {"pixel_values": images[1:], "pixel_values_videos": video["pixel_values_videos"],
         "video_positions_thw": video["video_positions_thw"]},
    ]  # fmt: skip
    settings = {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False}
    encode = {"return_tensors": "pt", "add_special_tokens": False, "return_token_type_ids": False}
    batched = tokenizer(prompts, padding=True, padding_side="left", **encode)
    together = model.generate(
        **batched,
        pixel_values=images,
        pixel_values_videos=video["pixel_values_videos"],
        video_positions_thw=video["video_positions_thw"],
        **settings,
    )
    assert together.shape == (4, batched["input_ids"].shape[1] + 3)
    for row, (prompt, row_media) in enumerate(zip(prompts, media, strict=True)):
        alone = tokenizer([prompt], **encode)
        generated = model.generate(**alone, **row_media, **settings)
        assert torch.equal(together[2 * row : 2 * row + 2, -3:], generated[:, -3:]), row


def test_save_and_load_give_the_same_logits(tokenizer, tmp_path):
    from transformers import AutoModelForImageTextToText

    model = make_model(tokenizer)
    inputs = batch(tokenizer)
    model.save_pretrained(tmp_path)
    for loaded in (
        OneVisionLlavaForConditionalGeneration.from_pretrained(tmp_path),
        AutoModelForImageTextToText.from_pretrained(tmp_path),
    ):
        assert isinstance(loaded, OneVisionLlavaForConditionalGeneration)
        with torch.no_grad():
            assert torch.equal(loaded.eval()(**inputs).logits, model(**inputs).logits)
        assert loaded.language_model.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()


def test_from_encoder_and_lm(tokenizer, tmp_path):
    torch.manual_seed(1)
    encoder = OneVisionEncoderModel(
        OneVisionEncoderConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=PATCH
        )
    )
    language_model = AutoModelForCausalLM.from_config(tiny_text_config(tokenizer))
    encoder.save_pretrained(tmp_path / "encoder")
    language_model.save_pretrained(tmp_path / "lm")
    ids = {name: tokenizer.convert_tokens_to_ids(f"<{name}>") for name in ("image", "video")}
    model = OneVisionLlavaForConditionalGeneration.from_encoder_and_lm(
        tmp_path / "encoder", tmp_path / "lm", image_token_id=ids["image"], video_token_id=ids["video"]
    )
    for part, original in ((model.vision_tower, encoder), (model.language_model, language_model)):
        mine, theirs = part.state_dict(), original.state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[key], theirs[key]) for key in mine)
    assert all(not p.is_meta for p in model.parameters())
    output = model(**batch(tokenizer))
    assert torch.isfinite(output.loss)

    model.save_pretrained(tmp_path / "lmm")
    reloaded = OneVisionLlavaForConditionalGeneration.from_pretrained(tmp_path / "lmm")
    with torch.no_grad():
        assert torch.equal(reloaded(**batch(tokenizer)).logits, model(**batch(tokenizer)).logits)

    eager = AutoModelForCausalLM.from_pretrained(tmp_path / "lm", attn_implementation="eager")
    built = OneVisionLlavaForConditionalGeneration.from_encoder_and_lm(encoder, eager, image_token_id=ids["image"])
    assert built.language_model.config._attn_implementation == "eager"  # the part's own backend is kept

    with pytest.raises(ValueError, match="image_token_id 1000 is outside the language model's"):
        OneVisionLlavaForConditionalGeneration.from_encoder_and_lm(encoder, language_model, image_token_id=1000)


def test_readme_example_runs():
    section = LMM_PAGE.read_text().split("# The LMM probe", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "docs/lmm.md's LMM probe section has no python example"
    exec(compile(blocks[0], "docs/lmm.md: The LMM probe", "exec"), {})
