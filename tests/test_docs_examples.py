"""Every code block of README.md and docs/**/*.md runs as printed.

What is collected, one test per block, named by its file and the line of its opening fence
(``README.md:273``):

- ```` ```python ```` blocks run, each in a fresh interpreter (forked from one that has imported torch,
  transformers and numpy, never this package: a block that forgets ``import onevision_encoder`` fails as it
  would for a user) with its own empty sandbox folder as working directory. Tracebacks name the document's
  lines.
- ```` ```bash ```` (``sh``, ``shell``; ``console``: its ``$ `` lines) blocks are commands a user types. Every
  ``onevision``
  command line in them (``python -m onevision_encoder``, ``torchrun ... -m onevision_encoder[.train|.probe]``
  included; a line holding a bare ``...`` is a sketch and is left out) is checked against the command's own
  parser, run or not: an option that was renamed or a value of the wrong type fails. The lines named by
  ``run=`` are then run in the sandbox: a plain ``onevision ARGS`` line (no shell syntax) as the console
  script runs it, ``onevision_encoder.cli.main(ARGS)``, in a fresh interpreter as above (sparing each command
  the seconds of importing torch); any other line by bash, with this environment's ``onevision`` on PATH.
- Other fences (yaml, text, the layout tree) are not code and are not collected.

Nothing is downloaded: the hub is offline (``HF_HUB_OFFLINE=1``, an empty ``HF_HOME``), and a block's models
are tiny random-weight ones, made once per session and linked into the sandbox at the paths the block names
(hub ids included: ``from_pretrained`` takes an existing local folder first).

A block says what it needs in an HTML comment on the line before its fence (invisible once rendered):

    <!-- test: files=photo.jpg,clip.mp4 encoder=PATH_OR_ID run="encode photo.jpg" skip="the others need a GPU" -->

- ``files=A,B``: generated inputs, by extension: videos (``.mp4`` ...: a 64-frame moving-object clip),
  images (``.jpg``, ``.png``: 480x640 noise); folders in the paths are made.
- ``encoder=P,Q``: a tiny ``OneVisionEncoderModel`` folder at each path.
- ``lm=P``: a tiny Qwen2 causal LM with Qwen2's vocabulary size (real placeholder ids such as 151655 fit).
- ``classifier=P``: a tiny ``OneVisionEncoderForVideoClassification`` (3 labels) and its video processor.
- ``setup="onevision ARGS"``: a command run (in this process) in the sandbox before the block, e.g. to write
  the feature folder a block reads.
- ``requires="transformers>=5"``: the block is skipped with another version of that package.
- ``run=all`` or ``run="FRAGMENT|FRAGMENT"``: shell blocks only, the lines that are run, each fragment naming
  exactly one line that contains it (text, not line numbers, so an edited block cannot turn the test onto
  another command). A shell block must say ``run``, ``skip`` or both.
- ``skip="reason"``: a python block is compiled but not run; in a bash block, the lines outside ``run`` are
  not run. Use it for what needs a GPU, a cluster, several processes, the network or a package install;
  the reason shows in pytest's summary of skips.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

import onevision_encoder

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
PYTHON = {"python", "py", "python3"}
SHELL = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"^\s*<!--\s*test:(.*?)-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,})([\w+-]*)\s*$")
MARKER_KEYS = {"files", "encoder", "lm", "classifier", "setup", "requires", "run", "skip"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".ts"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
BLOCK_TIMEOUT_S = 300
SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?\[\]{}~\\'\"]")  # a line with any of these goes to bash
# The placeholder ids of the README's examples are Qwen2's; the tiny LM keeps its vocabulary size for them.
QWEN2_VOCABULARY = 151936


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None  # the text of its `<!-- test: ... -->` comment

    @property
    def name(self) -> str:
        return self.location(0)

    def location(self, line_in_block: int) -> str:
        """``FILE:LINE`` of a line of the block (0: its opening fence)."""
        document = self.document.relative_to(ROOT) if self.document.is_relative_to(ROOT) else self.document
        return f"{document}:{self.line + line_in_block}"


def read_blocks(document: Path) -> tuple[list[Block], list[int]]:
    """The python and shell blocks of ``document``, and the lines of markers that precede no fence."""
    lines = document.read_text().splitlines()
    blocks, orphans = [], []
    marker: tuple[int, str] | None = None
    index = 0
    while index < len(lines):
        text = lines[index]
        opening = FENCE.match(text)
        if match := MARKER.match(text):
            if marker is not None:
                orphans.append(marker[0])
            marker = (index + 1, match.group(1))
        elif opening:
            indent, ticks, language = opening.groups()
            end = next(
                (i for i in range(index + 1, len(lines)) if lines[i].strip() == ticks),
                len(lines),
            )
            body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[index + 1 : end]]
            if language.lower() in PYTHON | SHELL:
                code = "\n".join(body) + "\n"
                blocks.append(Block(document, index + 1, language.lower(), code, marker and marker[1]))
            elif marker is not None:
                orphans.append(marker[0])
            marker = None
            index = end
        elif text.strip() and marker is not None:
            orphans.append(marker[0])
            marker = None
        index += 1
    if marker is not None:
        orphans.append(marker[0])
    return blocks, orphans


def all_blocks() -> list[Block]:
    return [block for document in DOCUMENTS for block in read_blocks(document)[0]]


def parse_marker(block: Block) -> dict[str, str]:
    if block.marker is None:
        return {}
    fields = {}
    for word in shlex.split(block.marker):
        key, equals, value = word.partition("=")
        if not equals or key not in MARKER_KEYS:
            pytest.fail(f"{block.name}: marker field {word!r} is not one of {sorted(MARKER_KEYS)} as key=value")
        fields[key] = value
    return fields


def listed(fields: dict[str, str], key: str) -> list[str]:
    return [item for item in fields.get(key, "").split(",") if item]


class Assets:
    """What the blocks need, made once per session and copied or linked into each sandbox."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @cached_property
    def video(self) -> Path:
        from onevision_encoder.video.synthetic import make_clip, write_clip

        return write_clip(self.folder / "clip.mp4", make_clip("moving_object", num_frames=64, size=(120, 160)))

    def image(self, suffix: str) -> Path:
        path = self.folder / f"photo{suffix}"
        if not path.exists():
            pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        return path

    @cached_property
    def encoder(self) -> Path:
        torch.manual_seed(0)
        path = self.folder / "encoder"
        onevision_encoder.OneVisionEncoderModel(tiny_config()).save_pretrained(path)
        return path

    @cached_property
    def language_model(self) -> Path:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        config = Qwen2Config(vocab_size=QWEN2_VOCABULARY, num_key_value_heads=1, **sizes)
        path = self.folder / "language-model"
        Qwen2ForCausalLM(config).save_pretrained(path)
        return path

    @cached_property
    def classifier(self) -> Path:
        from onevision_encoder import OneVisionEncoderForVideoClassification, OneVisionEncoderVideoProcessor

        torch.manual_seed(0)
        labels = dict(enumerate(["left", "down", "up"]))
        config = tiny_config(id2label=labels, label2id={name: index for index, name in labels.items()})
        path = self.folder / "classifier"
        OneVisionEncoderForVideoClassification(config).save_pretrained(path)
        OneVisionEncoderVideoProcessor(num_frames=8).save_pretrained(path)
        return path

    def place(self, block: Block, fields: dict[str, str], sandbox: Path) -> None:
        """Put the marker's files and models at the paths the block uses, inside ``sandbox``."""
        for name in listed(fields, "files"):
            suffix = Path(name).suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                source = self.video
            elif suffix in IMAGE_SUFFIXES:
                source = self.image(suffix)
            else:
                pytest.fail(f"{block.name}: no generator for file {name!r} (videos: {sorted(VIDEO_SUFFIXES)}, "
                            f"images: {sorted(IMAGE_SUFFIXES)})")  # fmt: skip
            target = sandbox / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        for key, attribute in (("encoder", "encoder"), ("lm", "language_model"), ("classifier", "classifier")):
            for name in listed(fields, key):
                target = sandbox / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(getattr(self, attribute), target_is_directory=True)


