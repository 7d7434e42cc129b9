"""``onevision encode``: features for images and videos, into one file (small jobs) or into a feature
folder written in parts as they finish (datasets: flat memory, resumable, shardable, failures recorded).

The folder's format and reader are the probe cache's (:mod:`..feature_store`); each part is the
work of :func:`..features.extract_part`, which any engine can schedule: one process runs the parts of
its shard (``--shard i/n`` or torchrun's ``RANK``/``WORLD_SIZE``) one after the other, or hands them to
``--workers`` processes or to a Ray cluster (``--engine ray``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import signal
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..media import MEDIA_PATTERNS, list_inputs, output_name
from ..progress import report_progress
from .engine_options import add_engine_options, engine_from_args
from .options import (
    UsageError,
    add_command,
    add_frame_range,
    at_least,
    names_of_inputs,
    not_a_folder,
    refuse_outputs_over_inputs,
    refuse_replacing_others,
    report_failure,
)

if TYPE_CHECKING:
    from ..batch import Engine
    from ..feature_store import FeatureStore
    from ..features import EncodeJob, PartOutcome
    from .preprocess_cmd import Shard

OUTPUT_SUFFIXES = (".safetensors", ".npz")
LIST_SUFFIXES = (".txt", ".lst", ".list")  # a file given with one of these names its inputs, one per line
# What marks a features file as ours: the key of its safetensors metadata, the start of its .npz's zip comment.
FILE_MARK = "onevision"


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "encode",
        "encode images and videos into features",
        "Encode each input: image or video files, folders (their images and videos, recursively; other files "
        "are skipped) and list files (.txt, .lst or .list: one path per line, relative to the list). "
        "Into a .safetensors or .npz file (small jobs), per input NAME the arrays NAME.features ([tokens, D], or "
        "[D] with --pooled), NAME.positions_thw ([tokens, 3] rotary positions) and, for videos, NAME.frame_ids "
        "(the source frames used). Into a folder (any other --out): a feature folder, index.json (every input "
        "with its part and row) and part-NNNNN.safetensors of --clips-per-part inputs, each written when done; "
        "a rerun resumes at the missing parts, --shard i/n (or torchrun's RANK/WORLD_SIZE) splits the parts "
        "between processes, and inputs that fail are recorded in failures*.jsonl while the run goes on. NAME is "
        "the path inside the folder or list, or the file name of a file given directly (its path from the "
        "inputs' common folder when file names repeat), as given, links not followed. A rerun reuses a part only "
        "when its model (by content), options and inputs (by content) are the same; otherwise it stops, naming "
        "what differs, unless --overwrite. An existing --out file is replaced only if encode wrote it. Modes: "
        "image (448 crop, "
        "or --native resolution; EXIF orientation applied), chunk (--frames uniformly sampled frames on the "
        "64-frame grid), codec (-k codec-selected patches of 64 frames); auto picks image for picture files and "
        "codec for videos.",
        [
            "onevision encode photo.jpg clip.mp4 --model lmms-lab-encoder/onevision-encoder-large "
            "--out feats.safetensors",
            "onevision encode videos/ --model ./checkpoint --mode chunk --frames 16 --pooled --out pooled.npz",
            "onevision encode k400/ --model ./checkpoint --device cuda --dtype bfloat16 --out k400-features/",
            "onevision encode list.txt --model ./checkpoint --out features/ --shard 0/4",
            "torchrun --nproc_per_node 8 -m onevision_encoder encode videos/ --model ./checkpoint --out features/",
            "onevision encode videos/ --model ./ckpt --device cuda --engine ray --ray-address auto --out features/",
            "onevision encode photos/ --model ./checkpoint --mode image --native --out photo-features/",
        ],
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or list files")
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument("--mode", choices=("auto", "image", "chunk", "codec"), default="auto")
    parser.add_argument(
        "--native", action="store_true", help="images at their native resolution (aspect kept) instead of the crop"
    )
    parser.add_argument("--frames", type=int, choices=(8, 16), default=8, help="frames of a chunk (default 8)")
    parser.add_argument("-k", "--num-patches", type=int, default=2048, help="codec patches (default 2048)")
    add_frame_range(parser)
    parser.add_argument("--layer", type=int, help="hidden state to save (e.g. -2 for LMM towers); default last")
    parser.add_argument("--pooled", action="store_true", help="save the pooled feature per input")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:1 ... (default: the GPU if any; cuda:LOCAL_RANK under torchrun)",
    )
    parser.add_argument("--batch-size", type=at_least(1), default=8, help="inputs per forward pass (default 8)")
    parser.add_argument(
        "--clips-per-part", type=at_least(1), default=64, help="inputs per part of a feature folder (default 64)"
    )
    parser.add_argument("--shard", help="i/n: encode every n-th part starting at i (default: RANK/WORLD_SIZE)")
    add_engine_options(parser, unit="inputs")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="in a feature folder, encode again the parts made by another model, options, inputs or package "
        "version (a rerun without it stops before any work, naming what differs); other files stay",
    )
    parser.add_argument("--out", required=True, type=Path, help="output .safetensors or .npz file, or folder")


def named_inputs(inputs: list[str]) -> tuple[dict[str, str], int]:
    """Every input file with its output name, in the order given, and how many files the folders held
    that are not media (skipped). A folder's media files (recursively, sorted) and a list file's entries
    are named by their path inside it (:func:`..media.list_inputs`, as ``preprocess`` lists them), files
    given directly by :func:`names_of_inputs`. A file given twice, two inputs of one name, or a folder
    without media are usage errors."""
    listed = [path for path in inputs if Path(path).is_dir() or Path(path).suffix.lower() in LIST_SUFFIXES]
    direct = names_of_inputs([path for path in inputs if path not in listed])
    named: list[tuple[str, str]] = []
    ignored = 0
    for given in inputs:
        if given not in listed:
            named.append((str(given), direct[str(given)]))
            continue
        try:
            listing = list_inputs(given, MEDIA_PATTERNS)
        except (OSError, ValueError) as error:  # an unreadable or empty list file
            message = str(error)
            raise UsageError(message if message.startswith(str(given)) else f"{given}: {message}") from None
        if not listing.files:
            raise UsageError(f"{given}: the folder holds no image or video")
        named.extend((str(path), output_name(path, listing.base)) for path in listing.files)
        ignored += listing.ignored
    paths: dict[str, str] = {}
    owners: dict[str, str] = {}
    for path, name in named:
        if os.path.abspath(path) in paths:
            raise UsageError(f"an input is given more than once: {paths[os.path.abspath(path)]} and {path}")
        if name in owners:
            raise UsageError(f"{owners[name]} and {path} would both be saved as {name}: encode them separately")
        paths[os.path.abspath(path)] = owners[name] = path
    return dict(named), ignored


def run(args: argparse.Namespace) -> int:
    from .preprocess_cmd import parse_shard

    single = args.out.suffix in OUTPUT_SUFFIXES
    if not single and args.out.suffix and not args.out.is_dir():
        raise UsageError(
            f"{args.out}: the output must be a {' or '.join(OUTPUT_SUFFIXES)} file, or a folder (a name without "
            "a suffix, or an existing folder)"
        )
    if not single and not_a_folder(args.out):
        raise UsageError(f"argument --out: {not_a_folder(args.out)}")
    if args.native and args.mode not in ("auto", "image"):
        raise UsageError(f"--native is for images: --mode {args.mode} encodes videos")
    if args.dtype == "bfloat16" and args.out.suffix == ".npz":
        raise UsageError("an .npz file cannot hold bfloat16: write .safetensors or a folder, or use --dtype float16")
    shard = parse_shard(args.shard)
    if single and shard.count > 1:
        raise UsageError(f"{shard.count} processes (--shard or WORLD_SIZE) write a feature folder: give --out a folder")
    engine = engine_from_args(args)
    if single and (engine.name != "local" or (engine.workers or 1) > 1):
        raise UsageError("--engine ray and --workers hand out the parts of a feature folder: give --out a folder")
    names, ignored = named_inputs(args.inputs)
    refuse_outputs_over_inputs(((path, args.out) for path in [*args.inputs, *names]), folders=not single)
    if single:
        refuse_replacing_others([args.out], written_by_encode, "encode")

    from ..features import EncodeJob

    job = EncodeJob(  # reads the model's files for its content hash
        out=str(args.out),
        model=args.model,
        inputs=tuple(names.items()),
        mode=args.mode,
        frames=args.frames,
        num_patches=args.num_patches,
        frame_range=args.frame_range,
        layer=args.layer,
        pooled=args.pooled,
        native=args.native,
        dtype=args.dtype,
        rows_per_part=args.clips_per_part,
        device=args.device,
        batch_size=args.batch_size,
    )
    if single:
        return encode_file(job, args.out)
    if engine.name == "ray" and str(job.device).startswith("cuda"):
        engine = dataclasses.replace(engine, gpus=1.0)  # each part's task holds a GPU of the cluster
    return encode_folder(job, args.out, shard, ignored, engine, args.overwrite)


def written_by_encode(path: Path) -> bool:
    """Whether ``path`` is a features file this command wrote (:data:`FILE_MARK` in it)."""
    from safetensors import SafetensorError, safe_open

    try:
        if path.suffix == ".safetensors":
            with safe_open(path, "np") as handle:
                return FILE_MARK in (handle.metadata() or {})
        with zipfile.ZipFile(path) as archive:
            return archive.comment.startswith(FILE_MARK.encode())
    except (OSError, SafetensorError, zipfile.BadZipFile):
        return False


def _report(record: dict[str, Any]) -> None:
    path, message = str(record["path"]), str(record["message"])
    report_failure(path, RuntimeError(message if message.startswith(path) else f"{record['error']}: {message}"))


def encode_file(job: EncodeJob, out: Path) -> int:
    """Every input into the one file ``out``: all features are held in memory until it is written."""
    import numpy as np
    from safetensors.torch import save

    from ..features import encode_rows
    from ..files import atomic_write
    from ..provenance import package_version

    with report_progress(len(job.inputs), "encode", "input") as bar:
        encoded, failures = encode_rows(job, range(len(job.inputs)), bar.update)
    for record in failures:
        _report(record)
    if not encoded:
        raise ValueError("no input could be encoded")
    arrays = {f"{job.inputs[row][1]}.{key}": value for row, values in encoded.items() for key, value in values.items()}
    meta = json.dumps({"model": job.model, **job.identity(), "version": package_version()})
    if out.suffix == ".safetensors":
        contiguous = {name: value.contiguous() for name, value in arrays.items()}
        atomic_write(out, save(contiguous, metadata={FILE_MARK: meta}))
    else:
        buffer = io.BytesIO()
        np.savez(buffer, **{name: value.numpy() for name, value in arrays.items()})
        with zipfile.ZipFile(buffer, "a") as archive:  # the mark, where np.load does not see it
            archive.comment = f"{FILE_MARK} {meta}".encode()
        atomic_write(out, buffer.getvalue())
    print(f"{len(encoded)} encoded, {len(failures)} failed -> {out}")
    return 1 if failures else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def encode_folder(
    job: EncodeJob, out: Path, shard: Shard, ignored: int, engine: Engine | None = None, overwrite: bool = False
) -> int:
    """The parts of this shard that are missing, then the shard's summary (and the whole folder's, once
    every part exists). The parts are encoded here one after the other, or by ``engine``'s workers (worker
    processes, Ray tasks) in the order they are free. A part already written is reused only when its record
    matches this job (:func:`..features.changed_parts`); otherwise the run stops before any work, or with
    ``overwrite`` encodes that part again."""
    from ..feature_store import INDEX_FILE, JobMismatchError
    from ..features import changed_parts, extract_part, open_job
    from ..files import folder_lock, storage_fault
    from ..provenance import package_version
    from .preprocess_cmd import prepare_output

    if out.is_dir() and not (out / INDEX_FILE).is_file() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise UsageError(f"{out} holds other files and no {INDEX_FILE} (not a feature folder): name a new folder")
    prepare_output(out)
    try:
        store = open_job(job, replace=overwrite)
    except JobMismatchError as error:
        raise UsageError(
            f"{out} holds the features of another job ({'; '.join(error.differences)}): add --overwrite to encode "
            "again the parts that differ"
        ) from None
    with folder_lock(out, f".encode{shard.suffix}.lock"):
        mine = [part for part in range(store.num_parts) if shard.takes(part)]
        beyond = [part for part in store.written_parts() if part >= store.num_parts and shard.takes(part)]
        changed, versions = changed_parts(job, store, mine + beyond)
        if changed and not overwrite:
            first = changed[min(changed)]
            others = f" (and {len(changed) - 1} more parts)" if len(changed) > 1 else ""
            raise UsageError(f"{first}{others}: add --overwrite to encode {'them' if others else 'it'} again")
        if versions:
            earlier = ", ".join(sorted(set(versions.values())))
            reuse = "encoded again (--overwrite)" if overwrite else "reused: add --overwrite to encode them again"
            print(
                f"note: {len(versions)} parts were written by onevision-encoder {earlier}, this is "
                f"{package_version()}: {reuse}",
                file=sys.stderr,
            )
        if overwrite:
            for part in sorted({*changed, *versions}):
                store.part_path(part).unlink()  # a part of this format (its record was read): ours
        todo = [part for part in mine if not store.has_part(part)]
        store.remove_unfinished(todo)
        outcomes: list[PartOutcome] = []
        interrupted = False
        log = not sys.stderr.isatty()  # no bar there: a line per part, for logs
        started = time.perf_counter()
        on_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # a kill ends the run as cleanly as Ctrl-C
        try:
            total = sum(len(store.part_rows(part)) for part in todo)
            with (
                _failure_log(store, shard, [part for part in mine if part not in todo]) as record_failure,
                report_progress(total, f"encode {shard.index}/{shard.count}", "input") as bar,
            ):
                if engine is None or (engine.name == "local" and (engine.workers or 1) == 1):
                    finished = (extract_part(job, part, bar.update, record_failure) for part in todo)
                else:
                    finished = _parts_of(engine, job, store, todo, bar, record_failure)
                for number, outcome in enumerate(finished, 1):
                    part = outcome.part
                    outcomes.append(outcome)
                    if log:
                        print(
                            f"part {part} done ({number}/{len(todo)} of this run): {outcome.rows} inputs, "
                            f"{len(outcome.failures)} failed, {outcome.seconds:.1f} s -> {store.part_path(part)}",
                            file=sys.stderr,
                            flush=True,
                        )
        except KeyboardInterrupt:
            interrupted = True
        except OSError as error:
            reason = storage_fault(error)
            if reason is None:
                raise
            raise OSError(f"{reason}: {out} (the finished parts stay: rerun to resume)") from None
        finally:
            signal.signal(signal.SIGTERM, on_sigterm)
        seconds = time.perf_counter() - started
        return _summarise(store, shard, mine, len(mine) - len(todo), outcomes, ignored, interrupted, seconds)


@contextlib.contextmanager
def _failure_log(store: FeatureStore, shard: Shard, written: list[int]) -> Iterator[Callable[[dict[str, Any]], None]]:
    """``failures{shard}.jsonl`` as failures happen: it starts with the records of the shard's parts already
    written, then each failure is reported and appended, flushed to disk at once, so that a killed run
    still says what failed (a finished run rewrites it from the parts: :func:`_summarise`)."""
    from ..files import atomic_write

    path = store.folder / f"failures{shard.suffix}.jsonl"
    atomic_write(path, "".join(json.dumps(record) + "\n" for record in store.failures(written)).encode())
    with open(path, "a") as log:

        def record_failure(record: dict[str, Any]) -> None:
            _report(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())

        yield record_failure


def _parts_of(
    engine: Engine,
    job: EncodeJob,
    store: FeatureStore,
    todo: list[int],
    bar: Any,
    on_failure: Callable[[dict[str, Any]], None],
) -> Iterator[PartOutcome]:
    """``todo``'s parts as ``engine``'s workers finish them, read back from disk, their failures given to
    ``on_failure``. A part whose job failed (the model, not an input: inputs' failures are recorded in
    their part) is reported and left to a rerun; a folder that cannot be written stops the run."""
    from ..batch import DONE, FAULT
    from ..features import PartOutcome, extract_part_job

    for part, outcome in engine.run(todo, functools.partial(extract_part_job, job)):
        rows = len(store.part_rows(part))
        bar.update(rows)
        if outcome.status == FAULT:
            raise OSError(f"{outcome.message} (the finished parts stay: rerun to resume)")
        if outcome.status != DONE:
            print(f"error: part {part} was not encoded ({outcome.error}: {outcome.message})", file=sys.stderr)
            continue
        failures = tuple(store.failures([part]))
        for record in failures:
            on_failure(record)
        yield PartOutcome(part, "written", rows, failures)


def _tally(store: FeatureStore, parts: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Counts of ``parts`` as written on disk, and their failure records."""
    written = [part for part in parts if store.has_part(part)]
    failures = store.failures(written)
    rows = sum(len(store.part_rows(part)) for part in written)
    counts = {
        "inputs": sum(len(store.part_rows(part)) for part in parts),
        "parts": len(parts),
        "parts_done": len(written),
        "encoded": rows - len(failures),
        "failed": len(failures),
        "not_done": sum(len(store.part_rows(part)) for part in parts) - rows,
    }
    return counts, failures


