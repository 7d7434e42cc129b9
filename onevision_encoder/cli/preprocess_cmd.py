"""``onevision preprocess``: dataset-scale codec selection, parallel, resumable, shardable.

Every input (a video of the folder, or an entry of the list file, named by its path as given: links
are not followed to their targets) gets its own folder ``OUT/<name>[@START-END]/``, written atomically,
whose meta.json records what made it (:mod:`..codec.selection_folder`). A run first checks all it can
before any work (options, the conversations file, outputs over inputs, a writable OUT, no other run on
OUT's shard, and what the folders already there were made from), then processes the videos
(:class:`..batch.Engine`: worker processes here, or Ray tasks on a cluster, with the same outputs and
records), recording each failure as it happens, and accounts for every one: done + skipped + failed +
remaining = videos, as the folders on disk show.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch import DONE, FAILED, FAULT, Engine, Outcome, error_name
from ..conversations import Conversations, ConversationsError, packed_item, read_conversations
from ..files import atomic_directory, atomic_write, check_writable, folder_lock, remove_leftovers, storage_fault
from ..media import VIDEO_PATTERNS, InputListing, list_inputs, output_name
from .engine_options import add_engine_options, engine_from_args
from .options import (
    UsageError,
    add_command,
    add_overwrite,
    add_selection_options,
    output_folder,
    refuse_outputs_over_inputs,
    report_failure,
    selection_folders,
    selection_options,
)


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "preprocess",
        "codec selection for a whole dataset (parallel, resumable, shardable)",
        "Select patches for every video of a folder (recursively; other files are ignored, see --include) "
        "or of a list file (one path per line), into OUT/<path relative to the input, as given>/ (with "
        "--frame-range S:E, <path>@S-E/). Each video's folder appears complete or not at all, and its "
        "meta.json records the input, the options and the files written. A rerun skips the folders made "
        "from the same input with the same options; one made otherwise stops it before any work, unless "
        "--overwrite (which never replaces a folder holding files this tool did not write). Failures are "
        "recorded with their reason in OUT/failures*.jsonl as they happen and the run goes on; a full or "
        "read-only OUT stops it. "
        "One run at a time per OUT and shard (a lock). Shard across machines with --shard i/n or the RANK "
        "and WORLD_SIZE environment, or hand the videos out to a Ray cluster with --engine ray. "
        "With --pack (lmm preset) each video also gets the release's training format: mosaic_0..7 images "
        "(mosaic 0 = the whole first frame) and positions_thw.npy; --conversations rewrites a LLaVA-style "
        "file's <video> into those <image> entries.",
        [
            "onevision preprocess videos/ --out selections/ --workers 2",
            "onevision preprocess list.txt --out sel/ --shard 0/4",
            "onevision preprocess /shared/videos/ --out /shared/sel/ --engine ray --ray-address auto",
            "onevision preprocess videos/ --preset lmm --pack --conversations llava.json --out packed/",
        ],
    )
    parser.add_argument("source", metavar="LIST_OR_FOLDER", type=Path, help="folder of videos, list file, or one video")
    parser.add_argument("--out", required=True, type=output_folder, help="output folder")
    add_overwrite(parser)
    parser.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="take the folder's files whose names match GLOB, case-insensitive (repeatable; default: video "
        "suffixes such as *.mp4); a list file's entries are all taken",
    )
    add_engine_options(parser)
    parser.add_argument("--shard", help="i/n: process every n-th video starting at i (default: RANK/WORLD_SIZE)")
    parser.add_argument("--pack", action="store_true", help="also write mosaics and positions_thw.npy")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg", help="mosaic images (default jpg)")
    parser.add_argument("--conversations", type=Path, help="LLaVA-style JSON/JSONL whose <video> to rewrite")
    add_selection_options(parser)


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @property
    def tag(self) -> str:
        return f"shard{self.index}of{self.count}."

    @property
    def suffix(self) -> str:
        return "" if self.count == 1 else f".shard-{self.index}-of-{self.count}"

    @property
    def lock_name(self) -> str:
        return f".preprocess{self.suffix}.lock"

    def takes(self, number: int) -> bool:
        """Whether this shard takes the ``number``-th input (counted from 0)."""
        return number % self.count == self.index


def parse_shard(text: str | None) -> Shard:
    if text is None:
        rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
        text = f"{rank}/{world}"
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text}: need 0 <= i < n")
    return Shard(index, count)


def is_finished(folder: str | os.PathLike[str], video: str | os.PathLike[str], recorded: dict[str, Any]) -> bool:
    """Whether ``folder`` holds ``video``'s selection made with the ``recorded`` options (by any run)."""
    from ..codec.selection_folder import examine

    return examine(Path(folder), video, recorded).reusable


