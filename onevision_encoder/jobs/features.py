"""Features of images and videos: model inputs for each mode, batched forward passes, and the parts
of a feature folder (``onevision encode`` at dataset scale).

Modes: ``image`` (one picture, upright, the processor's 448 crop or native resolution), ``chunk`` (8
or 16 uniformly sampled frames placed on the 64-frame virtual grid), ``codec`` (K codec-selected
patches of 64 frames, fed as a mosaic with their true positions).

A feature folder (:mod:`.feature_store`) is made of parts, each the job of :func:`extract_part`:
idempotent, atomic, independent of the others, so that any engine can schedule them. Each part records
what made it (the job, the package version, each input's identity), so that a rerun reuses only the
parts this very job would write again (:func:`changed_parts`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..codec import CodecSelection, ImageNotVideoError, select_patches
from ..codec.frames import read_sampled_frames
from ..common.distributed import resolve_device
from ..common.provenance import differences, file_fingerprint, package_version
from ..model import OneVisionEncoderImageProcessor, OneVisionEncoderModel
from ..video import chunk_visible_indices, frame_positions, indices_to_positions, mosaic
from ..video.media import IMAGE_SUFFIXES, open_image
from .feature_store import FeatureStore, model_identity

if TYPE_CHECKING:
    from .batch import Outcome

MODES = ("image", "chunk", "codec")
FrameTransform = Callable[[np.ndarray], np.ndarray]  # uint8 frames [T, H, W, 3] -> the same shape


@dataclass
class EncoderInput:
    """One sample ready for the model (no batch dimension) and where its tokens sit."""

    name: str
    mode: str
    pixel_values: torch.Tensor
    visible_indices: torch.Tensor | None
    positions_thw: np.ndarray
    frame_ids: np.ndarray | None

    def batch_key(self) -> tuple[object, ...]:
        """Samples with equal keys can be stacked into one batch."""
        shape = None if self.visible_indices is None else tuple(self.visible_indices.shape)
        return self.mode, tuple(self.pixel_values.shape), shape


def guess_mode(path: str | os.PathLike[str]) -> str:
    """``image`` for picture files (by suffix), ``codec`` for everything else."""
    return "image" if Path(path).suffix.lower() in IMAGE_SUFFIXES else "codec"


def image_input(
    path: str | os.PathLike[str],
    processor: OneVisionEncoderImageProcessor,
    name: str | None = None,
    native: bool = False,
) -> EncoderInput:
    """One picture, upright (its EXIF orientation applied, as photo viewers show it): the processor's
    crop, or with ``native`` its native resolution (aspect kept, sides multiples of the patch)."""
    upright = open_image(path, upright=True)
    pixels = processor(images=upright, **({"mode": "native"} if native else {}))["pixel_values"][0]
    hp, wp = (side // processor.patch_size for side in pixels.shape[-2:])
    positions = indices_to_positions(torch.arange(hp * wp), (hp, wp)).numpy().astype(np.int32)
    return EncoderInput(name or str(path), "image", pixels, None, positions, None)


def chunk_input(
    path: str | os.PathLike[str],
    num_frames: int,
    processor: OneVisionEncoderImageProcessor,
    temporal_size: int = 64,
    name: str | None = None,
    rounding: str = "floor",
    transform: FrameTransform | None = None,
    frame_range: tuple[int, int] | None = None,
) -> EncoderInput:
    """``num_frames`` frames spread over the video, at virtual frames ``linspace(0, 63, num_frames)``
    (rounded down as in the model card, or to nearest as in the release's probe: ``rounding``).
    ``transform`` maps the decoded uint8 frames ``[T, H, W, 3]`` before preprocessing (augmentation);
    ``frame_range`` ``(start, end)`` spreads the frames over that clip of the video."""
    frame_ids, frames = read_sampled_frames(path, num_frames, frame_range=frame_range)
    if transform is not None:
        frames = list(transform(np.stack(frames)))
    clip = processor(videos=[frames])["pixel_values_videos"][0]
    hp, wp = (side // processor.patch_size for side in clip.shape[-2:])
    indices = chunk_visible_indices(frame_positions(num_frames, temporal_size, rounding), (hp, wp))
    positions = indices_to_positions(indices, (hp, wp)).numpy().astype(np.int32)
    return EncoderInput(name or str(path), "chunk", clip, indices, positions, frame_ids)


def codec_input(
    path: str | os.PathLike[str],
    num_patches: int,
    patch_size: int,
    name: str | None = None,
    transform: FrameTransform | None = None,
    **options: object,
) -> EncoderInput:
    """K codec-selected patches of 64 frames (encoder preset), as a mosaic when K fills whole frames.
    ``transform`` maps the kept uint8 frames ``[T, H, W, 3]`` after they were scored (augmentation)."""
    selection = select_patches(path, num_patches=num_patches, patch_size=patch_size, keep_frames=True, **options)
    if transform is not None:
        selection = dataclasses.replace(selection, frames=transform(selection.frames))
    return selection_input(selection, name or str(path))


def selection_input(selection: CodecSelection, name: str, clip: torch.Tensor | None = None) -> EncoderInput:
    """A selection's patches as model input: the K patches re-tiled into a mosaic when they fill whole
    frames, else the clip with its indices. ``clip`` ``[3, T, H, W]`` defaults to the frames the selection kept."""
    clip = selection.pixel_values() if clip is None else clip[None]
    indices = torch.from_numpy(selection.visible_indices)[None]
    if selection.num_patches % (selection.grid[1] * selection.grid[2]) == 0:
        clip, indices = mosaic(clip, indices, selection.patch_size)
    return EncoderInput(name, "codec", clip[0], indices[0], selection.positions_thw, selection.frame_ids)


@torch.inference_mode()
def encode_tensors(
    model: OneVisionEncoderModel, samples: list[EncoderInput], layer: int | None = None, pooled: bool = False
) -> list[torch.Tensor]:
    """Features of samples sharing a :meth:`EncoderInput.batch_key`, on the CPU in the model's dtype:
    ``[N, D]`` token features (the last hidden state, or ``hidden_states[layer]``), or ``[D]`` pooled
    features with ``pooled``."""
    if len({s.batch_key() for s in samples}) != 1:
        raise ValueError("samples of one batch must share mode and shapes")
    if pooled and not model.config.use_head:
        raise ValueError("--pooled needs a model with a pooling head (this checkpoint has use_head=false)")
    parameter = next(model.parameters())
    pixels = torch.stack([s.pixel_values for s in samples]).to(parameter.device, parameter.dtype)
    indices = None
    if samples[0].visible_indices is not None:
        indices = torch.stack([s.visible_indices for s in samples]).to(parameter.device)
    output = model(
        pixel_values=pixels,
        visible_indices=indices,
        output_hidden_states=layer is not None,
        output_pooler=pooled,
    )
    if pooled:
        values = output.pooler_output
    elif layer is not None:
        count = len(output.hidden_states)
        if not -count <= layer < count:
            raise ValueError(f"--layer {layer} is out of range: the model has {count} hidden states")
        values = output.hidden_states[layer]
    else:
        values = output.last_hidden_state
    return list(values.cpu())


def encode_batch(
    model: OneVisionEncoderModel, samples: list[EncoderInput], layer: int | None = None, pooled: bool = False
) -> list[np.ndarray]:
    """:func:`encode_tensors` as float32 arrays."""
    return [values.float().numpy() for values in encode_tensors(model, samples, layer, pooled)]


@dataclass(frozen=True)
class EncodeJob:
    """What ``onevision encode`` computes into a feature folder (``out``): the features of ``inputs``
    (``(path, name)`` per row, in row order) in parts of ``rows_per_part`` rows. The model's content
    (``model_sha256``) and the options but ``device`` and ``batch_size`` decide the features, and so the
    folder's identity (:meth:`identity`). It pickles, so an engine can ship it to workers once and have
    them run :func:`extract_part`.

    ``model_sha256``, when not given, is computed from the model's files as the job is made
    (:func:`~.feature_store.model_identity`: reading them, about 1.4 s per 1.2 GB on 2 CPU cores; a hub id not
    yet in the local cache is downloaded first), so every process that shares a job shares the model's identity."""

    out: str
    model: str
    inputs: tuple[tuple[str, str], ...]
    mode: str = "auto"  # auto: image for picture files, codec for the rest
    frames: int = 8
    num_patches: int = 2048
    frame_range: tuple[int, int] | None = None
    layer: int | None = None
    pooled: bool = False
    native: bool = False
    dtype: str = "float32"
    rows_per_part: int = 64
    device: str = "auto"
    batch_size: int = 8
    model_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.model_sha256:
            object.__setattr__(self, "model_sha256", model_identity(self.model))

    def identity(self) -> dict[str, object]:
        """The options that make the features, and the model by its content (not its path: a copy of the
        checkpoint elsewhere is the same model)."""
        options = ("mode", "frames", "num_patches", "frame_range", "layer", "pooled", "native", "dtype")
        identity: dict[str, object] = {"model_sha256": self.model_sha256}
        identity.update({key: getattr(self, key) for key in options})
        identity["frame_range"] = None if self.frame_range is None else list(self.frame_range)
        return identity

    def sample(self, path: str, name: str, processor: OneVisionEncoderImageProcessor) -> EncoderInput:
        """The model input of one input file under this job's mode and options."""
        mode = guess_mode(path) if self.mode == "auto" else self.mode
        if mode == "image":
            return image_input(path, processor, name, native=self.native)
        if mode == "chunk":
            return chunk_input(path, self.frames, processor, name=name, frame_range=self.frame_range)
        try:
            return codec_input(path, self.num_patches, processor.patch_size, name=name, frame_range=self.frame_range)
        except ImageNotVideoError:  # a picture named as a video: in auto mode what the file holds decides
            if self.mode != "auto":
                raise
            return image_input(path, processor, name, native=self.native)


@dataclass(frozen=True)
class PartOutcome:
    """What :func:`extract_part` did: ``written`` or ``skipped`` (the part was there); its rows, and the
    failure records it wrote (none when skipped: they are in the part, :meth:`FeatureStore.failures`)."""

    part: int
    status: str
    rows: int
    failures: tuple[dict[str, object], ...] = ()
    seconds: float = 0.0


@functools.lru_cache(maxsize=1)
def load_encoder(
    model: str, dtype: str, device: str, model_sha256: str = ""
) -> tuple[OneVisionEncoderModel, OneVisionEncoderImageProcessor]:
    """The model and its processor, loaded once per process (a worker runs many parts of one job) and
    again when ``model_sha256`` says that its files changed."""
    encoder = OneVisionEncoderModel.from_pretrained(model, dtype=getattr(torch, dtype)).to(device).eval()
    return encoder, OneVisionEncoderImageProcessor(patch_size=encoder.config.patch_size)


def encode_rows(
    job: EncodeJob,
    rows: Sequence[int],
    on_input: Callable[[], None] | None = None,
    on_failure: Callable[[dict[str, object]], None] | None = None,
) -> tuple[dict[int, dict[str, torch.Tensor]], list[dict[str, object]]]:
    """The arrays of each row that could be encoded (``features``, ``positions_thw``, ``frame_ids`` for
    videos), and a failure record (row, path, name, error, message) for each that could not be read.
    Any exception while reading an input is that input's failure (ours, FFmpeg's, OpenCV's, PIL's);
    the model's errors stop the job. ``on_input`` is called as each input is done, ``on_failure`` with
    each failure record as it happens."""
    from .batch import error_name

    model, processor = load_encoder(job.model, job.dtype, resolve_device(job.device), job.model_sha256)
    encoded: dict[int, dict[str, torch.Tensor]] = {}
    failures: list[dict[str, object]] = []
    # Samples wait for others of their shape (native-resolution pictures, pictures among videos), so
    # batches stay full; at most one batch per shape is held.
    pending: dict[tuple[object, ...], list[tuple[int, EncoderInput]]] = {}

    def flush(batch: list[tuple[int, EncoderInput]]) -> None:
        samples = [sample for _, sample in batch]
        for (row, sample), features in zip(batch, encode_tensors(model, samples, job.layer, job.pooled), strict=True):
            positions = torch.from_numpy(sample.positions_thw.astype(np.int32))
            encoded[row] = {"features": features, "positions_thw": positions}
            if sample.frame_ids is not None:
                encoded[row]["frame_ids"] = torch.from_numpy(np.asarray(sample.frame_ids, dtype=np.int32))
            if on_input is not None:
                on_input()

    for row in rows:
        path, name = job.inputs[row]
        try:
            sample = job.sample(path, name, processor)
        except Exception as error:
            message = " ".join(str(error).split()) or repr(error)  # one line (OpenCV's messages span several)
            failures.append({"row": row, "path": path, "name": name, "error": error_name(error), "message": message})
            if on_failure is not None:
                on_failure(failures[-1])
            if on_input is not None:
                on_input()
            continue
        batch = pending.setdefault(sample.batch_key(), [])
        batch.append((row, sample))
        if len(batch) == job.batch_size:
            flush(pending.pop(sample.batch_key()))
    for batch in pending.values():
        flush(batch)
    return dict(sorted(encoded.items())), failures


def extract_part(
    job: EncodeJob,
    part: int,
    on_input: Callable[[], None] | None = None,
    on_failure: Callable[[dict[str, object]], None] | None = None,
) -> PartOutcome:
    """Encode part ``part`` of ``job`` into ``job.out/part-NNNNN.safetensors``, written atomically with
    the record of what made it (:func:`part_record`); a part already there is skipped, so calling it
    again (a rerun, a retried task) is harmless. The job's index must exist (:func:`open_job`). Any
    engine may schedule the parts: one process, shards, or workers that each run this function.
    ``on_input`` and ``on_failure`` are :func:`encode_rows`'."""

    store = FeatureStore(job.out, len(job.inputs), job.rows_per_part)
    rows = store.part_rows(part)
    if store.has_part(part):
        return PartOutcome(part, "skipped", len(rows))
    started = time.perf_counter()
    record = part_record(job, rows)  # before the inputs are read: the identity of what is encoded
    encoded, failures = encode_rows(job, rows, on_input, on_failure)
    store.write_part(part, encoded, failures, record)
    return PartOutcome(part, "written", len(rows), tuple(failures), time.perf_counter() - started)


def input_identity(path: str) -> list[object]:
    """``[fingerprint, mtime_ns]`` of an input file (:func:`~.provenance.file_fingerprint`), ``[None, None]``
    when it cannot be read (its failure is recorded with the row)."""
    try:
        modified = os.stat(path).st_mtime_ns
        return [file_fingerprint(path), modified]
    except OSError:
        return [None, None]


def part_record(job: EncodeJob, rows: range) -> dict[str, object]:
    """What makes the part of ``rows``: the job's identity, the package version, and each input's path
    (absolute, as the index holds it) with its :func:`input_identity`."""
    paths = [os.path.abspath(job.inputs[row][0]) for row in rows]
    return {
        "job": job.identity(),
        "version": package_version(),
        "rows": [rows.start, rows.stop],
        "inputs": [[path, *input_identity(path)] for path in paths],
    }


def _same_input(path: str, recorded: Sequence[object]) -> bool:
    """Whether ``path`` holds the content ``recorded`` (``[path, fingerprint, mtime_ns]``) saw. The same
    path, size and modification time are taken as the same content without reading it again (a
    dataset's resume would otherwise read every input); anything else is fingerprinted."""
    recorded_path, fingerprint, modified = recorded
    try:
        now = os.stat(path)
    except OSError:
        return fingerprint is None
    if fingerprint is None:
        return False
    if path == recorded_path and now.st_mtime_ns == modified and str(fingerprint).startswith(f"{now.st_size}:"):
        return True
    try:
        return file_fingerprint(path) == fingerprint
    except OSError:
        return False


def changed_parts(job: EncodeJob, store: FeatureStore, parts: Sequence[int]) -> tuple[dict[int, str], dict[int, str]]:
    """Among ``parts``, those written: the ones this job may not reuse, each with why (another job or
    rows made them, an input changed since, or no record says what made them), and the ones written by
    another package version (reusable: the same job), each with that version."""
    identity, version = job.identity(), package_version()
    changed: dict[int, str] = {}
    versions: dict[int, str] = {}
    for part in parts:
        if not store.has_part(part):
            continue
        record = store.part_record(part)
        rows = store.part_rows(part)
        if record is None:
            changed[part] = f"{store.part_path(part)} has no record of what made it (written by an earlier version)"
        elif found := differences(record["job"], identity):
            changed[part] = f"{store.part_path(part)} was made by another job ({'; '.join(found)})"
        elif record["rows"] != [rows.start, rows.stop]:
            changed[part] = (
                f"{store.part_path(part)} holds rows {record['rows'][0]}..{record['rows'][1] - 1} of another job"
            )
        else:
            for row, recorded in zip(rows, record["inputs"], strict=True):
                path = os.path.abspath(job.inputs[row][0])
                if not _same_input(path, recorded):
                    changed[part] = f"{path} changed since it was encoded (part {part})"
                    break
        if part not in changed and record is not None and record["version"] != version:
            versions[part] = str(record["version"])
    return changed, versions


def extract_part_job(job: EncodeJob, part: int) -> Outcome:
    """:func:`extract_part` as a job of a batch engine (:meth:`~.engine.Engine.run`: worker processes, Ray
    tasks): ``done`` once the part is on disk (its inputs' failures recorded in it), ``fault`` when the
    folder cannot be written. Any other error is the part's failure, which the engine records."""
    from ..common.files import storage_fault
    from .batch import DONE, FAULT, Outcome

    try:
        extract_part(job, part)
    except OSError as error:
        reason = storage_fault(error)
        if reason is None:
            raise
        return Outcome(FAULT, message=f"{reason}: {job.out}")
    return Outcome(DONE)


def open_job(job: EncodeJob, replace: bool = False) -> FeatureStore:
    """The job's feature folder, created with its index, or checked to hold this very job
    (:class:`~.feature_store.JobMismatchError` says what differs), or with ``replace`` given this job's
    index over another's (:func:`changed_parts` then tells which parts to encode again)."""

    # Absolute paths (links not resolved): the same inputs whatever folder a rerun or another shard starts in.
    inputs = [(os.path.abspath(path), name) for path, name in job.inputs]
    about = {"model": job.model, "version": package_version()}
    return FeatureStore.create(job.out, job.identity(), inputs, job.rows_per_part, replace=replace, about=about)
