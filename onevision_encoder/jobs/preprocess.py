"""``onevision preprocess``'s run: every video's selection folder, resumed, with failures recorded and accounted."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..common.files import atomic_directory, folder_lock, remove_leftovers, storage_fault
from ..video.media import InputListing
from .batch import DONE, FAILED, FAULT, Outcome, error_name
from .engine import Engine, signals_ignored, sigterm_interrupts
from .plan import PlanError, Shard, prepare_output
from .report import exit_status, failure_log, ignored_note, print_failure, write_records

if TYPE_CHECKING:
    from ..lmm.conversations import Conversations


@dataclass(frozen=True)
class SelectionPlan:
    """What a run is to do, settled before any work."""

    shard: Shard
    listing: InputListing
    folders: dict[Path, Path]  # every input's output folder (all shards)
    out: Path
    options: dict[str, Any]  # select_patches keywords
    pack: bool = False
    image_format: str = "jpg"
    ignored_why: str = ""  # why the files of the folder that are not inputs were left out

    @property
    def mine(self) -> list[Path]:
        return [video for number, video in enumerate(self.listing.files) if self.shard.takes(number)]

    @functools.cached_property
    def recorded(self) -> dict[str, Any]:
        """The options as each folder's meta.json records them."""
        from ..codec.selection_folder import recorded_options

        return recorded_options(self.options, self.pack, self.image_format)


@dataclass
class Addendum:
    """What a command adds to the report of a run that went to its end: failure records, summary entries,
    files written before the summary, and a line printed after the summary line."""

    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: dict[Path, bytes] = field(default_factory=dict)
    line: str = ""


# Given the videos that failed, what the command adds to the run's report.
Finish = Callable[[dict[Path, Outcome]], Addendum]


def is_finished(folder: str | os.PathLike[str], video: str | os.PathLike[str], recorded: dict[str, Any]) -> bool:
    """Whether ``folder`` holds ``video``'s selection made with the ``recorded`` options (by any run)."""
    from ..codec.selection_folder import examine

    return examine(Path(folder), video, recorded).reusable


def resumable(plan: SelectionPlan, overwrite: bool) -> list[tuple[str, str]]:
    """This shard's ``(video, folder)`` items to process: all but those whose folder was made from the same
    input with the same options. Before any work, a folder made otherwise stops the run (one line, the
    first such folder and how many more) unless ``overwrite``; a folder holding what this tool did not
    write stops it whatever the flags. Another package version alone is noted."""
    from ..codec.selection_folder import examine

    todo: list[tuple[str, str]] = []
    otherwise = []
    versions: Counter[str] = Counter()
    for video in plan.mine:
        found = examine(plan.folders[video], video, plan.recorded)
        if found.reusable:
            versions.update([found.version] if found.version else [])
        elif found.not_ours is not None:
            raise PlanError(found.refusal())
        elif found.differences and not overwrite:
            otherwise.append(found)
        else:
            todo.append((str(video), str(found.folder)))
    if otherwise:
        more = len(otherwise) - 1
        also = f", and so {_count(more, 'was', 'were')} {more} other finished {_count(more, 'folder')}" if more else ""
        them = "them" if more else "it"
        raise PlanError(f"{otherwise[0].made_otherwise()}{also}; add --overwrite to replace {them}")
    if versions:
        from ..common.provenance import package_version

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
    exception is the video's failure (:func:`.batch.attempt`), a folder in the way holding files this tool
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


def failure_record(video: str | os.PathLike[str], outcome: Outcome) -> dict[str, str]:
    """A video's line in ``failures*.jsonl``."""
    return {"path": str(video), "error": outcome.error, "message": outcome.message}


@dataclass
class Tally:
    """What became of this shard's videos."""

    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    fault: Outcome | None = None  # the output location failed: the run stopped
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes.values())


def run_preprocess(plan: SelectionPlan, engine: Engine, overwrite: bool = False, finish: Finish | None = None) -> int:
    """Check what OUT already holds, process this shard's videos that are still to do, and report; the exit
    status. ``finish`` adds to the report of a run that went to its end."""
    shard = plan.shard
    prepare_output(plan.out)
    with folder_lock(plan.out, f".preprocess{shard.suffix}.lock"):
        remove_leftovers(plan.out, shard.tag)
        todo = resumable(plan, overwrite)
        with failure_log(shard.failures_file(plan.out)) as log_failure:
            tally = process(plan, todo, engine, log_failure)
        return report_run(plan, todo, tally, finish)


def process(
    plan: SelectionPlan,
    todo: list[tuple[str, str]],
    engine: Engine,
    log_failure: Callable[[dict[str, str]], None],
) -> Tally:
    """Run the videos until done, interrupted (Ctrl-C, SIGTERM) or stopped by a fault of OUT, logging each
    failure as it comes; then stop the workers and count what is on disk: a video that finished as the
    run stopped is done."""
    from ..common.progress import report_progress

    shard = plan.shard
    job = functools.partial(
        process_video, options=plan.options, pack=plan.pack, image_format=plan.image_format, tag=shard.tag
    )
    tally = Tally()
    started = time.perf_counter()
    with sigterm_interrupts():
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
                    print_failure(item[0], outcome.error, " ".join(outcome.message.split()))  # OpenCV's span lines
                    log_failure(failure_record(item[0], outcome))
        except KeyboardInterrupt:
            tally.interrupted = True
        finally:
            with signals_ignored():
                results.close()  # stops the workers
                progress.close()
                remove_leftovers(plan.out, shard.tag)
    tally.seconds = time.perf_counter() - started
    for item in todo:
        if item not in tally.outcomes and is_finished(item[1], item[0], plan.recorded):
            tally.outcomes[item] = Outcome(DONE)  # finished while the run stopped
    return tally