def resumable(plan: Plan, recorded: dict[str, Any], overwrite: bool) -> list[tuple[str, str]]:
    """This shard's ``(video, folder)`` items to process: all but those whose folder was made from the same
    input with the same options. Before any work, a folder made otherwise stops the run (one line, the
    first such folder and how many more) unless ``overwrite``; a folder holding what this tool did not
    write stops it whatever the flags. Another package version alone is noted."""
    from ..codec.selection_folder import examine

    todo: list[tuple[str, str]] = []
    otherwise = []
    versions: Counter[str] = Counter()
    for video in plan.mine:
        found = examine(plan.folders[video], video, recorded)
        if found.reusable:
            versions.update([found.version] if found.version else [])
        elif found.not_ours is not None:
            raise UsageError(found.refusal())
        elif found.differences and not overwrite:
            otherwise.append(found)
        else:
            todo.append((str(video), str(found.folder)))
    if otherwise:
        more = len(otherwise) - 1
        also = f", and so {_count(more, 'was', 'were')} {more} other finished {_count(more, 'folder')}" if more else ""
        them = "them" if more else "it"
        raise UsageError(f"{otherwise[0].made_otherwise()}{also}; add --overwrite to replace {them}")
    if versions:
        from ..provenance import package_version

        count = sum(versions.values())
        print(
            f"note: {count} finished {_count(count, 'folder')} {_count(count, 'was', 'were')} made by "
            f"onevision-encoder {', '.join(sorted(versions))} (this is {package_version()}); reused",
            file=sys.stderr,
        )
    return todo


def _count(number: int, one: str, many: str | None = None) -> str:
    return one if number == 1 else many or one + "s"


def process_video(
    item: tuple[str, str], *, options: dict[str, Any], pack: bool, image_format: str, tag: str
) -> Outcome:
    """Select (and pack) the video ``item[0]`` into the folder ``item[1]``, recording what made it. Any
    exception is the video's failure (:func:`..batch.attempt`), a folder in the way holding files this tool
    did not write included; a fault of the storage written to is ``FAULT``: the run stops."""
    from ..codec import select_patches
    from ..codec.selection_folder import check_ours, made_from, recorded_options

    video, folder = item
    recorded = recorded_options(options, pack, image_format)
    if is_finished(folder, video, recorded):  # retried after its pool broke, but it had finished
        return Outcome(DONE)
    selection = select_patches(video, keep_frames=pack, **options)
    made = made_from(video, recorded)
    try:
        with atomic_directory(folder, tag, check_replaceable=check_ours) as temporary:
            if pack:
                write_pack(selection, temporary, image_format)
            selection.write_files(temporary, made)  # last: its record lists the files written
    except OSError as error:
        reason = storage_fault(error)
        if reason is None:
            raise
        return Outcome(FAULT, error_name(error), reason)
    return Outcome(DONE)


