"""LLaVA-style conversation files: read and checked for ``onevision preprocess --pack`` and ``lmm-train``.

``preprocess --pack`` reads one before any video work (a bad file is a usage error naming the file and
item), then rewrites each video item's ``<video>`` into its packed mosaics' ``<image>`` tokens, keeping
the file's format (a JSON array stays an array, JSONL stays JSONL); ``lmm-train`` trains on the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIDEO_TOKEN, IMAGE_TOKEN = "<video>", "<image>"


class ConversationsError(ValueError):
    """A conversations file that cannot be used: the message names the file and the item."""


@dataclass(frozen=True)
class Conversations:
    """The items of a conversation file, in order, and its format (``lines``: JSONL)."""

    path: Path
    items: list[dict[str, Any]]
    lines: bool

    @property
    def suffix(self) -> str:
        return ".jsonl" if self.lines else ".json"

    def where(self, number: int) -> str:
        return f"{self.path}: item {number}"

    def dump(self, items: list[dict[str, Any]]) -> bytes:
        """``items`` in this file's format (a JSON array is written one item a line)."""
        if self.lines:
            return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items).encode()
        return ("[\n" + ",\n".join(json.dumps(item, ensure_ascii=False) for item in items) + "\n]\n").encode()


def read_conversations(path: Path) -> Conversations:
    """The file's items, checked: each an object; a video item's ``video`` one path and its turns
    with at most one ``<video>``. Items without a ``video`` (text, images) are taken as they are."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConversationsError(f"{path}: cannot read the conversations file ({error})") from None
    lines = not text.lstrip().startswith("[")
    if lines:
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ConversationsError(f"{path}: line {number}: not valid JSON ({error.msg})") from None
    else:
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConversationsError(
                f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
            ) from None
    conversations = Conversations(path, items, lines)
    for number, item in enumerate(items, 1):
        check_item(item, conversations.where(number))
    return conversations


def check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise ConversationsError(f"{where} is not an object but {type(item).__name__}")
    if "video" not in item:
        return
    if not isinstance(item["video"], str):
        raise ConversationsError(f"{where}: 'video' must be one path (a string), not {type(item['video']).__name__}")
    if "image" in item:
        raise ConversationsError(f"{where}: has both 'video' and 'image' (the packed video becomes the images)")
    check_turns(item.get("conversations"), where)


def check_turns(turns: Any, where: str) -> None:
    if not isinstance(turns, list) or not all(isinstance(turn, dict) for turn in turns):
        raise ConversationsError(f"{where}: 'conversations' must be a list of turns (objects)")
    if not turns:
        raise ConversationsError(f"{where}: no conversation turns")
    count = sum(_text(turn).count(VIDEO_TOKEN) for turn in turns)
    if count > 1:
        raise ConversationsError(f"{where}: {count} {VIDEO_TOKEN} placeholders for one video")


def with_images(turns: list[dict[str, Any]], tokens: str, where: str) -> list[dict[str, Any]]:
    """The conversation with its one ``<video>`` replaced by the mosaics' ``<image>`` tokens; without a
    ``<video>``, the tokens open the first turn (LLaVA's convention for media without a placeholder)."""
    check_turns(turns, where)
    if not any(VIDEO_TOKEN in _text(turn) for turn in turns):
        return [{**turns[0], "value": f"{tokens}\n{_text(turns[0])}"}, *turns[1:]]
    return [
        {**turn, "value": _text(turn).replace(VIDEO_TOKEN, tokens)} if VIDEO_TOKEN in _text(turn) else turn
        for turn in turns
    ]


def _text(turn: dict[str, Any]) -> str:
    value = turn.get("value", "")
    return value if isinstance(value, str) else ""


def packed_item(item: dict[str, Any], images: list[str], positions: str, where: str) -> dict[str, Any]:
    """A video item as its packed form: ``image`` (the mosaics, in order) and ``positions_thw`` in place
    of ``video``, one ``<image>`` per mosaic in the conversation; every other key as it was."""
    rewritten = {key: value for key, value in item.items() if key != "video"}
    rewritten["image"] = images
    rewritten["positions_thw"] = positions
    tokens = "\n".join([IMAGE_TOKEN] * len(images))
    rewritten["conversations"] = with_images(item["conversations"], tokens, where)
    return rewritten
