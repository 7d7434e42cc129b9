"""A local lmms-eval video task: the lmm-train example's generated videos and questions, for
``python -m lmms_eval --model onevision_llava``, on a CPU in seconds.

    python examples/lmms-eval-task/prepare.py runs/lmms-eval-task
    python -m lmms_eval --model onevision_llava --model_args pretrained=runs/lmm-example/run/final \\
        --tasks runs/lmms-eval-task/onevision_clips.yaml --output_path runs/lmms-eval-results

OUT, a new folder (nothing is written anywhere else, nothing is downloaded), gets ``data/`` (what
``examples/lmm-train/prepare.py`` generates: its videos, and the conversations they come from),
``clips.json`` (one record per video question: the video's absolute path, the question, the answer the
example model learns) and ``onevision_clips.yaml``, a copy of the task beside this script whose
``data_files`` names that ``clips.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASK = HERE / "onevision_clips.yaml"


def lmm_train_example():
    """``examples/lmm-train/prepare.py`` as a module: its data is this task's."""
    spec = importlib.util.spec_from_file_location("lmm_train_prepare", HERE.parent / "lmm-train" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def video_questions(items: list[dict], data: Path) -> list[dict]:
    """The video items' first question and its answer, the video named by its absolute path."""
    records = []
    for item in items:
        if "video" not in item:
            continue
        question, answer = (turn["value"] for turn in item["conversations"][:2])
        records.append({
            "id": item["id"],
            "video": str((data / item["video"]).resolve()),
            "question": question.replace("<video>", "").strip(),
            "answer": answer,
        })  # fmt: skip
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="a new folder for the videos, clips.json and the task's yaml")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(
            f"error: {args.out}: already exists; name a new folder (this script never writes over one)", file=sys.stderr
        )
        return 2
    import yaml

    from onevision_encoder.common.files import atomic_directory

    out = args.out.resolve()
    with atomic_directory(args.out) as folder:  # the folder appears complete or not at all
        items = lmm_train_example().write_data(folder / "data")
        # The paths are the folder's final ones: the temporary folder becomes it when the block ends.
        records = video_questions(items, out / "data")
        (folder / "clips.json").write_text(json.dumps(records, indent=1) + "\n")
        task = yaml.safe_load(TASK.read_text())
        task["dataset_kwargs"]["data_files"]["test"] = str(out / "clips.json")
        (folder / TASK.name).write_text(yaml.safe_dump(task, sort_keys=False))
    print(f"{args.out}: {len(records)} video questions; lmms-eval task {shlex.quote(str(out / TASK.name))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