def write_pack(selection: Any, folder: Path, image_format: str) -> None:
    """The release's packed LMM format: mosaics in ascending index order, and their positions."""
    import numpy as np
    from PIL import Image

    from ..codec.codec_selection import PACK_POSITIONS_FILE

    per_frame = selection.grid[1] * selection.grid[2]
    if selection.num_patches % per_frame:
        raise ValueError(f"--pack needs K to be a multiple of {per_frame} patches, got {selection.num_patches}")
    for index, image in enumerate(selection.mosaic_frames()):
        Image.fromarray(image).save(folder / f"mosaic_{index}.{image_format}", quality=95)
    np.save(folder / PACK_POSITIONS_FILE, selection.positions_thw)


@dataclass
class Packing:
    """A conversation file's items for this shard: rewritten, passed through, or dropped with why."""

    items: list[dict[str, Any]] = field(default_factory=list)
    rewritten: int = 0
    passed_through: int = 0
    dropped: list[dict[str, Any]] = field(default_factory=list)


def pack_conversations(
    conversations: Conversations,
    base: Path,
    folders: dict[Path, Path],
    out: Path,
    shard: Shard,
    failures: dict[Path, Outcome],
    recorded: dict[str, Any],
) -> Packing:
    """Rewrite the items whose video this shard packed; pass text and image items through unchanged;
    drop (with the reason) an item whose video failed or is not among the inputs. An item belongs to
    the shard of its video, an item without one to the shard of its number."""
    from ..codec.codec_selection import PACK_POSITIONS_FILE, pack_mosaic_names

    inputs = {output_name(video, base): video for video in folders}
    numbers = {video: number for number, video in enumerate(folders)}
    packing = Packing()
    for number, item in enumerate(conversations.items, 1):
        where = conversations.where(number)
        if "video" not in item:
            if shard.takes(number - 1):
                packing.items.append(item)
                packing.passed_through += 1
            continue
        video = inputs.get(output_name(base / item["video"], base))
        if video is None:
            reason = f"its video {item['video']} is not among the inputs"
        elif not shard.takes(numbers[video]):
            continue  # another shard's video
        elif is_finished(folders[video], video, recorded):
            name = folders[video].relative_to(out).as_posix()
            images = [f"{name}/{image}" for image in pack_mosaic_names(folders[video])]
            packing.items.append(packed_item(item, images, f"{name}/{PACK_POSITIONS_FILE}", where))
            packing.rewritten += 1
            continue
        elif video in failures:
            reason = f"its video {video} failed: {failures[video].error}: {failures[video].message}"
        else:
            reason = f"its video {video} was not processed"
        if video is not None or shard.takes(number - 1):
            packing.dropped.append(
                {"path": str(conversations.path), "item": number, "id": item.get("id"), "video": item["video"],
                 "error": "ItemDropped", "message": reason}
            )  # fmt: skip
    return packing


def prepare_output(out: Path) -> None:
    """Create OUT and check that it can be written, before any work."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"cannot write to {out}: a file is in its place")
    try:
        out.mkdir(parents=True, exist_ok=True)
        check_writable(out)
    except OSError as error:
        raise OSError(f"cannot write to {out}: {error.strerror or error}") from None


def failure_record(video: str | os.PathLike[str], outcome: Outcome) -> dict[str, str]:
    """A video's line in ``failures*.jsonl``."""
    return {"path": str(video), "error": outcome.error, "message": outcome.message}


@contextmanager
def failure_log(path: Path) -> Iterator[Callable[[dict[str, str]], None]]:
    """Append failures to ``path`` as they happen, each line handed to the system at once (one unbuffered
    write), so that a run killed outright still says what failed. The file is emptied first: this run
    retries the earlier failures. (The summary's rewrite of it, in the inputs' order, ends the run.)"""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)

    def append(record: dict[str, str]) -> None:
        try:
            os.write(handle, (json.dumps(record) + "\n").encode())
        except OSError as error:
            if storage_fault(error) is None:
                raise  # a full disk is not: the next folder's write stops the run, and its summary says so

    try:
        yield append
    finally:
        os.close(handle)


