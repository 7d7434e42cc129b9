"""Registration with transformers' Auto classes, made as soon as transformers' auto module has loaded.

Registering needs the model classes, and so torch and transformers: seconds of imports. Doing it
when the import that loads ``transformers.models.auto`` has finished (or at once, if it already has)
keeps ``import onevision_encoder`` light, so ``onevision --help`` and data-loader workers start fast, while
``AutoConfig``, ``AutoModel`` and ``AutoImageProcessor`` still find the model without
``trust_remote_code``: any use of them imports that module first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import inspect
import sys
import threading
from importlib.machinery import ModuleSpec
from types import ModuleType

AUTO_MODULE = "transformers.models.auto"
MODEL_PACKAGE = "onevision_encoder.model"


def register() -> None:
    """Register the configs, the models (encoder, video classifier, LMM), the image processor and the LMM's
    processor with transformers' Auto classes (idempotent).

    Called by the model package once its classes exist.
    """
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForVideoClassification, AutoProcessor
    from transformers.utils import is_torchvision_available

    from .model import (
        OneVisionEncoderConfig,
        OneVisionEncoderForVideoClassification,
        OneVisionEncoderImageProcessor,
        OneVisionEncoderModel,
        OneVisionLlavaConfig,
        OneVisionLlavaForConditionalGeneration,
        OneVisionLlavaProcessor,
    )

    AutoConfig.register(OneVisionEncoderConfig.model_type, OneVisionEncoderConfig, exist_ok=True)
    AutoModel.register(OneVisionEncoderConfig, OneVisionEncoderModel, exist_ok=True)
    AutoModelForVideoClassification.register(
        OneVisionEncoderConfig, OneVisionEncoderForVideoClassification, exist_ok=True
    )
    # One image processor (PIL and NumPy, the release's bicubic resize) serves every backend. transformers >= 5
    # asks for its "torchvision" backend whenever torchvision is installed, and with the processor registered as
    # the PIL one only, it warned "Requested torchvision backend is not available" before falling back to it.
    if "image_processor_classes" in inspect.signature(AutoImageProcessor.register).parameters:
        backends = {"pil": OneVisionEncoderImageProcessor, "torchvision": OneVisionEncoderImageProcessor}
        AutoImageProcessor.register(OneVisionEncoderConfig, image_processor_classes=backends, exist_ok=True)
    else:  # transformers 4.x: a "fast" processor must be torchvision-based (BaseImageProcessorFast)
        AutoImageProcessor.register(
            OneVisionEncoderConfig, slow_image_processor_class=OneVisionEncoderImageProcessor, exist_ok=True
        )
    AutoConfig.register(OneVisionLlavaConfig.model_type, OneVisionLlavaConfig, exist_ok=True)
    # transformers >= 4.46 has this Auto class; the LMM still loads by its own class without it.
    if hasattr(transformers, "AutoModelForImageTextToText"):
        transformers.AutoModelForImageTextToText.register(
            OneVisionLlavaConfig, OneVisionLlavaForConditionalGeneration, exist_ok=True
        )
    AutoProcessor.register(OneVisionLlavaConfig, OneVisionLlavaProcessor, exist_ok=True)
    # The video processor needs torchvision, an optional dependency: without it AutoVideoProcessor stays
    # unregistered and the class itself raises an ImportError that says what to install.
    if is_torchvision_available():
        from transformers import AutoVideoProcessor

        from .model.video_processing import OneVisionEncoderVideoProcessor

        AutoVideoProcessor.register(OneVisionEncoderConfig, OneVisionEncoderVideoProcessor, exist_ok=True)


class _RegisterOnLoad(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the outermost transformers import in progress, and once it has finished
    with the auto module loaded, registers.

    Registering imports our model classes, and so transformers' ``PreTrainedModel``, ``Trainer``'s
    modules, ...; the auto module is imported from inside those very modules (``modeling_utils`` through
    its quantizers, ``pipelines``), which are half-executed at that moment. Registering only when the
    outermost transformers import returns leaves every transformers module whole, whatever was imported
    first and in which order.
    """

    def __init__(self) -> None:
        self._state = threading.local()  # per thread: imports run in each thread's own stack

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        state = self._state
        if fullname.partition(".")[0] != "transformers" or getattr(state, "depth", 0) or getattr(state, "finding", 0):
            return None
        state.finding = True  # the usual finders locate it; this one steps aside meanwhile
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            state.finding = False
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            state.depth = getattr(state, "depth", 0) + 1
            try:
                run_module(module)
            finally:
                state.depth -= 1
            if not state.depth and AUTO_MODULE in sys.modules:
                self._register()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec

    def _register(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        _load_model_package()


def _load_model_package() -> None:
    # Loading it registers. Already in sys.modules means loaded (so registered) or loading: the
    # model package imports transformers, whose auto module may load first; it registers when done.
    if MODEL_PACKAGE not in sys.modules:
        importlib.import_module(MODEL_PACKAGE)


def register_when_transformers_loads() -> None:
    if AUTO_MODULE in sys.modules:
        _load_model_package()
    elif not any(isinstance(finder, _RegisterOnLoad) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnLoad())
