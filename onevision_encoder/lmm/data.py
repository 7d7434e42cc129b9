"""LLaVA-style conversations as training samples of the LMM probe (``onevision lmm-train``).

An item is ``{"conversations": [{"from": "human" | "gpt" | "system", "value": ...}, ...]}`` (``user`` and
``assistant`` also read), with its media:

- ``"image"``: a path or a list of paths, one per ``<image>`` of the turns, each at native resolution;
- ``"image"`` (the mosaics) with ``"positions_thw"``: a packed codec video, as ``preprocess --pack
  --conversations`` writes it. Each ``<image>`` of the turns is one mosaic, and the mosaics go through the
  encoder together as one video with these positions (the release's training data);
- ``"video"``: a video file, selected on the fly with the processor's ``lmm`` selection, at its ``<video>``.

Media without a placeholder open the first turn (LLaVA's convention). Relative paths are relative to the
file's image folder (by default the folder of the conversations file, where ``--pack`` writes them). Only the
assistant turns are learnt: every other token's label is -100. An item longer than ``max_length`` is skipped
and recorded (:class:`SkippedItems`), never cut.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..video.media import open_image
from .conversations import IMAGE_TOKEN, VIDEO_TOKEN, ConversationsError, read_conversations

logger = logging.getLogger(__name__)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

# For language models without a chat template (base models, the tests' toy tokenizer): one line per turn, the
# assistant's ended by the end-of-sequence token so that the model learns to stop.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(frozen=True)
class ConversationSource:
    """A conversations file and the folder its relative media paths start from (``None``: the file's folder)."""

    path: Path
    image_folder: Path | None = None

    @property
    def media_root(self) -> Path:
        return self.image_folder if self.image_folder is not None else self.path.parent


@dataclass(frozen=True)
class Sample:
    """One item to train on: its turns (chat roles) and media paths, and where it came from."""

    where: str
    messages: list[dict[str, str]]
    images: list[Path]
    positions_thw: Path | None = None
    video: Path | None = None


class SkippedItems:
    """Items left out of training and why: a warning in the log and, with a ``path``, one JSON line each
    (``{"item": ..., "reason": ...}``) appended and flushed as it is found, so a killed run still says what it
    left out. An item met again (next epoch, another data-loading worker or rank) is not written twice."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    def add(self, where: str, reason: str) -> None:
        logger.warning("skipped %s: %s%s", where, reason, f" (recorded in {self.path})" if self.path else "")
        if self.path is None or where in self.items():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps({"item": where, "reason": reason}, ensure_ascii=False) + "\n")

    def items(self) -> dict[str, str]:
        """Each recorded item with its reason (none without a ``path``)."""
        if self.path is None or not self.path.is_file():
            return {}
        records = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {record["item"]: record["reason"] for record in records}


class ConversationDataset(torch.utils.data.Dataset):
    """The items of conversation files, checked when built (every file read, every media file found), each
    processed when asked for: ``input_ids``, ``labels`` and the processor's vision inputs.

    Args:
        sources: The conversation files.
        processor: An :class:`~onevision_encoder.lmm.processing.OneVisionLlavaProcessor`; its tokenizer
            needs a chat template (set :data:`PLAIN_CHAT_TEMPLATE` for one without) and a fast tokenizer.
        max_length: Skip a sample longer than this many tokens (cutting it could cut its vision tokens): it is
            recorded in ``skipped`` and the next item that fits takes its place. ``None``: no limit.
        skipped: Where skipped items are recorded (default: the log only).
    """

    def __init__(
        self,
        sources: list[ConversationSource],
        processor: Any,
        max_length: int | None = None,
        skipped: SkippedItems | None = None,
    ) -> None:
        if not getattr(processor.tokenizer, "is_fast", False):
            raise ValueError("lmm-train needs a fast tokenizer (it finds the assistant's tokens by character offsets)")
        if processor.tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template: set one (e.g. PLAIN_CHAT_TEMPLATE)")
        self.processor = processor
        self.max_length = max_length
        self.skipped = skipped if skipped is not None else SkippedItems()
        self.too_long: set[int] = set()  # items found over max_length (in this process), not encoded again
        self.samples = [sample for source in sources for sample in read_samples(source)]
        if not self.samples:
            raise ValueError(f"no items in {', '.join(str(source.path) for source in sources)}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item ``index`` encoded, or, when it is over ``max_length``, the next item that fits: a batch keeps its
        size (LLaVA's way), and the item's length is known only once its media are processed."""
        for number in [*range(index, len(self.samples)), *range(index)]:
            if number in self.too_long:
                continue
            sample = self.samples[number]
            try:
                encoded = self.encode(sample)
            except (OSError, ValueError) as error:
                raise ValueError(f"{sample.where}: {error}") from error
            tokens = len(encoded["input_ids"])
            if self.max_length is None or tokens <= self.max_length:
                return encoded
            self.too_long.add(number)
            self.skipped.add(sample.where, f"{tokens} tokens, more than max_length {self.max_length}")
        raise ValueError(
            f"all {len(self.samples)} items are longer than max_length {self.max_length} tokens: raise data.max_length"
        )

    def encode(self, sample: Sample) -> dict[str, Any]:
        processor = self.processor
        vision: dict[str, Any] = {}
        counts: dict[str, list[int]] = {processor.image_token: [], processor.video_token: []}
        messages = sample.messages
        if sample.positions_thw is not None:
            mosaics, positions = processor.load_mosaics(sample.images, sample.positions_thw)
            vision = {"pixel_values_videos": [mosaics], "video_positions_thw": [positions]}
            counts[processor.video_token] = [processor.token_count(mosaics[:1])] * len(mosaics)
            # One video, its tokens in mosaic order: each mosaic's <image> takes that mosaic's share.
            messages = [{**m, "content": m["content"].replace(IMAGE_TOKEN, VIDEO_TOKEN)} for m in messages]
        elif sample.video is not None:
            mosaics, positions = processor.process_video(sample.video)
            vision = {"pixel_values_videos": [mosaics], "video_positions_thw": [positions]}
            counts[processor.video_token] = [processor.token_count(mosaics)]
        elif sample.images:
            vision = {"pixel_values": processor.process_images([open_image(path) for path in sample.images])}
            counts[processor.image_token] = [processor.token_count(pixels) for pixels in vision["pixel_values"]]
        counts = {token: values for token, values in counts.items() if values}
        if counts:
            contents = processor.expand([m["content"] for m in messages], counts)
            messages = [{**m, "content": content} for m, content in zip(messages, contents, strict=True)]
        input_ids, labels = self.tokenize(messages)
        return {"input_ids": input_ids, "labels": labels, **vision}

    def tokenize(self, messages: list[dict[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The conversation through the chat template; labels are the assistant turns' tokens, -100 elsewhere."""
        tokenizer = self.processor.tokenizer

        def render(turns: list[dict[str, str]], prompt: bool = False) -> str:
            return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=prompt)

        text = render(messages)
        spans = []
        for number, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, through = render(messages[:number], prompt=True), render(messages[: number + 1])
            if not (through.startswith(before) and text.startswith(through)):
                raise ValueError(
                    "the chat template does not write a conversation turn after turn (a turn's text changes with the "
                    "turns after it), so the assistant's tokens cannot be told apart: use another chat_template"
                )
            spans.append((len(before), len(through)))
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        input_ids = torch.tensor(encoded["input_ids"], dtype=torch.long)
        learnt = [any(start <= first < end for start, end in spans) for first, _ in encoded["offset_mapping"]]
        labels = input_ids.masked_fill(~torch.tensor(learnt, dtype=torch.bool), -100)
        return input_ids, labels


def read_samples(source: ConversationSource) -> list[Sample]:
    """The file's items as samples, each checked: known roles, an assistant turn, media found, one placeholder
    per medium. Raises :class:`ConversationsError` naming the file and item."""
    conversations = read_conversations(source.path)
    samples = []
    for number, item in enumerate(conversations.items, 1):
        where = conversations.where(number)
        turns = item.get("conversations")
        if not isinstance(turns, list) or not turns or not all(isinstance(turn, dict) for turn in turns):
            raise ConversationsError(f"{where}: 'conversations' must be a non-empty list of turns (objects)")
        images = item.get("image", [])
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
            raise ConversationsError(f"{where}: 'image' must be a path or a list of paths")
        packed = "positions_thw" in item
        if packed and not images:
            raise ConversationsError(f"{where}: 'positions_thw' without the mosaics in 'image'")
        messages = [_message(turn, where) for turn in turns]
        if not any(message["role"] == "assistant" for message in messages):
            raise ConversationsError(f"{where}: no assistant ('gpt') turn to learn")
        token, media, kind = (VIDEO_TOKEN, 1, "video") if "video" in item else (IMAGE_TOKEN, len(images), "image(s)")
        placeholders = sum(message["content"].count(token) for message in messages)
        if media and not placeholders:
            first = next((n for n, message in enumerate(messages) if message["role"] == "user"), 0)
            opening = "\n".join([token] * media)
            messages[first] = {**messages[first], "content": f"{opening}\n{messages[first]['content']}"}
        elif placeholders != media:
            raise ConversationsError(f"{where}: {placeholders} {token} placeholder(s) for {media} {kind}")
        samples.append(
            Sample(
                where=where,
                messages=messages,
                images=[_media(source, path, where) for path in images],
                positions_thw=_media(source, item["positions_thw"], where) if packed else None,
                video=_media(source, item["video"], where) if "video" in item else None,
            )
        )
    return samples


def _message(turn: dict[str, Any], where: str) -> dict[str, str]:
    role, value = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
    if role not in ROLES:
        raise ConversationsError(f"{where}: a turn from {role!r}; known: {sorted(ROLES)}")
    if not isinstance(value, str):
        raise ConversationsError(f"{where}: a turn's 'value' must be text, got {type(value).__name__}")
    return {"role": ROLES[role], "content": value}


def _media(source: ConversationSource, path: Any, where: str) -> Path:
    if not isinstance(path, str):
        raise ConversationsError(f"{where}: a media path must be a string, got {type(path).__name__}")
    resolved = source.media_root / os.path.expanduser(path)
    if not resolved.is_file():
        raise ConversationsError(f"{where}: {path}: no such file (looked for {resolved})")
    return resolved


@dataclass
class ConversationCollator:
    """Samples to a batch: ``input_ids`` and ``labels`` padded on the right (``attention_mask`` says where),
    vision inputs as lists in sample order (the order of their placeholders over the batch)."""

    pad_token_id: int

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        pad = torch.nn.utils.rnn.pad_sequence
        input_ids = [sample["input_ids"] for sample in samples]
        batch: dict[str, Any] = {
            "input_ids": pad(input_ids, batch_first=True, padding_value=self.pad_token_id),
            "labels": pad([sample["labels"] for sample in samples], batch_first=True, padding_value=-100),
            "attention_mask": pad([torch.ones_like(ids) for ids in input_ids], batch_first=True, padding_value=0),
        }
        for key in ("pixel_values", "pixel_values_videos", "video_positions_thw"):
            values = [value for sample in samples for value in sample.get(key, [])]
            if values:
                batch[key] = values
        return batch
