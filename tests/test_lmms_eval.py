"""The lmms-eval model plugin (``--model onevision_llava``) and the local video task of ``examples/lmms-eval-task/``.

lmms-eval 0.7.3 needs filelock<4 and pins av<16 (against our av>=17.1), so it lives in its own environment:
``make test-lmms-eval`` builds ``.venv-lmms-eval`` (docs/integrations.md, lmms-eval) and runs this file there;
elsewhere the tests that need it are skipped.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_llava import make_model, make_tokenizer
from test_llava_processing import make_processor

from onevision_encoder.lmm.processing import UniformFrames
from onevision_encoder.video.synthetic import make_clip, write_clip

REPO = Path(__file__).resolve().parents[1]
PREPARE = REPO / "examples" / "lmms-eval-task" / "prepare.py"
needs_lmms_eval = pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None,
    reason="lmms_eval is not installed: `make test-lmms-eval` runs these in its own .venv-lmms-eval",
)
MOSAICS = 2  # K = 2 mosaics of the processor's 8x8-patch grid: 2 x 16 vision tokens a video


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A tiny random LMM and its processor, saved as lmm-train's final/ folder is."""
    folder = tmp_path_factory.mktemp("model")
    tokenizer = make_tokenizer()
    make_model(tokenizer).save_pretrained(folder)
    make_processor(tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """The example task, written by its own script."""
    out = tmp_path_factory.mktemp("task") / "onevision-clips"
    subprocess.run([sys.executable, str(PREPARE), str(out)], check=True, capture_output=True)
    return out


def direct_answer(model_folder: Path, video: str, question: str, max_new_tokens: int) -> str:
    """What the model answers through its processor alone (docs/lmm.md), greedily."""
    from onevision_encoder import OneVisionLlavaForConditionalGeneration, OneVisionLlavaProcessor

    processor = OneVisionLlavaProcessor.from_pretrained(model_folder)
    processor.video_selection["num_patches"] = MOSAICS * 8 * 8
    model = OneVisionLlavaForConditionalGeneration.from_pretrained(model_folder).eval()
    inputs = processor(text=f"<video>\n{question}", videos=[video])
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    answer = processor.tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return answer.split("\n")[0]


@needs_lmms_eval
def test_lmms_eval_runs_the_local_video_task_with_the_model_answering_as_itself(saved_model, task, tmp_path):
    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "lmms_eval", "--model", "onevision_llava",
        "--model_args", f"pretrained={saved_model},device=cpu,video_sampling=codec,mosaics={MOSAICS}",
        "--include_path", str(task), "--tasks", "onevision_clips",
        "--output_path", str(results), "--log_samples",
    ]  # fmt: skip
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    # lmms-eval exits 0 when evaluation fails: the results file is the verdict.
    assert run.returncode == 0, run.stderr[-3000:]
    written = sorted(results.rglob("*_results.json"))
    assert len(written) == 1, f"no results file; lmms-eval said:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    summary = json.loads(written[0].read_text())
    assert summary["config"]["model_backend"].startswith("onevision_encoder.lmm.lmms_eval_plugin.OneVisionLlava")
    assert summary["n-samples"]["onevision_clips"] == {"original": 8, "effective": 8}
    assert 0.0 <= summary["results"]["onevision_clips"]["exact_match,none"] <= 1.0

    records = json.loads((task / "clips.json").read_text())
    samples = [json.loads(line) for path in results.rglob("*_samples_onevision_clips.jsonl") for line in path.open()]
    assert sorted(sample["doc_id"] for sample in samples) == list(range(len(records)))
    answers = {sample["doc_id"]: sample["filtered_resps"] for sample in samples}
    for doc_id, record in enumerate(records):
        assert Path(record["video"]).is_file()
        expected = direct_answer(saved_model, record["video"], record["question"], max_new_tokens=16)
        assert answers[doc_id] == expected, record
    assert len(set(answers.values())) > 1  # the videos change the answers: the model saw them


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    return write_clip(folder / "walk.mp4", make_clip("moving_object", num_frames=16, size=(48, 64)))


def make_plugin(saved_model: Path, **model_args):
    from onevision_encoder.lmm.lmms_eval_plugin import OneVisionLlava

    return OneVisionLlava(pretrained=str(saved_model), device="cpu", **model_args)


