"""The code examples in README.md and docs/: found, classified, and made runnable.

Every fenced block in a shell language or Python is an example. An example either talks to
the gateway, and then CI runs it against the session's real gateway and engine
(tests/integration/test_readme_examples.py), or it cannot run there (a GPU, a cluster, a long
training run, `make`) and the line just before its fence says why:

    <!-- example: not-run (needs a Kubernetes cluster) -->

Where a Python example shows its output as a comment after `print(...)`, that output is what
the test asserts. tests/test_docs_examples.py checks that every example is one or the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
README_URL = "http://127.0.0.1:8000"

_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>[\w+-]*)")
_MARKER = re.compile(r"^<!--\s*example:\s*not-run\s*\((?P<reason>.*)\)\s*-->\s*$")
_ANY_MARKER = re.compile(r"^\s*<!--\s*example:")
# What reaches a gateway: the SDK, curl, the lorafleet commands that call one, its address.
_GATEWAY = re.compile(
    r"\bOpenAI\(|\bcurl\b|--publish\b|127\.0\.0\.1:8000|localhost:8000"
    r"|^\s*lorafleet\s+(adapters|keys|eval|bench|model\s+smoke)\b",
    re.MULTILINE,
)
_PRINTED = re.compile(r"^\s*print\(.*\)\s*#\s?(?P<output>.+?)\s*$")


class ExampleError(ValueError):
    """A marker that marks nothing, or marks without a reason."""


@dataclass(frozen=True)
class Example:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str  # the fence's info string, lower-cased ("" for none)
    code: str
    not_run: str | None = None  # the marker's reason

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def runner(self) -> str | None:
        """`bash` or `python` for an example, None for a diagram, YAML or other text."""
        return LANGUAGES.get(self.language)

    @property
    def talks_to_gateway(self) -> bool:
        return self.runner is not None and _GATEWAY.search(self.code) is not None

    def expected_output(self) -> list[str]:
        """The printed lines the example shows, in order (`print(x)  # shown output`)."""
        if self.runner != "python":
            return []
        return [m["output"] for line in self.code.splitlines() if (m := _PRINTED.match(line))]

    def for_gateway(self, url: str) -> str:
        """The code pointed at `url` instead of the README's default address."""
        code = self.code.replace(README_URL, url)
        return code.replace("localhost:8000", url.removeprefix("http://"))


def extract(text: str, path: Path) -> list[Example]:
    """Every fenced block of a Markdown text, with the not-run reason its marker gives."""
    lines = text.splitlines()
    examples: list[Example] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if _ANY_MARKER.search(line):
            block, index = _marked_block(lines, index, path)
            examples.append(block)
        elif fence:
            block, index = _block(lines, index, fence, path)
            examples.append(block)
        index += 1
    return examples


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def all_examples(root: Path) -> list[Example]:
    return [
        example
        for path in doc_files(root)
        for example in extract(path.read_text(), path.relative_to(root))
        if example.runner is not None
    ]


def _marked_block(lines: list[str], index: int, path: Path) -> tuple[Example, int]:
    marker = _MARKER.match(lines[index].strip())
    where = f"{path}:{index + 1}"
    if marker is None:
        raise ExampleError(f"{where}: write the marker as <!-- example: not-run (reason) -->")
    if not marker["reason"].strip():
        raise ExampleError(f"{where}: a not-run marker needs a reason")
    fence = _FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
    if fence is None:
        raise ExampleError(f"{where}: a not-run marker must sit on the line before a fence")
    block, end = _block(lines, index + 1, fence, path)
    reason = marker["reason"].strip()
    return Example(block.path, block.line, block.language, block.code, reason), end


def _block(lines: list[str], start: int, fence: re.Match[str], path: Path) -> tuple[Example, int]:
    """The block opened at `start`, and the index of its closing fence."""
    close = fence["fence"]
    end = start + 1
    while end < len(lines) and not lines[end].startswith(close):
        end += 1
    if end == len(lines):
        raise ExampleError(f"{path}:{start + 1}: code fence never closed")
    code = "\n".join(lines[start + 1 : end]) + "\n"
    return Example(path, start + 1, fence["info"].lower(), code), end
