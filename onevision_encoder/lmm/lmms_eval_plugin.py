"""The LMM probe as an lmms-eval model: ``python -m lmms_eval --model onevision_llava --model_args ...``.

lmms-eval finds it through this package's ``lmms_eval.models`` entry point (:func:`manifest`), so this module
is imported by lmms-eval only, never by ``import onevision_encoder``. ``model_args``:

- ``pretrained``: a folder saved by ``save_pretrained`` holding ``OneVisionLlavaForConditionalGeneration``
  and its ``OneVisionLlavaProcessor`` (``onevision lmm-train``'s ``final/``);
- ``device`` (default ``cuda`` when there is one, else ``cpu``), ``dtype`` (``float32``, ``bfloat16``,
  ``float16``; default the checkpoint's);
- ``video_sampling``: ``codec`` (default: the processor's selection; ``num_patches`` K or ``mosaics``, K in
  whole mosaics, and ``num_frames``, the frames selected from, override its ``video_selection``) or
  ``uniform`` (``num_frames`` whole frames, required);
- ``max_new_tokens``: the answer's length when the task's ``generation_kwargs`` give none (default 128).

Requests run one at a time, whatever ``--batch_size`` says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

MODEL_ID = "onevision_llava"
SAMPLINGS = ("codec", "uniform")
DTYPES = ("float32", "bfloat16", "float16")
# generation_kwargs of lmms-eval tasks that mean the same to transformers' generate().
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "num_beams", "do_sample")


def manifest() -> Any:
    """The entry point lmms-eval loads: ``onevision_llava``, a simple (not chat) model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(MODEL_ID, simple_class_path=f"{__name__}.{OneVisionLlava.__name__}")