class Interpreter:
    """Fresh interpreters on demand: a server process imports the heavy libraries once and forks a child per
    block, which runs the block's code alone (this package is imported only if the block imports it)."""

    SERVER = r"""
import json, os, signal, sys, traceback
sys.path[0] = sys.argv[1]  # the package under test, whatever the working directory
import numpy, PIL.Image, av, cv2, torch, transformers, transformers.modeling_utils  # paid once, not per block
for request in map(json.loads, sys.stdin):
    pid = os.fork()
    if pid == 0:
        os.chdir(request["cwd"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the requests' pipe is not the block's to read
        signal.alarm(request["timeout"])
        try:
            exec(compile(request["code"], request["filename"], "exec"), {"__name__": "__main__"})
            status = 0
        except SystemExit as stop:  # a command's exit status (argparse's --help: 0)
            status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""

    def __init__(self, environment: dict[str, str]) -> None:
        package_root = str(Path(onevision_encoder.__file__).resolve().parents[1])
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.SERVER, package_root],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )

    def run(self, code: str, document: Path, first_line: int, sandbox: Path) -> tuple[int, str]:
        """The exit status of ``code`` (from ``first_line`` of ``document`` on) run in ``sandbox``, and what it
        printed."""
        log = sandbox.parent / f"{sandbox.name}.log"
        # Blank lines in front, so that tracebacks give the document's own line numbers.
        code = "\n" * (first_line - 1) + code
        request = dict(code=code, filename=str(document), cwd=str(sandbox), log=str(log), timeout=BLOCK_TIMEOUT_S)
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            pytest.fail(f"the interpreter server ended (exit {self.process.wait()})")
        return json.loads(reply), log.read_text() if log.exists() else ""

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def environment(tmp_path_factory) -> dict[str, str]:
    """This environment's `onevision` first on PATH; the hub offline, with an empty cache."""
    hub_home = tmp_path_factory.mktemp("hf-home")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    offline = dict(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(hub_home), PATH=path)
    return {**os.environ, **offline}


