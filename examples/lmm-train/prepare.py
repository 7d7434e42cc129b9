"""Tiny models and generated data for a first ``onevision lmm-train`` run, on a CPU in about a minute.

    python examples/lmm-train/prepare.py runs/lmm-example
    onevision lmm-train --config runs/lmm-example/lmm.yaml --out runs/lmm-example/run
    python examples/lmm-train/ask.py runs/lmm-example/run/final runs/lmm-example/data/videos/panning.mp4

OUT, a new folder (nothing is written anywhere else, nothing is downloaded), gets:

- ``data/``: four generated videos (a red square crossing a still picture, a camera pan, a still picture, a
  scene cut), a picture, and ``conversations.json``: LLaVA-style questions and answers about them. Its video
  items name the video files, which the processor selects as it trains (``onevision preprocess --preset lmm
  --pack --conversations`` does that ahead of time, for data at scale);
- ``models/``: a tiny random encoder (14-pixel patches, as the released ones), a tiny random Qwen2 causal
  language model and a word-level tokenizer of the conversations' words;
- ``lmm.yaml``: a copy of ``config.yaml`` beside this script, whose relative paths name these.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Each scene of onevision_encoder.video.synthetic, and what the model learns to say about it.
SCENES = {
    "moving_object": "a red square crosses a still picture",
    "panning": "the camera pans while a red square moves",
    "still": "nothing moves",
    "scene_cut": "a red square moves then the scene cuts",
}
QUESTIONS = ["describe the clip", "what happens in the video"]
SPECIAL = ["<pad>", "<unk>", "<eos>"]
ROLE_WORDS = ["system", "user", "assistant", ":"]  # what the plain chat template writes around the turns
WORD = re.compile(r"\w+|[^\w\s]+")  # the words of tokenizers' Whitespace pre-tokenizer
PLACEHOLDER = re.compile(r"<image>|<video>")  # tokens of their own, added by lmm-train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="a new folder for the models, the data and lmm.yaml")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(
            f"error: {args.out}: already exists; name a new folder (this script never writes over one)", file=sys.stderr
        )
        return 2
    from onevision_encoder.common.files import atomic_directory

    with atomic_directory(args.out) as folder:  # the folder appears complete or not at all
        items = write_data(folder / "data")
        write_models(folder / "models", items)
        shutil.copyfile(HERE / "config.yaml", folder / "lmm.yaml")
    out = shlex.quote(str(args.out))
    print(f"{args.out}: {len(SCENES)} videos, a picture, {len(items)} conversations, tiny models and lmm.yaml")
    print("next:")
    print(f"  onevision lmm-train --config {out}/lmm.yaml --out {out}/run")
    print(f"  python {shlex.quote(str(HERE / 'ask.py'))} {out}/run/final {out}/data/videos/panning.mp4")
    return 0


def turns(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def write_data(data: Path) -> list[dict]:
    """The videos, the picture and the conversations about them; returns the conversations' items."""
    from PIL import Image

    from onevision_encoder.video.synthetic import make_clip, write_clip

    items = []
    for seed, (scene, answer) in enumerate(SCENES.items()):
        clip = make_clip(scene, num_frames=24, size=(64, 96), object_size=24, object_speed=2.0, seed=seed)
        write_clip(data / "videos" / f"{scene}.mp4", clip)
        for number, question in enumerate(QUESTIONS):
            conversation = turns(f"<video>\n{question}", answer)
            items.append({"id": f"{scene}-{number}", "video": f"videos/{scene}.mp4", "conversations": conversation})
        if scene == "still":
            (data / "images").mkdir()
            Image.fromarray(clip.frames[0]).save(data / "images" / "still.png")
    items.append({"id": "picture", "image": "images/still.png", "conversations": turns(
        "<image>\ndescribe the picture", "a still picture")})  # fmt: skip
    items.append({"id": "text", "conversations": turns("what colour is the square", "the square is red")})
    (data / "conversations.json").write_text(json.dumps(items, indent=1) + "\n")
    return items


def write_models(folder: Path, items: list[dict]) -> None:
    """A tiny random encoder and causal LM, and a tokenizer of every word of ``items`` (lmm-train adds the
    ``<image>`` and ``<video>`` placeholders to it and grows the LM's embeddings to match)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from onevision_encoder import OneVisionEncoderConfig, OneVisionEncoderModel

    torch.manual_seed(0)
    encoder = OneVisionEncoderConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    OneVisionEncoderModel(encoder).save_pretrained(folder / "encoder")

    texts = [turn["value"] for item in items for turn in item["conversations"]]
    words = sorted({word for text in texts for word in WORD.findall(PLACEHOLDER.sub(" ", text))})
    vocabulary = {word: index for index, word in enumerate(dict.fromkeys([*SPECIAL, *ROLE_WORDS, *words]))}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    # Its own folder: in the LM's, transformers would read it as the Qwen2 tokenizer the LM's config names.
    tokenizer.save_pretrained(folder / "tokenizer")

    language_model = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    Qwen2ForCausalLM(language_model).save_pretrained(folder / "language-model")


if __name__ == "__main__":
    sys.exit(main())
