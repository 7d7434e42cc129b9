"""Registration with transformers' Auto classes, made as soon as transformers' auto module has loaded.

Registering needs the model classes, and so torch and transformers: seconds of imports. Doing it
when the import that loads ``transformers.models.auto`` has finished (or at once, if it already has)
keeps ``import onevision_encoder`` light, so ``onevision --help`` and data-loader workers start fast, while
``AutoConfig``, ``AutoModel`` and ``AutoImageProcessor`` still find the model without
``trust_remote_code``: any use of them imports that module first. The packages to import are the caller's
(each registers its own classes); this module knows none of them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import threading
from importlib.machinery import ModuleSpec
from types import ModuleType

AUTO_MODULE = "transformers.models.auto"


class _RegisterOnLoad(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the outermost import in progress of a transformers module or of one of ours,
    and once it has finished with the auto module loaded, imports the packages that register.

    Registering imports our packages, and so transformers' ``PreTrainedModel``, ``Trainer``'s modules, ...; the
    auto module is imported from inside those very modules (``modeling_utils`` through its quantizers,
    ``pipelines``), and from inside ours, which are half-executed at that moment. Registering only when the
    outermost such import returns leaves every module whole, whatever was imported first and in which order.
    """

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages
        self._watched = {"transformers", *(package.partition(".")[0] for package in packages)}
        self._state = threading.local()  # per thread: imports run in each thread's own stack

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        state = self._state
        if (
            fullname.partition(".")[0] not in self._watched
            or getattr(state, "depth", 0)
            or getattr(state, "finding", 0)
        ):
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
        _import_all(self.packages)


def _import_all(packages: tuple[str, ...]) -> None:
    # Importing a package registers its classes. Already in sys.modules means imported (so registered) or being
    # imported: such a package imports transformers, whose auto module may load first; it registers when done.
    for package in packages:
        if package not in sys.modules:
            importlib.import_module(package)


def import_when_transformers_loads(*packages: str) -> None:
    """Import ``packages`` (modules that register classes with the Auto classes when imported) as soon as
    ``transformers.models.auto`` has loaded: now if it has, else when the outermost import (of transformers or
    of the packages' own top-level package) during which it loads returns."""
    if AUTO_MODULE in sys.modules:
        _import_all(packages)
    elif not any(isinstance(finder, _RegisterOnLoad) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnLoad(packages))
