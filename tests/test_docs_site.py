"""The documentation site builds as `make docs` builds it: `mkdocs build --strict`, which fails on any warning, a
link to a missing page or anchor included (mkdocs.yml's `validation`), and on a docstring mkdocstrings cannot
render; and the layout page names every module. The builds are skipped where the `docs` extra is not installed
(`make docs` installs it into .venv)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)]
    command += ["--site-dir", str(site)]
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(command, cwd=config.parent, env=environment, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("docs") / "site"
    result = build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stderr[-4000:]
    return site


def test_the_site_builds_strictly_with_every_page(site):
    pages = ["", "getting-started", "concepts", "commands", "model", "integrations", "training", "api", "benchmarks"]
    for page in [*pages, "limits", "layout"]:
        assert (site / page / "index.html").is_file(), f"no page {page or 'index'}"


def test_every_command_has_a_page_generated_from_its_parser(site):
    from onevision_encoder.cli.main import SUBCOMMANDS, build_parser

    parser = build_parser()
    for name in SUBCOMMANDS:
        page = (site / "commands" / name / "index.html").read_text()
        assert "argparse:" not in page, f"{name}: the marker was not replaced"
        # Every option the parser knows is on the page, as its --help shows it.
        subparser = parser._subparsers._group_actions[0].choices[name]
        for action in subparser._actions:
            if action.help is not None and action.help != "==SUPPRESS==" and action.option_strings:
                assert max(action.option_strings, key=len) in page, f"{name}: {action.option_strings} missing"


def test_the_api_pages_document_every_public_name(site):
    import importlib

    import onevision_encoder

    for package in ["codec", "model", "lmm", "video"]:
        page = (site / "api" / package / "index.html").read_text()
        documented = {path.rsplit(".", 1)[-1] for path in re.findall(r'id="(onevision_encoder\.[\w.]+)"', page)}
        public = importlib.import_module(f"onevision_encoder.{package}").__all__
        assert not set(public) - documented, f"onevision_encoder.{package}: undocumented {set(public) - documented}"
    index = (site / "api" / "index.html").read_text()
    assert all(f"<code>{name}</code>" in index for name in onevision_encoder.__all__)


def test_a_broken_anchor_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    limits = copy / "docs" / "limits.md"
    limits.write_text(limits.read_text() + "\nSee [nowhere](concepts.md#no-such-section).\n")
    result = build(copy / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-section" in result.stderr


def test_the_layout_page_names_every_module():
    """docs/layout.md lists each package's modules under the package's own line, so a module added, moved or
    removed shows here until the page follows."""
    layout = (ROOT / "docs" / "layout.md").read_text()
    tree = layout[layout.index("onevision_encoder/\n") : layout.index("\nbenchmarks/")]
    sections = re.split(r"\n  (?=\w+/ )", tree)
    listed = {section.split("/", 1)[0]: set(re.findall(r"[\w]+\.py", section)) for section in sections[1:]}
    listed[""] = set(re.findall(r"[\w]+\.py", sections[0]))
    package = ROOT / "onevision_encoder"
    modules: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        folder = path.parent.relative_to(package).as_posix().replace(".", "")
        if path.name != "__init__.py" or folder == "":
            modules.setdefault(folder, set()).add(path.name)
    assert listed == modules