def report_run(plan: SelectionPlan, todo: list[tuple[str, str]], tally: Tally, finish: Finish | None) -> int:
    """Write the failures (again, in the inputs' order) and the summary (and what ``finish`` adds, if the run
    went to its end); print the summary line; the exit status."""
    mine, out = plan.mine, plan.out
    outcomes = ((Path(item[0]), tally.outcomes.get(item)) for item in todo)
    failed = {video: outcome for video, outcome in outcomes if outcome is not None and outcome.status == FAILED}
    records = [failure_record(video, outcome) for video, outcome in failed.items()]
    addendum = finish(failed) if finish is not None and not (tally.interrupted or tally.fault) else Addendum()
    records += addendum.records
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
        "stopped": f"{tally.fault.message}: {out}" if tally.fault else None,
        "seconds": round(tally.seconds, 3),
        "clips_per_second": round(done / tally.seconds, 3) if tally.seconds > 0 else None,
        **addendum.summary,
    }
    unwritten = None
    try:
        write_records(
            plan.shard.failures_file(out), plan.shard.summary_file(out), summary, records, first=addendum.files
        )
    except OSError as error:
        if tally.fault is None and storage_fault(error) is None:
            raise
        unwritten = error

    state = "interrupted: " if tally.interrupted else "stopped: " if tally.fault else ""
    line = f"{state}done {done}, skipped {summary['skipped']}, failed {len(failed)}"
    if summary["remaining"]:
        line += f", not processed {summary['remaining']}"
    line += f" ({summary['clips_per_second'] or 0:.2f} clips/s)"
    line += ignored_note(plan.listing.ignored, plan.ignored_why)
    if records and unwritten is None:
        line += f"; failures in {plan.shard.failures_file(out)}"
    print(line)
    if addendum.line:
        print(addendum.line)
    if tally.fault or unwritten is not None:
        reason = tally.fault.message if tally.fault else storage_fault(unwritten)
        message = f"error: {reason}: {out}"
        if unwritten is not None:
            message += f" (the summary could not be written either: {unwritten})"
        print(message, file=sys.stderr)
    return exit_status(tally.interrupted, bool(records or tally.fault or unwritten is not None))


def packed_conversations(
    conversations: Conversations, plan: SelectionPlan, written_to: Path, failed: dict[Path, Outcome]
) -> Addendum:
    """The conversations file rewritten for this shard's packed videos (:func:`pack_conversations`): its items
    dropped as failures, its account in the summary, the file, and its line."""
    items, rewritten, passed_through, dropped = pack_conversations(conversations, plan, failed)
    account = {
        "file": str(conversations.path),
        "written": str(written_to),
        "items": len(conversations.items),
        "rewritten": rewritten,
        "passed_through": passed_through,
        "dropped": [{key: d[key] for key in ("item", "id", "video", "message")} for d in dropped],
    }
    line = (
        f"conversations: {len(conversations.items)} items, {rewritten} rewritten, {passed_through} passed through, "
        f"{len(dropped)} dropped -> {written_to}"
    )
    return Addendum(dropped, {"conversations": account}, {written_to: conversations.dump(items)}, line)


def pack_conversations(
    conversations: Conversations, plan: SelectionPlan, failures: dict[Path, Outcome]
) -> tuple[list[dict[str, Any]], int, int, list[dict[str, Any]]]:
    """Rewrite the items whose video this shard packed; pass text and image items through unchanged;
    drop (with the reason) an item whose video failed or is not among the inputs. An item belongs to
    the shard of its video, an item without one to the shard of its number. The items, how many were
    rewritten and passed through, and the records of those dropped."""
    from ..codec.codec_selection import PACK_POSITIONS_FILE, pack_mosaic_names
    from ..lmm.conversations import packed_item
    from ..video.media import output_name

    base, folders, shard = plan.listing.base, plan.folders, plan.shard
    inputs = {output_name(video, base): video for video in folders}
    numbers = {video: number for number, video in enumerate(folders)}
    items: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    rewritten = passed_through = 0
    for number, item in enumerate(conversations.items, 1):
        where = conversations.where(number)
        if "video" not in item:
            if shard.takes(number - 1):
                items.append(item)
                passed_through += 1
            continue
        video = inputs.get(output_name(base / item["video"], base))
        if video is None:
            reason = f"its video {item['video']} is not among the inputs"
        elif not shard.takes(numbers[video]):
            continue  # another shard's video
        elif is_finished(folders[video], video, plan.recorded):
            name = folders[video].relative_to(plan.out).as_posix()
            images = [f"{name}/{image}" for image in pack_mosaic_names(folders[video])]
            items.append(packed_item(item, images, f"{name}/{PACK_POSITIONS_FILE}", where))
            rewritten += 1
            continue
        elif video in failures:
            reason = f"its video {video} failed: {failures[video].error}: {failures[video].message}"
        else:
            reason = f"its video {video} was not processed"
        if video is not None or shard.takes(number - 1):
            dropped.append(
                {"path": str(conversations.path), "item": number, "id": item.get("id"), "video": item["video"],
                 "error": "ItemDropped", "message": reason}
            )  # fmt: skip
    return items, rewritten, passed_through, dropped
