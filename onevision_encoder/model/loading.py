"""What can go wrong fetching and reading a checkpoint, said with the file or the hub id it concerns.

- A damaged weights file (empty, truncated, not safetensors) raises :class:`DamagedCheckpointError`
  naming the file, instead of safetensors' bare "header too small".
- A hub id while the Hub cannot be reached raises :class:`HubUnreachableError` after one short request
  (huggingface_hub itself retries for about 25 s before saying so); the hub id's files in the local
  Hugging Face cache are then loaded from there, as offline mode would.
- A name that reads as a path here (``runs/my-model`` where ``runs/`` exists) but names no folder is said to
  be missing first (:func:`missing_folder_first`); the Hub's answer for it as a hub id comes after.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

# Seconds the reachability probe waits for the Hub; HF_HUB_ETAG_TIMEOUT, when set, replaces it.
PROBE_TIMEOUT_S = 4.0
WEIGHTS_NAME, WEIGHTS_INDEX_NAME = "model.safetensors", "model.safetensors.index.json"
CONFIG_NAME = "config.json"


class DamagedCheckpointError(OSError):
    """A checkpoint file that cannot be read (empty, truncated, not the format it claims); ``path`` names it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class HubUnreachableError(ConnectionError):
    """A hub id was given, the Hub cannot be reached and the local Hugging Face cache does not hold it."""


def safetensors_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a readable safetensors file (its header and size are checked), or ``None``."""
    try:
        with safe_open(os.fspath(path), framework="pt"):
            return None
    except SafetensorError as error:
        return str(error).removeprefix("Error while deserializing header: ")


def damaged_weights_error(location: str, kwargs: dict[str, Any], error: Exception) -> DamagedCheckpointError:
    """The error for a ``from_pretrained`` whose safetensors could not be read, naming the damaged file
    (looked up in the folder, or in the Hugging Face cache for a hub id)."""
    hub = not os.path.isdir(os.path.expanduser(location))
    remedy = "re-download or re-save it"
    if hub:
        remedy = "download it again with from_pretrained(..., force_download=True)"
    for path in _weights_files(location, kwargs, hub):
        problem = safetensors_problem(path)
        if problem is not None:
            return DamagedCheckpointError(path, f"damaged or truncated safetensors file ({problem}); {remedy}")
    return DamagedCheckpointError(location, f"a weights file is damaged or truncated ({error}); {remedy}")


def checkpoint_files(location: str) -> list[Path] | None:
    """The files that make a checkpoint's model: its ``config.json`` and the safetensors weights
    ``from_pretrained`` reads, in the folder ``location``, or for a hub id in the local Hugging Face cache
    (the snapshot of its default revision; PyTorch's ``pytorch_model.bin`` where there are no safetensors).
    ``None`` when there is no such folder and the cache does not hold the hub id (not downloaded yet, or
    no checkpoint at all: ``from_pretrained`` says which)."""
    hub = not os.path.isdir(os.path.expanduser(location))
    config = _find(location, CONFIG_NAME, {}, hub)
    if config is None:
        return None
    weights = _weights_files(location, {}, hub) or [_find(location, "pytorch_model.bin", {}, hub)]
    return [config, *(path for path in weights if path is not None)]


def _find(location: str, name: str, kwargs: dict[str, Any], hub: bool) -> Path | None:
    """The file ``name`` of a checkpoint folder, or of a hub id in the local cache; ``None`` if not there."""
    subfolder = kwargs.get("subfolder") or ""
    if not hub:
        path = Path(os.path.expanduser(location), subfolder, name)
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    try:
        cached = try_to_load_from_cache(
            location, f"{subfolder}/{name}" if subfolder else name, kwargs.get("cache_dir"), kwargs.get("revision")
        )
    except HFValidationError:  # neither a folder nor a hub id
        return None
    return Path(cached) if isinstance(cached, str) else None


def _weights_files(location: str, kwargs: dict[str, Any], hub: bool) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads: ``model.safetensors`` or the shards its index names."""
    index = _find(location, WEIGHTS_INDEX_NAME, kwargs, hub)
    names = [WEIGHTS_NAME]
    if index is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, AttributeError):  # then model.safetensors only
            names += sorted(set(json.loads(index.read_text())["weight_map"].values()))
    found = (_find(location, name, kwargs, hub) for name in names)
    return [path for path in found if path is not None]


@contextlib.contextmanager
def missing_folder_first(location: str) -> Iterator[None]:
    """Loading ``location`` that is no folder here while its parent folder is (``runs/`` of ``runs/my-model``):
    a failure (Hub unreachable, no such repository) is most likely a local folder that is not there, so it
    is raised as a ``FileNotFoundError`` that says so first and gives the Hub's reason after it."""
    try:
        yield
    except OSError as error:
        path = os.path.normpath(os.path.expanduser(location))
        parent, name = os.path.split(path)
        if os.path.exists(path) or not parent or not os.path.isdir(parent) or isinstance(error, DamagedCheckpointError):
            raise
        lines = str(error).removeprefix(f"{location}: ").splitlines() or [type(error).__name__]
        raise FileNotFoundError(
            f"{location}: no such local folder ({parent}{os.sep} holds no {name}); as a hub id: {lines[0]}"
        ) from error


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a request that got no answer, for the HTTP client this huggingface_hub uses."""
    errors: list[type[BaseException]] = []
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",))):
        try:
            library = importlib.import_module(module)
        except ImportError:
            continue
        errors += [getattr(library, name) for name in names]
    try:  # huggingface_hub < 1.0 (transformers 4.57) uses requests
        import requests

        errors += [requests.ConnectionError, requests.Timeout]
    except ImportError:
        pass
    return tuple(errors)


def check_hub(repo_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Probe the Hub once for ``repo_id`` (``from_pretrained``'s ``kwargs``) before transformers downloads it.

    Reachable: ``kwargs`` unchanged. Unreachable: the cached files are loaded offline
    (``local_files_only=True``) when the cache holds the config, otherwise :class:`HubUnreachableError`.
    Nothing is probed in offline mode, with ``local_files_only``, or for a name that is no hub id.
    """
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, build_hf_headers, get_session, validate_repo_id

    if kwargs.get("local_files_only") or constants.HF_HUB_OFFLINE:
        return kwargs
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return kwargs  # transformers explains that this is neither a folder nor a hub id
    subfolder, revision = kwargs.get("subfolder") or None, kwargs.get("revision")
    url = hf_hub_url(repo_id, "config.json", subfolder=subfolder, revision=revision)
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or PROBE_TIMEOUT_S)
    try:  # the session's own request: huggingface_hub's helpers retry for 23 s (get_hf_file_metadata < 1.0)
        get_session().head(url, headers=build_hf_headers(token=kwargs.get("token")), timeout=timeout)
        return kwargs  # any answer (200, 404, 401): transformers goes on and reports it as usual
    except _network_errors() as error:
        unreachable = error
    config = f"{subfolder}/config.json" if subfolder else "config.json"
    if isinstance(try_to_load_from_cache(repo_id, config, kwargs.get("cache_dir"), revision), str):
        return {**kwargs, "local_files_only": True}
    raise HubUnreachableError(
        f"{repo_id}: the model could not be downloaded: {constants.ENDPOINT} cannot be reached "
        f"({type(unreachable).__name__}: {unreachable}) and the local Hugging Face cache does not hold it. "
        f"Pass the path of a local folder with its config.json and model.safetensors instead (downloaded "
        f"elsewhere with `hf download {repo_id} --local-dir DIR`, or written by save_pretrained)."
    ) from unreachable
