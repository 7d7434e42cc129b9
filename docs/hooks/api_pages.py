"""MkDocs hook: ``<!-- api: PACKAGE -->`` becomes one mkdocstrings ``:::`` block per name of ``PACKAGE.__all__``,
at the module that defines it, and ``<!-- api-index: PACKAGE -->`` a table of ``PACKAGE.__all__`` linking each
name to the page that documents it. The public names are the packages' own lists, so the pages follow them."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from types import ModuleType

MARKER = re.compile(r"^<!--\s*(api|api-index):\s*([\w.]+)\s*-->$", re.M)
# The package each API page documents, for the index's links (pages under docs/api/).
PAGES = {
    "onevision_encoder.codec": "codec.md",
    "onevision_encoder.model": "model.md",
    "onevision_encoder.lmm": "lmm.md",
    "onevision_encoder.video": "video.md",
}


def on_page_markdown(markdown: str, **_: object) -> str:
    def expand(match: re.Match) -> str:
        kind, package = match.groups()
        if kind == "api":
            return "\n\n".join(f"::: {path}" for path in public_paths(package).values()) + "\n"
        return index_table(package)

    return MARKER.sub(expand, markdown)


def public_paths(package_name: str) -> dict[str, str]:
    """Each public name of the package -> the dotted path of its definition."""
    package = importlib.import_module(package_name)
    return {name: definition_path(package, name) for name in sorted(package.__all__, key=str.lower)}


def definition_path(package: ModuleType, name: str) -> str:
    value = getattr(package, name)
    module = getattr(value, "__module__", None) if inspect.isclass(value) or inspect.isfunction(value) else None
    if module is None:  # a constant: the deepest loaded module of the package that holds this very object
        holders = [
            module_name
            for module_name, loaded in list(sys.modules.items())
            if module_name.startswith(package.__name__ + ".") and vars(loaded).get(name) is value
        ]
        module = max(holders, key=lambda held: held.count("."), default=package.__name__)
    return f"{module}.{name}"


def index_table(package_name: str) -> str:
    package = importlib.import_module(package_name)
    rows = ["| name | documented in |", "|---|---|"]
    for name in sorted(package.__all__, key=str.lower):
        path = definition_path(package, name)
        documented_in = next((page for prefix, page in PAGES.items() if path.startswith(prefix + ".")), None)
        if documented_in is None:
            raise LookupError(f"{package_name}.{name} ({path}) belongs to none of the API pages {sorted(PAGES)}")
        section = PAGES_TITLES[documented_in]
        rows.append(f"| [`{name}`]({documented_in}#{path}) | `{section}` |")
    return "\n".join(rows) + "\n"


PAGES_TITLES = {page: package for package, page in PAGES.items()}