def report(video: str, outcome: Outcome) -> None:
    message = " ".join(outcome.message.split())  # one line (OpenCV's messages span several)
    report_failure(video, RuntimeError(message if message.startswith(video) else f"{outcome.error}: {message}"))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@dataclass(frozen=True)
class Plan:
    """What a run is to do, settled before any work."""

    shard: Shard
    listing: InputListing
    folders: dict[Path, Path]  # every input's output folder (all shards)
    conversations: Conversations | None
    files: dict[str, Path]  # failures, summary, and the packed conversations

    @property
    def mine(self) -> list[Path]:
        return [video for number, video in enumerate(self.listing.files) if self.shard.takes(number)]


@dataclass
class Tally:
    """What became of this shard's videos."""

    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    fault: Outcome | None = None  # the output location failed: the run stopped
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes.values())


def run(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard)
    engine = engine_from_args(args)
    if (args.pack or args.conversations) and args.preset != "lmm":
        raise UsageError("--pack and --conversations produce the LMM training format: use --preset lmm")
    if args.conversations and not args.pack:
        raise UsageError("--conversations rewrites <video> into the packed mosaics: add --pack")
    options = selection_options(args)
    listing = list_inputs(args.source, args.include or VIDEO_PATTERNS)
    try:
        conversations = read_conversations(args.conversations) if args.conversations else None
    except ConversationsError as error:
        raise UsageError(str(error)) from None
    files = {
        "failures": args.out / f"failures{shard.suffix}.jsonl",
        "summary": args.out / f"summary{shard.suffix}.json",
    }
    if conversations is not None:
        files["conversations"] = args.out / f"conversations.packed{shard.suffix}{conversations.suffix}"
    folders = selection_folders(listing.files, listing.base, args.out, args.frame_range)
    plan = Plan(shard, listing, folders, conversations, files)
    sources = [args.source, *([conversations.path] if conversations else [])]
    refuse_outputs_over_inputs(
        [*plan.folders.items(), *((source, file) for source in sources for file in files.values())]
    )
    from ..codec.selection_folder import recorded_options

    recorded = recorded_options(options, args.pack, args.image_format)
    prepare_output(args.out)
    with folder_lock(args.out, shard.lock_name):
        remove_leftovers(args.out, shard.tag)
        todo = resumable(plan, recorded, args.overwrite)
        with failure_log(files["failures"]) as log_failure:
            tally = process(todo, args, options, recorded, shard, engine, log_failure)
        return report_run(args, plan, recorded, todo, tally)


def process(
    todo: list[tuple[str, str]],
    args: argparse.Namespace,
    options: dict[str, Any],
    recorded: dict[str, Any],
    shard: Shard,
    engine: Engine,
    log_failure: Callable[[dict[str, str]], None],
) -> Tally:
    """Run the videos until done, interrupted (Ctrl-C, SIGTERM) or stopped by a fault of OUT, logging each
    failure as it comes; then stop the workers and count what is on disk: a video that finished as the
    run stopped is done."""
    from ..progress import report_progress

    job = functools.partial(
        process_video, options=options, pack=args.pack, image_format=args.image_format, tag=shard.tag
    )
    tally = Tally()
    started = time.perf_counter()
    on_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # a kill ends the run as cleanly as Ctrl-C
    on_sigint = signal.getsignal(signal.SIGINT)
    progress = report_progress(len(todo), f"preprocess {shard.index}/{shard.count}", "video")
    results = engine.run(todo, job)
    try:
        for item, outcome in results:
            progress.update()
            if outcome.status == FAULT:
                tally.fault = outcome
                break
            tally.outcomes[item] = outcome
            if outcome.status == FAILED:
                report(item[0], outcome)
                log_failure(failure_record(item[0], outcome))
    except KeyboardInterrupt:
        tally.interrupted = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping: a second signal must not cut it short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            results.close()  # stops the workers
            progress.close()
            remove_leftovers(args.out, shard.tag)
        finally:
            signal.signal(signal.SIGTERM, on_sigterm)
            signal.signal(signal.SIGINT, on_sigint)
    tally.seconds = time.perf_counter() - started
    for item in todo:
        if item not in tally.outcomes and is_finished(item[1], item[0], recorded):
            tally.outcomes[item] = Outcome(DONE)  # finished while the run stopped
    return tally


