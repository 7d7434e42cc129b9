"""``onevision encode``'s run: features into one file, or a feature folder's missing parts, resumed and accounted."""

from __future__ import annotations

import functools
import io
import json
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..common.files import atomic_write, folder_lock, storage_fault
from ..common.progress import report_progress
from .engine import Engine, sigterm_interrupts
from .plan import PlanError, Shard, prepare_output
from .report import exit_status, failure_log, ignored_note, print_failure, write_records

if TYPE_CHECKING:
    from .feature_store import FeatureStore
    from .features import EncodeJob, PartOutcome

OUTPUT_SUFFIXES = (".safetensors", ".npz")
# What marks a features file as ours: the key of its safetensors metadata, the start of its .npz's zip comment.
FILE_MARK = "onevision"


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


def _print_failure(record: dict[str, Any]) -> None:
    print_failure(str(record["path"]), str(record["error"]), str(record["message"]))


def encode_file(job: EncodeJob, out: Path) -> int:
    """Every input into the one file ``out``: all features are held in memory until it is written."""
    import numpy as np
    from safetensors.torch import save

    from ..common.provenance import package_version
    from .features import encode_rows

    with report_progress(len(job.inputs), "encode", "input") as bar:
        encoded, failures = encode_rows(job, range(len(job.inputs)), bar.update)
    for record in failures:
        _print_failure(record)
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


def encode_folder(
    job: EncodeJob, out: Path, shard: Shard, ignored: int, engine: Engine | None = None, overwrite: bool = False
) -> int:
    """The parts of this shard that are missing, then the shard's summary (and the whole folder's, once
    every part exists). The parts are encoded here one after the other, or by ``engine``'s workers (worker
    processes, Ray tasks) in the order they are free. A part already written is reused only when its record
    matches this job (:func:`.features.changed_parts`); otherwise the run stops before any work (a
    :class:`.plan.PlanError`), or with ``overwrite`` encodes that part again."""
    from ..common.provenance import package_version
    from .feature_store import INDEX_FILE, JobMismatchError
    from .features import changed_parts, extract_part, open_job

    if out.is_dir() and not (out / INDEX_FILE).is_file() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise PlanError(f"{out} holds other files and no {INDEX_FILE} (not a feature folder): name a new folder")
    prepare_output(out)
    try:
        store = open_job(job, replace=overwrite)
    except JobMismatchError as error:
        raise PlanError(
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
            raise PlanError(f"{first}{others}: add --overwrite to encode {'them' if others else 'it'} again")
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
        try:
            total = sum(len(store.part_rows(part)) for part in todo)
            earlier = store.failures([part for part in mine if part not in todo])
            with (
                sigterm_interrupts(),
                failure_log(shard.failures_file(store.folder), earlier) as log_failure,
                report_progress(total, f"encode {shard.index}/{shard.count}", "input") as bar,
            ):

                def record_failure(record: dict[str, Any]) -> None:
                    _print_failure(record)
                    log_failure(record)

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
        seconds = time.perf_counter() - started
        return _summarise(store, shard, mine, len(mine) - len(todo), outcomes, ignored, interrupted, seconds)


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
    from .batch import DONE, FAULT
    from .features import PartOutcome, extract_part_job

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
    inputs = sum(len(store.part_rows(part)) for part in parts)
    counts = {
        "inputs": inputs,
        "parts": len(parts),
        "parts_done": len(written),
        "encoded": rows - len(failures),
        "failed": len(failures),
        "not_done": inputs - rows,
    }
    return counts, failures


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
    folder = store.folder
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
    write_records(shard.failures_file(folder), shard.summary_file(folder), summary, None if interrupted else failures)
    missing = len(store.missing_parts())
    if not missing and shard.count > 1:  # every shard that sees this writes the same thing
        whole, all_failures = _tally(store, list(range(store.num_parts)))
        every = Shard(0, 1)
        write_records(
            every.failures_file(folder), every.summary_file(folder), {**whole, "ignored": ignored}, all_failures
        )
    state = "interrupted: " if interrupted else ""
    line = (
        f"{state}parts {len(outcomes)} written, {skipped} skipped, {counts['parts'] - counts['parts_done']} not "
        f"done; inputs {counts['encoded']} encoded, {counts['failed']} failed"
    )
    if outcomes:
        line += f" ({summary['inputs_per_second'] or 0:.2f} inputs/s)"
    line += ignored_note(ignored, "not images or videos")
    if failures:
        line += f"; failures in {shard.failures_file(folder)}"
    print(f"{line} -> {folder}" + (f" ({missing} of {store.num_parts} parts still to do)" if missing else ""))
    return exit_status(interrupted, bool(failures))