def _write_records(
    store: FeatureStore, suffix: str, summary: dict[str, Any], failures: list[dict[str, Any]] | None
) -> None:
    """The summary, and the failures file unless ``None`` (an interrupted run keeps the one it appended)."""
    from ..files import atomic_write

    if failures is not None:
        lines = "".join(json.dumps(record) + "\n" for record in failures)
        atomic_write(store.folder / f"failures{suffix}.jsonl", lines.encode())
    atomic_write(store.folder / f"summary{suffix}.json", json.dumps(summary, indent=1).encode())


def _summarise(
    store: FeatureStore,
    shard: Shard,
    mine: list[int],
    skipped: int,
    outcomes: list[PartOutcome],
    ignored: int,
    interrupted: bool,
    seconds: float,
) -> int:
    """Write this shard's failures and summary (the folder's too once every part exists), print the
    summary line; the exit status."""
    counts, failures = _tally(store, mine)
    encoded_now = sum(outcome.rows - len(outcome.failures) for outcome in outcomes)
    summary = {
        "shard": f"{shard.index}/{shard.count}",
        **counts,
        "parts_written": len(outcomes),
        "parts_skipped": skipped,
        "ignored": ignored,
        "interrupted": interrupted,
        "seconds": round(seconds, 3),
        "inputs_per_second": round(encoded_now / seconds, 3) if seconds > 0 else None,
    }
    _write_records(store, shard.suffix, summary, None if interrupted else failures)
    missing = len(store.missing_parts())
    if not missing and shard.count > 1:  # every shard that sees this writes the same thing
        whole, all_failures = _tally(store, list(range(store.num_parts)))
        _write_records(store, "", {**whole, "ignored": ignored}, all_failures)
    state = "interrupted: " if interrupted else ""
    line = (
        f"{state}parts {len(outcomes)} written, {skipped} skipped, {counts['parts'] - counts['parts_done']} not "
        f"done; inputs {counts['encoded']} encoded, {counts['failed']} failed"
    )
    if outcomes:
        line += f" ({summary['inputs_per_second'] or 0:.2f} inputs/s)"
    if ignored:
        line += f"; ignored {ignored} other files (not images or videos)"
    if failures:
        line += f"; failures in {store.folder / f'failures{shard.suffix}.jsonl'}"
    print(f"{line} -> {store.folder}" + (f" ({missing} of {store.num_parts} parts still to do)" if missing else ""))
    if interrupted:
        return 130
    return 1 if failures else 0