def report_run(
    args: argparse.Namespace, plan: Plan, recorded: dict[str, Any], todo: list[tuple[str, str]], tally: Tally
) -> int:
    """Write the failures (again, in the inputs' order), the summary (and the packed conversations, if the
    run went to its end); print the summary line; the exit status."""
    mine = plan.mine
    outcomes = ((Path(item[0]), tally.outcomes.get(item)) for item in todo)
    failed = {video: outcome for video, outcome in outcomes if outcome is not None and outcome.status == FAILED}
    records = [failure_record(video, outcome) for video, outcome in failed.items()]
    packing = None
    if plan.conversations is not None and not (tally.interrupted or tally.fault):
        packing = pack_conversations(
            plan.conversations, plan.listing.base, plan.folders, args.out, plan.shard, failed, recorded
        )
        records += packing.dropped
    done = tally.count(DONE)
    summary = {
        "shard": f"{plan.shard.index}/{plan.shard.count}",
        "videos": len(mine),
        "done": done,
        "skipped": len(mine) - len(todo),
        "failed": len(failed),
        "remaining": len(todo) - len(tally.outcomes),
        "ignored": plan.listing.ignored,
        "interrupted": tally.interrupted,
        "stopped": f"{tally.fault.message}: {args.out}" if tally.fault else None,
        "seconds": round(tally.seconds, 3),
        "clips_per_second": round(done / tally.seconds, 3) if tally.seconds > 0 else None,
    }
    if packing is not None:
        summary["conversations"] = {
            "file": str(plan.conversations.path),
            "written": str(plan.files["conversations"]),
            "items": len(plan.conversations.items),
            "rewritten": packing.rewritten,
            "passed_through": packing.passed_through,
            "dropped": [{key: d[key] for key in ("item", "id", "video", "message")} for d in packing.dropped],
        }
    unwritten = None
    try:
        if packing is not None:
            atomic_write(plan.files["conversations"], plan.conversations.dump(packing.items))
        atomic_write(plan.files["failures"], "".join(json.dumps(r) + "\n" for r in records).encode())
        atomic_write(plan.files["summary"], json.dumps(summary, indent=1).encode())
    except OSError as error:
        if tally.fault is None and storage_fault(error) is None:
            raise
        unwritten = error

    state = "interrupted: " if tally.interrupted else "stopped: " if tally.fault else ""
    line = f"{state}done {done}, skipped {summary['skipped']}, failed {len(failed)}"
    if summary["remaining"]:
        line += f", not processed {summary['remaining']}"
    line += f" ({summary['clips_per_second'] or 0:.2f} clips/s)"
    if plan.listing.ignored:
        kind = "not matching --include" if args.include else "not named as videos; see --include"
        line += f"; ignored {plan.listing.ignored} other files ({kind})"
    if records and unwritten is None:
        line += f"; failures in {plan.files['failures']}"
    print(line)
    if packing is not None:
        print(
            f"conversations: {len(plan.conversations.items)} items, {packing.rewritten} rewritten, "
            f"{packing.passed_through} passed through, {len(packing.dropped)} dropped -> {plan.files['conversations']}"
        )
    if tally.fault or unwritten is not None:
        reason = tally.fault.message if tally.fault else storage_fault(unwritten)
        message = f"error: {reason}: {args.out}"
        if unwritten is not None:
            message += f" (the summary could not be written either: {unwritten})"
        print(message, file=sys.stderr)
    if tally.interrupted:
        return 130
    return 1 if records or tally.fault or unwritten is not None else 0