class OneVisionLlava(lmms):
    """``OneVisionLlavaForConditionalGeneration`` answering lmms-eval's requests (see the module)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str | None = None,
        video_sampling: str = "codec",
        num_patches: int | None = None,
        mosaics: int | None = None,
        num_frames: int | None = None,
        max_new_tokens: int = 128,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"{MODEL_ID}: unknown model_args {sorted(unknown)}")
        if video_sampling not in SAMPLINGS:
            raise ValueError(f"{MODEL_ID}: video_sampling must be one of {SAMPLINGS}, got {video_sampling!r}")
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"{MODEL_ID}: dtype must be one of {DTYPES}, got {dtype!r}")
        if video_sampling == "uniform" and (num_patches is not None or mosaics is not None):
            raise ValueError(f"{MODEL_ID}: num_patches and mosaics are codec sampling's; uniform takes num_frames")
        if video_sampling == "uniform" and num_frames is None:
            raise ValueError(f"{MODEL_ID}: uniform video_sampling needs num_frames")
        if num_patches is not None and mosaics is not None:
            raise ValueError(f"{MODEL_ID}: give num_patches (K) or mosaics, not both")
        for name, value in (("num_patches", num_patches), ("mosaics", mosaics), ("num_frames", num_frames)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{MODEL_ID}: {name} must be a whole number >= 1, got {value!r}")
        import torch

        from .modeling import OneVisionLlavaForConditionalGeneration
        from .processing import OneVisionLlavaProcessor

        if not Path(pretrained).is_dir():
            raise ValueError(f"{pretrained}: no such folder (pretrained names a saved model and processor)")
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.processor = OneVisionLlavaProcessor.from_pretrained(pretrained)
            self.model = OneVisionLlavaForConditionalGeneration.from_pretrained(
                pretrained, **({"dtype": getattr(torch, dtype)} if dtype else {})
            )
        except (OSError, ValueError) as error:
            raise ValueError(f"{pretrained}: not a saved {MODEL_ID} model with its processor: {error}") from error
        self.model.to(self._device).eval()
        self.video_sampling = video_sampling
        self.num_frames = num_frames
        if video_sampling == "codec":
            self.processor.video_selection.update(self._codec_overrides(num_patches, mosaics, num_frames))
        self.max_new_tokens = max_new_tokens

    def _codec_overrides(self, num_patches: int | None, mosaics: int | None, num_frames: int | None) -> dict:
        """``select_patches`` keywords from the model_args: K given as is or in whole mosaics of the grid."""
        overrides: dict[str, int] = {}
        if mosaics is not None:
            patches_a_side = self.processor.selection_keywords["size"] // self.processor.image_processor.patch_size
            num_patches = mosaics * patches_a_side**2
        if num_patches is not None:
            overrides["num_patches"] = num_patches
        if num_frames is not None:
            overrides["num_frames"] = num_frames
        return overrides

    def _inputs(self, context: str, visuals: list[Any] | None, continuation: str = "") -> dict[str, Any]:
        """The model's inputs for the request's text, its visuals (video files, or pictures) in the order given,
        and ``continuation`` after the prompt (loglikelihood's)."""
        from ..video.media import IMAGE_SUFFIXES, open_image
        from .processing import UniformFrames

        images, videos, placeholders = [], [], []
        for visual in visuals or []:
            if isinstance(visual, (str, os.PathLike)) and Path(visual).suffix.lower() not in IMAGE_SUFFIXES:
                if not Path(visual).exists():
                    raise ValueError(f"{visual}: no such video")
                use_frames = self.video_sampling == "uniform"
                videos.append(UniformFrames(visual, self.num_frames) if use_frames else visual)
                placeholders.append(self.processor.video_token)
            else:
                images.append(open_image(visual) if isinstance(visual, (str, os.PathLike)) else visual)
                placeholders.append(self.processor.image_token)
        content = "".join(placeholders) + ("\n" if placeholders else "") + context
        tokenizer = self.processor.tokenizer
        prompt = content
        if tokenizer.chat_template:
            prompt = self.processor.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        inputs = self.processor(text=prompt + continuation, images=images or None, videos=videos or None)
        return {key: self._on_device(value) for key, value in inputs.items()}

    def _on_device(self, value: Any) -> Any:
        """A tensor, or a list of them, on the model's device; pixels in its dtype."""
        if isinstance(value, list):
            return [self._on_device(item) for item in value]
        if value.is_floating_point():
            return value.to(self._device, self.model.dtype)
        return value.to(self._device)

    def _visuals(self, request: Instance) -> list[Any]:
        doc_to_visual, doc_id, task, split = request.args[2:6]
        return doc_to_visual(self.task_dict[task][split][doc_id])

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Each request's answer, generated greedily unless the task asks for sampling, cut before the first
        of its ``until`` strings."""
        import torch

        answers = []
        for request in requests:
            context, generation = request.args[0], dict(request.args[1] or {})
            until = generation.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            settings = {key: generation[key] for key in GENERATION_KEYS if key in generation}
            settings.setdefault("max_new_tokens", self.max_new_tokens)
            if settings.get("temperature", 0) == 0:
                settings.pop("temperature", None)
                settings.pop("top_p", None)
                settings["do_sample"] = False
            else:
                settings.setdefault("do_sample", True)
            inputs = self._inputs(context, self._visuals(request))
            with torch.no_grad():
                generated = self.model.generate(**inputs, **settings)
            prompt_length = inputs["input_ids"].shape[1]
            answer = self.processor.tokenizer.decode(generated[0, prompt_length:], skip_special_tokens=True)
            for stop in until:
                answer = answer.split(stop)[0]
            answers.append(answer)
            self.cache_hook.add_partial("generate_until", (context, request.args[1]), answer)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Each request's continuation: the sum of its tokens' log-probabilities after the prompt, and whether
        greedy decoding would have produced it. Its tokens are the continuation tokenized alone."""
        import torch

        results = []
        for request in requests:
            context, continuation = request.args[0], request.args[1]
            if callable(continuation):  # loglikelihood tasks pass doc_to_target
                doc_id, task, split = request.args[3:6]
                continuation = continuation(self.task_dict[task][split][doc_id])
            continuation = str(continuation)
            inputs = self._inputs(context, self._visuals(request), continuation)
            target = self.processor.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")
            length = target["input_ids"].shape[1]
            with torch.no_grad():
                logits = self.model(**inputs).logits[0, -length - 1 : -1].float()
            expected = inputs["input_ids"][0, -length:]
            log_probabilities = torch.log_softmax(logits, dim=-1)
            total = float(log_probabilities.gather(1, expected[:, None]).sum())
            results.append((total, bool((logits.argmax(dim=-1) == expected).all())))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{MODEL_ID} answers single-round requests only (generate_until)")
