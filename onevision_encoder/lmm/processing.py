"""The LMM probe's processor: text with ``<image>`` / ``<video>`` placeholders, images and codec videos, to the
inputs of :class:`~onevision_encoder.lmm.modeling.OneVisionLlavaForConditionalGeneration`.

Each placeholder becomes exactly as many placeholder tokens as the vision tower makes for its image or video
(:func:`~onevision_encoder.lmm.modeling.vision_token_count`, the model's own rule), so the model's
placeholder-count check holds by construction.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature

from ..codec.presets import SELECTION_PRESETS
from ..model.image_processing import OneVisionEncoderImageProcessor
from ..video.media import open_image
from .modeling import VISION_INPUTS, vision_token_count

# select_patches keywords the processor fixes: --pack is defined for the lmm preset, and mosaics need the frames.
FIXED_SELECTION = {"preset": "lmm", "keep_frames": True}
# The lmm preset's mosaic side in patches (576 pixels in 16-pixel patches: 36): kept whatever the encoder's patch.
LMM_GRID = SELECTION_PRESETS["lmm"].size // SELECTION_PRESETS["lmm"].patch_size


def lmm_size(patch_size: int) -> int:
    """The ``lmm`` preset's mosaic side in pixels for an encoder of ``patch_size``: its 36 x 36 patch grid, so the
    same K, token count and (t, h, w) positions as the release's 576-pixel, 16-pixel-patch mosaics (504 for 14)."""
    return LMM_GRID * patch_size


@dataclass(frozen=True)
class UniformFrames:
    """A video file to read as ``num_frames`` whole frames spread uniformly over it, instead of selected: the
    baseline to codec selection (:meth:`OneVisionLlavaProcessor.process_video_frames`)."""

    path: str | os.PathLike[str]
    num_frames: int


# a --pack folder, a video file, a CodecSelection with its frames, or UniformFrames
VideoInput = str | os.PathLike[str] | UniformFrames | Any


