"""What can go wrong fetching and reading a checkpoint, said with the file or the hub id it concerns.

- A damaged weights file (empty, truncated, not safetensors) raises :class:`DamagedCheckpointError`
  naming the file, instead of safetensors' bare "header too small".
- A hub id while the Hub cannot be reached raises :class:`HubUnreachableError` after one short request
  (huggingface_hub itself retries for about 25 s before saying so); the hub id's files in the local
  Hugging Face cache are then loaded from there, as offline mode would.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

# Seconds the reachability probe waits for the Hub; HF_HUB_ETAG_TIMEOUT, when set, replaces it.
PROBE_TIMEOUT_S = 4.0
WEIGHTS_NAME, WEIGHTS_INDEX_NAME = "model.safetensors", "model.safetensors.index.json"


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


def _weights_files(location: str, kwargs: dict[str, Any], hub: bool) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads: ``model.safetensors`` or the shards its index names."""
    subfolder = kwargs.get("subfolder") or ""

    def find(name: str) -> Path | None:
        if not hub:
            path = Path(os.path.expanduser(location), subfolder, name)
            return path if path.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(
            location, f"{subfolder}/{name}" if subfolder else name, kwargs.get("cache_dir"), kwargs.get("revision")
        )
        return Path(cached) if isinstance(cached, str) else None

    index = find(WEIGHTS_INDEX_NAME)
    names = [WEIGHTS_NAME]
    if index is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, AttributeError):  # then model.safetensors only
            names += sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return [path for path in map(find, names) if path is not None]


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
