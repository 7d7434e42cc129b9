"""Ask a model trained by ``onevision lmm-train`` about a video or a picture; its greedy answer is printed.

    python examples/lmm-train/ask.py runs/lmm-example/run/final runs/lmm-example/data/videos/panning.mp4
    python examples/lmm-train/ask.py MODEL PICTURE.png --question "describe the picture"

A video is selected by the model's own processor, as in training (``video_selection`` of the config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model", type=Path, help="the run's final/ folder (model and processor)")
    parser.add_argument("media", type=Path, help="a video file, or a picture")
    parser.add_argument("--question", help="default: 'describe the clip' (a video), 'describe the picture'")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    for path in (args.model, args.media):
        if not path.exists():
            print(f"error: {path}: no such file or folder", file=sys.stderr)
            return 2
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import onevision_encoder  # noqa: F401  (registers the model and processor with the Auto classes)
    from onevision_encoder.video.media import IMAGE_SUFFIXES, open_image

    model = AutoModelForImageTextToText.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    picture = args.media.suffix.lower() in IMAGE_SUFFIXES
    placeholder = processor.image_token if picture else processor.video_token
    question = args.question or ("describe the picture" if picture else "describe the clip")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": f"{placeholder}\n{question}"}], tokenize=False, add_generation_prompt=True
    )
    media = {"images": open_image(args.media)} if picture else {"videos": args.media}
    try:
        inputs = processor(text=prompt, **media)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(processor.tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