@needs_lmms_eval
@pytest.mark.parametrize(
    ("model_args", "frames", "frame_positions"),
    [
        # 3 mosaics of the 8x8-patch grid, patches from 16 frames: their t anywhere on the 64-frame grid.
        ({"mosaics": 3}, 3, None),
        ({"num_patches": 3 * 64, "num_frames": 8}, 3, None),
        # 3 whole frames at floor(linspace(0, 63, 3)) of the 64-frame grid, every patch of each.
        ({"video_sampling": "uniform", "num_frames": 3}, 3, [0, 31, 63]),
    ],
)
def test_video_sampling_model_args_shape_the_video(saved_model, clip, model_args, frames, frame_positions):
    plugin = make_plugin(saved_model, **model_args)
    inputs = plugin._inputs("describe the clip", [str(clip)])
    (pixels,), (positions,) = inputs["pixel_values_videos"], inputs["video_positions_thw"]
    assert tuple(pixels.shape) == (frames, 3, 32, 32)
    assert positions.shape == (frames * 64, 3)
    assert int((inputs["input_ids"] == plugin.processor.video_token_id).sum()) == frames * 16
    if frame_positions is not None:
        assert positions[:, 0].reshape(frames, 64).unique(dim=1).flatten().tolist() == frame_positions
        grid = torch.stack(torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij"), -1).reshape(64, 2)
        assert torch.equal(positions[:64, 1:], grid)


def test_uniform_frames_are_the_videos_frames_on_the_mosaic_canvas(clip):
    """The frames the processor reads uniformly are the clip's own, resized onto the canvas and normalised."""
    processor = make_processor(make_tokenizer())
    pixels, _ = processor.process_video(UniformFrames(clip, 2))
    frames = make_clip("moving_object", num_frames=16, size=(48, 64)).frames[[0, 15]]  # floor(linspace(0, 15, 2))
    # 64x48 fits 32x24 on a 32x32 canvas, padded 4 rows above and below; back to 0..255 from the normalisation.
    mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_processor.image_std)[:, None, None]
    decoded = ((pixels * std + mean) * 255).permute(0, 2, 3, 1).numpy()
    assert np.abs(decoded[:, :4]).max() < 1 and np.abs(decoded[:, 28:]).max() < 1  # the zero padding
    shrunk = frames.reshape(2, 24, 2, 32, 2, 3).mean(axis=(2, 4))  # 2x2 area resampling of the source
    assert np.abs(decoded[:, 4:28] - shrunk).mean() < 8  # lossy H.264 of the written clip


@needs_lmms_eval
@pytest.mark.parametrize(
    ("model_args", "problem"),
    [
        ({"colour": "red"}, "unknown model_args ['colour']"),
        ({"video_sampling": "random"}, "video_sampling must be one of"),
        ({"video_sampling": "uniform"}, "uniform video_sampling needs num_frames"),
        ({"video_sampling": "uniform", "num_frames": 4, "mosaics": 2}, "uniform takes num_frames"),
        ({"mosaics": 2, "num_patches": 128}, "not both"),
        ({"mosaics": 0}, "mosaics must be a whole number >= 1, got 0"),
        ({"dtype": "int8"}, "dtype must be one of"),
    ],
)
def test_bad_model_args_are_refused_naming_the_problem(saved_model, model_args, problem):
    with pytest.raises(ValueError, match="onevision_llava: .*" + problem.replace("[", r"\[").replace("]", r"\]")):
        make_plugin(saved_model, **model_args)


@needs_lmms_eval
def test_a_missing_model_or_video_is_named(saved_model, tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'nowhere'}: no such folder"):
        make_plugin(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty'}: not a saved onevision_llava model"):
        make_plugin(tmp_path / "empty")
    with pytest.raises(ValueError, match=f"{tmp_path / 'gone.mp4'}: no such video"):
        make_plugin(saved_model, mosaics=MOSAICS)._inputs("describe the clip", [str(tmp_path / "gone.mp4")])


@needs_lmms_eval
def test_loglikelihood_scores_the_continuation_after_the_prompt(saved_model, clip):
    from lmms_eval.api.instance import Instance

    plugin = make_plugin(saved_model, mosaics=MOSAICS)
    plugin.task_dict = {"clips": {"test": [{"video": str(clip)}]}}

    def request(kind: str, second: object) -> Instance:
        arguments = ("describe the clip", second, lambda doc: [doc["video"]], 0, "clips", "test")
        return Instance(kind, arguments, idx=0, metadata={"task": "clips", "doc_id": 0, "repeats": 1})

    (greedy,) = plugin.generate_until([request("generate_until", {"max_new_tokens": 1, "temperature": 0})])
    other = next(word for word in ("red", "dog", "cat") if word != greedy.strip())
    inputs = plugin._inputs("describe the clip", [str(clip)])
    with torch.no_grad():
        next_token = torch.log_softmax(plugin.model(**inputs).logits[0, -1].float(), dim=-1)
    tokenizer = plugin.processor.tokenizer
    (scored_greedy, is_greedy), (scored_other, other_is_greedy) = plugin.loglikelihood(
        # continuations start with the task's target_delimiter, " " by default
        [request("loglikelihood", f" {greedy.strip()}"), request("loglikelihood", f" {other}")]
    )
    assert (is_greedy, other_is_greedy) == (True, False)
    assert scored_greedy == pytest.approx(float(next_token[tokenizer.convert_tokens_to_ids(greedy.strip())]), abs=1e-4)
    assert scored_other == pytest.approx(float(next_token[tokenizer.convert_tokens_to_ids(other)]), abs=1e-4)
    # loglikelihood tasks pass doc_to_target, a function of the document, in place of the continuation
    (from_target,) = plugin.loglikelihood([request("loglikelihood", lambda doc: f" {other}")])
    assert from_target[0] == pytest.approx(scored_other, abs=1e-5)


def test_importing_the_package_imports_no_lmms_eval():
    code = "import sys, onevision_encoder, onevision_encoder.model; assert 'lmms_eval' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
