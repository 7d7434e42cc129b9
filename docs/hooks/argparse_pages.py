"""MkDocs hook: each ``<!-- argparse: COMMAND -->`` marker of a page becomes that ``onevision`` command's usage,
description, options and examples, taken from the parser the command itself builds, so the pages cannot drift
from ``onevision COMMAND --help``."""

from __future__ import annotations

import argparse
import html
import re

MARKER = re.compile(r"^<!--\s*argparse:\s*([\w-]+)\s*-->$", re.M)
CODE_SPAN = re.compile(r"(`[^`]*`)")
MARKDOWN_SPECIALS = re.compile(r"([\\*_\[\]|])")


def on_page_markdown(markdown: str, **_: object) -> str:
    if not MARKER.search(markdown):
        return markdown
    commands = subcommand_parsers()

    def reference(match: re.Match) -> str:
        name = match.group(1)
        if name not in commands:
            raise KeyError(f"<!-- argparse: {name} -->: onevision has no command {name!r} (it has {sorted(commands)})")
        return command_reference(commands[name])

    return MARKER.sub(reference, markdown)


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    from onevision_encoder.cli.main import build_parser

    parser = build_parser()
    [subparsers] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def command_reference(parser: argparse.ArgumentParser) -> str:
    formatter = parser._get_formatter()
    parts = [fenced("text", parser.format_usage().strip()), prose(parser.description or "")]
    for group in parser._action_groups:
        actions = [action for action in group._group_actions if action.help is not argparse.SUPPRESS]
        if not actions:
            continue
        rows = [
            f"| `{formatter._format_action_invocation(action)}` | {prose(formatter._expand_help(action))} |"
            if action.help
            else f"| `{formatter._format_action_invocation(action)}` | |"
            for action in actions
        ]
        parts.append("\n".join([f"**{prose(group.title or '')}**", "", "| argument | meaning |", "|---|---|", *rows]))
    if parser.epilog:
        title, _, examples = parser.epilog.partition("\n")
        parts.append(f"**{prose(title.rstrip(':'))}**\n\n" + fenced("bash", examples.strip("\n")))
    return "\n\n".join(parts) + "\n"


def prose(text: str) -> str:
    """argparse's plain text as one Markdown paragraph: code spans kept, everything else shown as written."""
    pieces = CODE_SPAN.split(" ".join(text.split()))
    return "".join(
        piece if piece.startswith("`") else html.escape(MARKDOWN_SPECIALS.sub(r"\\\1", piece), quote=False)
        for piece in pieces
    )


def fenced(language: str, text: str) -> str:
    return f"```{language}\n{text}\n```"