class OneVisionLlavaProcessor(ProcessorMixin):
    """Tokenizer + :class:`OneVisionEncoderImageProcessor` for ``OneVisionLlavaForConditionalGeneration``.

    ``processor(text=..., images=..., videos=...)`` expands the ``n``-th ``image_token`` of the text(s) into as
    many copies as the ``n``-th image makes vision tokens (likewise ``video_token``), tokenizes, and returns
    ``input_ids``, ``attention_mask``, ``pixel_values`` (list of ``[C, H, W]``), ``pixel_values_videos`` (list of
    ``[T, C, H, W]``) and ``video_positions_thw`` (list of ``[T * H/p * W/p, 3]``), ready for ``model(**inputs)``.

    - Images are resized at native resolution (the image processor's ``native`` mode) to sides that are
      multiples of ``patch_size * spatial_merge``: ``(H/p/m) * (W/p/m)`` tokens each.
    - A video is a ``onevision preprocess --pack`` folder (``mosaic_K.*`` and ``positions_thw.npy``), a video file
      (selected now with ``select_patches(path, **selection_keywords)`` and packed by the same code as
      ``--pack``), or a ``CodecSelection`` made with ``keep_frames=True``. Its mosaics give ``T * (H/p/m) *
      (W/p/m)`` tokens. A video file is selected in the encoder's patches (the image processor's ``patch_size``)
      on the ``lmm`` preset's 36 x 36 patch grid (:func:`lmm_size`: 504 pixels for 14-pixel patches) unless
      ``video_selection`` gives a ``size``; folders and selections made in other patches are refused.

    Args:
        image_processor: The encoder's image processor; its ``patch_size`` must be the encoder's.
        tokenizer: The language model's tokenizer, holding ``image_token`` and ``video_token`` (added tokens).
        chat_template: Unused here (``apply_chat_template`` is the tokenizer's); kept for transformers' API.
        image_token, video_token: The placeholder strings (their ids are the model's ``image_token_id`` /
            ``video_token_id``).
        spatial_merge: The model's ``spatial_merge``.
        video_selection: Further ``select_patches`` keywords for video files (``num_patches``, ``size``,
            ``num_frames``, ...); ``preset`` and ``keep_frames`` are fixed, and ``patch_size``, when given, must be
            the image processor's.
    """

    # transformers 4.x finds the parts through these; 5.x reads them from __init__'s signature (and warns on them).
    if hasattr(ProcessorMixin, "attributes"):
        attributes = ["image_processor", "tokenizer"]
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        image_processor: OneVisionEncoderImageProcessor | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        video_token: str = "<video>",
        spatial_merge: int = 2,
        video_selection: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        fixed = sorted(set(video_selection or {}) & set(FIXED_SELECTION))
        if fixed:
            raise ValueError(f"video_selection may not set {fixed}: videos are selected with {FIXED_SELECTION}")
        if spatial_merge < 1:
            raise ValueError(f"spatial_merge must be >= 1, got {spatial_merge}")
        self.image_token = image_token
        self.video_token = video_token
        self.spatial_merge = spatial_merge
        self.video_selection = dict(video_selection or {})
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        patch = self.image_processor.patch_size
        if self.video_selection.get("patch_size", patch) != patch:
            raise ValueError(
                f"video_selection patch_size {self.video_selection['patch_size']} differs from the image "
                f"processor's {patch}: videos are cut in the encoder's patches (leave patch_size out)"
            )

    @property
    def selection_keywords(self) -> dict[str, Any]:
        """The ``select_patches`` keywords of a video file: ``video_selection`` in the encoder's patches, at the
        ``lmm`` preset's 36 x 36 patch grid unless it gives a ``size``."""
        patch = self.image_processor.patch_size
        return {"size": lmm_size(patch), **self.video_selection, "patch_size": patch, **FIXED_SELECTION}

    @property
    def image_token_id(self) -> int:
        return self._token_id(self.image_token)

    @property
    def video_token_id(self) -> int:
        return self._token_id(self.video_token)

    def _token_id(self, token: str) -> int:
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"the tokenizer splits the placeholder {token!r} into {len(ids)} tokens: add it as one token "
                f"(tokenizer.add_special_tokens(...)) and resize the model's embeddings"
            )
        return ids[0]

    @property
    def model_input_names(self) -> list[str]:
        return [*self.tokenizer.model_input_names, *VISION_INPUTS]

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        videos: VideoInput | list[VideoInput] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenized text with expanded placeholders and the vision inputs (see the class).

        ``images`` and ``videos`` are one item, a list, or a list per text, in the order of their placeholders
        over all texts. Other keywords go to the tokenizer; several texts are padded (``padding=True``) unless
        ``padding`` says otherwise.
        """
        if text is None:
            raise ValueError("text is needed: its placeholders say where the images and videos go")
        texts = [text] if isinstance(text, str) else list(text)
        images, videos = _flat(images), _flat(videos)
        for token, media, kind in ((self.image_token, images, "image"), (self.video_token, videos, "video")):
            placeholders = sum(sample.count(token) for sample in texts)
            if placeholders != len(media):
                raise ValueError(
                    f"the text holds {placeholders} {token} placeholder(s) but {len(media)} {kind}(s) were given: "
                    f"one {token} per {kind}, in order"
                )
        data: dict[str, Any] = {}
        counts = {self.image_token: [], self.video_token: []}
        if images:
            data["pixel_values"] = self.process_images(images)
            counts[self.image_token] = [self.token_count(image) for image in data["pixel_values"]]
        if videos:
            packed = [self.process_video(video) for video in videos]
            data["pixel_values_videos"] = [mosaics for mosaics, _ in packed]
            data["video_positions_thw"] = [positions for _, positions in packed]
            counts[self.video_token] = [self.token_count(mosaics) for mosaics in data["pixel_values_videos"]]
        if len(texts) > 1:
            kwargs.setdefault("padding", True)
        kwargs.setdefault("return_token_type_ids", False)  # causal LMs take none, and generate() refuses them
        encoded = self.tokenizer(self.expand(texts, counts), return_tensors=return_tensors, **kwargs)
        return BatchFeature(data={**encoded, **data})

    def token_count(self, pixels: torch.Tensor) -> int:
        """Vision tokens of one processed image ``[C, H, W]`` or video ``[T, C, H, W]``."""
        return vision_token_count(tuple(pixels.shape), self.image_processor.patch_size, self.spatial_merge)

    def expand(self, texts: list[str], counts: dict[str, list[int]]) -> list[str]:
        """``texts`` with the ``n``-th occurrence of each placeholder repeated ``counts[placeholder][n]`` times."""
        pattern = re.compile("|".join(re.escape(token) for token in counts))
        next_item = dict.fromkeys(counts, 0)

        def repeat(match: re.Match[str]) -> str:
            token = match[0]
            number = next_item[token]
            next_item[token] += 1
            return token * counts[token][number]

        return [pattern.sub(repeat, sample) for sample in texts]

    def process_images(self, images: list[Any]) -> list[torch.Tensor]:
        """Each image at native resolution, sides multiples of ``patch_size * spatial_merge``: ``[C, H, W]``."""
        step = self.image_processor.patch_size * self.spatial_merge
        pixels = self.image_processor(images=images, mode="native", patch_size=step, return_tensors="pt")
        return list(pixels["pixel_values"])

    def process_video(self, video: VideoInput) -> tuple[torch.Tensor, torch.Tensor]:
        """A video's normalised mosaics ``[T, C, H, W]`` and their patches' (t, h, w) ``[T * H/p * W/p, 3]``."""
        from ..codec import CodecSelection

        if isinstance(video, CodecSelection):
            return self._pack_selection(video)
        if isinstance(video, UniformFrames):
            return self.process_video_frames(video.path, video.num_frames)
        path = Path(video)
        if path.is_dir():
            return self.load_pack(path)
        from ..codec import select_patches

        return self._pack_selection(select_patches(path, **self.selection_keywords))

    def process_video_frames(self, path: str | os.PathLike[str], num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform sampling, the baseline to codec selection: ``num_frames`` whole frames spread over the video
        file, on the mosaics' canvas (the ``lmm`` preset's fit at ``selection_keywords``' size, area resampling,
        zero padding) and normalised like them: ``[T, C, H, W]``, and each patch's (t, h, w) with t the frame's
        place on the 64-frame grid the codec's positions use."""
        import cv2

        from ..codec.frames import read_video_frames
        from ..codec.geometry import plan_geometry
        from ..video.grid import VIRTUAL_FRAMES, chunk_visible_indices, frame_positions, indices_to_positions

        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        read = read_video_frames(path, num_frames=num_frames)
        patch = self.image_processor.patch_size
        geometry = plan_geometry(
            read.frames.shape[1:3], SELECTION_PRESETS["lmm"].fit, self.selection_keywords["size"], patch
        )
        height, width = geometry.resized_hw
        canvases = [
            geometry.to_canvas(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
            for frame in read.frames
        ]
        indices = chunk_visible_indices(frame_positions(num_frames, VIRTUAL_FRAMES), geometry.grid_hw)
        return self._normalised_pack(canvases, indices_to_positions(indices, geometry.grid_hw), str(path))

    def _pack_selection(self, selection: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The mosaics and positions ``--pack`` would write for ``selection``, made in memory."""
        positions = torch.from_numpy(np.asarray(selection.positions_thw, dtype=np.int64))
        return self._normalised_pack(list(selection.mosaic_frames()), positions, "the selection")

    def load_pack(self, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """The mosaics and positions of a ``preprocess --pack`` folder, normalised by the image processor."""
        from ..codec.codec_selection import PACK_POSITIONS_FILE, pack_mosaic_names

        names = pack_mosaic_names(folder)
        if not names or not (folder / PACK_POSITIONS_FILE).is_file():
            raise ValueError(
                f"{folder} is not a `onevision preprocess --pack` folder (mosaic_K.* and {PACK_POSITIONS_FILE})"
            )
        return self.load_mosaics([folder / name for name in names], folder / PACK_POSITIONS_FILE)

    def load_mosaics(
        self, mosaics: list[str | os.PathLike[str]], positions_thw: str | os.PathLike[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A packed video from its files, as a ``preprocess --pack --conversations`` item names them: the mosaic
        images in order and the ``positions_thw.npy`` of their patches."""
        pixels = [np.asarray(open_image(path)) for path in mosaics]
        positions = torch.from_numpy(np.load(positions_thw).astype(np.int64))
        return self._normalised_pack(pixels, positions, str(positions_thw))

    def _normalised_pack(
        self, mosaics: list[np.ndarray], positions: torch.Tensor, source: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 mosaics rescaled and normalised (they are already at the model's geometry), checked against
        ``positions`` (from ``source``): one (t, h, w) per patch of the encoder's size."""
        pixels = self.image_processor(
            images=mosaics, mode="crop", do_resize=False, do_center_crop=False, return_tensors="pt"
        )["pixel_values"]
        frames, _, height, width = pixels.shape
        patch = self.image_processor.patch_size
        patches = frames * (height // patch) * (width // patch)
        if height % patch or width % patch or positions.shape != (patches, 3):
            raise ValueError(
                f"{frames} mosaics of {height}x{width} in {patch}-pixel patches make {patches} patches, but "
                f"{source} holds {tuple(positions.shape)} positions: the selection's patch size must be the "
                f"encoder's (select with --patch-size {patch} --size {lmm_size(patch)}, the lmm preset's grid)"
            )
        return pixels, positions

    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any) -> Any:
        """The tokenizer's ``apply_chat_template`` (the language model's template), unchanged.

        Write ``<image>`` / ``<video>`` into the messages' text where the media go and pass ``tokenize=False``
        to get the prompt for ``processor(text=...)``.
        """
        return self.tokenizer.apply_chat_template(conversation, chat_template=chat_template, **kwargs)


def _flat(items: Any) -> list[Any]:
    """One item, a list of items, or a list of per-text lists, as one list in placeholder order."""
    if items is None:
        return []
    if not isinstance(items, (list, tuple)):
        return [items]
    flat: list[Any] = []
    for item in items:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return flat