@pytest.fixture(scope="session")
def interpreter(environment):
    server = Interpreter(environment)
    yield server
    server.close()


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    return Assets(tmp_path_factory.mktemp("doc-assets"))


def onevision_arguments(line: str) -> list[str] | None:
    """The arguments of the `onevision` command a shell line runs, or None when it runs none."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if "..." in words:
        return None  # a sketch: "the same options"
    if words[:1] == ["onevision"]:
        return words[1:]
    if "-m" in words[:-1]:
        module = words[words.index("-m") + 1]
        if module == "onevision_encoder":
            return words[words.index("-m") + 2 :]
        package, _, subcommand = module.partition(".")
        if package == "onevision_encoder" and subcommand:
            return [subcommand, *words[words.index("-m") + 2 :]]
    return None


def check_against_parser(block: Block) -> None:
    from onevision_encoder.cli.main import build_parser

    for number, line in command_lines(block).items():
        arguments = onevision_arguments(line)
        if arguments is None:
            continue
        messages = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(messages):
                build_parser().parse_args(arguments)
        except SystemExit as stop:
            if stop.code:
                pytest.fail(f"{block.location(number)}: {line.strip()}\n{messages.getvalue()}")


def command_lines(block: Block) -> dict[int, str]:
    """The block's commands (not blank lines or comments; in a console block the ``$ `` lines, without the
    prompt), by their 1-based line number in the block."""
    commands = {}
    for number, line in enumerate(block.code.splitlines(), start=1):
        if block.language == "console":
            if not line.startswith("$ "):
                continue  # the command's output
            line = line[2:]
        if line.strip() and not line.lstrip().startswith("#"):
            commands[number] = line
    return commands


def lines_to_run(block: Block, fields: dict[str, str]) -> list[int]:
    """The numbers (1-based, in the block) of the command lines that ``run`` names."""
    commands = command_lines(block)
    if "run" not in fields and "skip" not in fields:
        pytest.fail(f'{block.name}: a shell block must say which of its lines run (run="FRAGMENT" or run=all) '
                    f'and why the others do not (skip="...")')  # fmt: skip
    if fields.get("run") == "all":
        chosen = sorted(commands)
    else:
        chosen = []
        for fragment in filter(None, fields.get("run", "").split("|")):
            matches = [number for number, line in commands.items() if fragment in line]
            if len(matches) != 1:
                pytest.fail(f"{block.name}: run fragment {fragment!r} is in {len(matches)} command lines, not 1")
            chosen += matches
    if set(chosen) != set(commands) and not fields.get("skip"):
        pytest.fail(f'{block.name}: lines {sorted(set(commands) - set(chosen))} are not run: say why with skip="..."')
    return sorted(chosen)


def skip_unless_installed(block: Block, requirement: str | None) -> None:
    if requirement is None:
        return
    from importlib.metadata import version

    from packaging.requirements import Requirement

    wanted = Requirement(requirement)
    found = version(wanted.name)
    if not wanted.specifier.contains(found, prereleases=True):
        pytest.skip(f"{block.name} needs {requirement}, found {found}")


def run_setup(block: Block, command: str, sandbox: Path, monkeypatch) -> None:
    from onevision_encoder.cli.main import main

    arguments = onevision_arguments(command)
    if arguments is None:
        pytest.fail(f"{block.name}: setup must be an `onevision` command, got {command!r}")
    with monkeypatch.context() as patch:
        patch.chdir(sandbox)
        status = main(arguments)
    assert status == 0, f"{block.name}: setup {command!r} exited {status}"


@pytest.mark.parametrize("block", all_blocks(), ids=lambda block: block.name)
def test_block_runs_as_printed(block: Block, tmp_path, assets, environment, interpreter, monkeypatch):
    fields = parse_marker(block)
    skip_unless_installed(block, fields.get("requires"))
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    if block.language in SHELL:
        check_against_parser(block)
        chosen = lines_to_run(block, fields)
    elif "run" in fields:
        pytest.fail(f"{block.name}: run= is for shell blocks; a python block runs whole")
    else:
        compile(block.code, block.name, "exec")
        chosen = [] if fields.get("skip") else [1]
    if not chosen:
        pytest.skip(f"{block.name}: {fields['skip']}")
    assets.place(block, fields, sandbox)
    if "setup" in fields:
        run_setup(block, fields["setup"], sandbox, monkeypatch)
    if block.language in PYTHON:
        status, output = interpreter.run(block.code, block.document, block.line + 1, sandbox)
        assert status == 0, f"{block.name} failed ({ending(status)}):\n{output}"
        return
    commands = command_lines(block)
    for number in chosen:
        status, output = run_command(commands[number], block.location(number), sandbox, environment, interpreter)
        assert status == 0, (
            f"{block.location(number)}: `{commands[number].strip()}` failed ({ending(status)}):\n{output}"
        )


def run_command(
    command: str, location: str, sandbox: Path, environment: dict[str, str], interpreter: Interpreter
) -> tuple[int, str]:
    """Exit status and output of a shell line (at ``location``, FILE:LINE) run in ``sandbox``."""
    arguments = onevision_arguments(command)
    plain = arguments is not None and command.split()[0] == "onevision" and not SHELL_SYNTAX.search(command)
    if plain:
        call = f"import sys\nfrom onevision_encoder.cli import main\nsys.exit(main({arguments!r}))\n"
        return interpreter.run(call, Path(location), 1, sandbox)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=sandbox,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    return result.returncode, result.stdout


def ending(status: int) -> str:
    return f"killed by signal {-status}, the limit being {BLOCK_TIMEOUT_S} s" if status < 0 else f"exit {status}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_marker_precedes_a_code_block(document: Path):
    orphans = read_blocks(document)[1]
    assert not orphans, (
        f"{document.name}: markers at lines {orphans} are not on the line before a python or shell fence"
    )


def test_a_block_runs_without_what_this_process_has_imported(tmp_path, interpreter):
    """This process has registered our Auto classes; a block that never imports the package must not see them."""
    document = tmp_path / "guide.md"
    lookup = 'from transformers import AutoConfig\n\nAutoConfig.for_model("onevision_encoder")\n'
    document.write_text(f"```python\n{lookup}```\n\n```python\nimport onevision_encoder\n{lookup}```\n")
    without, with_import = read_blocks(document)[0]
    status, output = interpreter.run(without.code, document, without.line + 1, tmp_path)
    assert status == 1 and "Unrecognized model identifier: onevision_encoder" in output
    assert f'File "{document}", line 4' in output  # the document's own line
    status, output = interpreter.run(with_import.code, document, with_import.line + 1, tmp_path)
    assert status == 0, output


def test_an_option_the_command_lacks_fails_the_parser_check(tmp_path):
    document = tmp_path / "guide.md"
    document.write_text("```bash\nonevision encode a.mp4 --model m --out f.npz --no-such-option\n```\n")
    with pytest.raises(pytest.fail.Exception, match=r"guide\.md:2: onevision encode .*no-such-option"):
        check_against_parser(read_blocks(document)[0][0])


def test_a_marker_away_from_a_fence_is_reported(tmp_path):
    document = tmp_path / "guide.md"
    document.write_text('<!-- test: skip="x" -->\nSome prose.\n\n<!-- test: files=a.mp4 -->\n\n```python\npass\n```\n')
    blocks, orphans = read_blocks(document)
    assert orphans == [1]
    assert [(block.line, block.marker.strip()) for block in blocks] == [(6, "files=a.mp4")]
