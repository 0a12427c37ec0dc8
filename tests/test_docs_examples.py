"""The example extractor, and the rule it enforces on README.md and docs/: every example is
run against the real gateway in CI, or marked with why it cannot be."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs_examples import ExampleError, all_examples, extract

ROOT = Path(__file__).resolve().parents[1]
DOC = Path("DOC.md")

SAMPLE = """# Title

```python
from openai import OpenAI
c = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
print(c.models.list().data[0].id)  # smollm2-135m-instruct
print("no output shown")
```

<!-- example: not-run (needs a GPU) -->
```bash
curl localhost:8000/ready
```

```
a diagram ─▶ curl
```

~~~sh
make lint
~~~
"""


def test_blocks_are_found_with_their_language_line_and_code() -> None:
    python, marked, diagram, shell = extract(SAMPLE, DOC)
    assert (python.language, python.line, python.runner) == ("python", 3, "python")
    assert python.code.startswith("from openai import OpenAI\n") and python.code.endswith(")\n")
    assert (marked.runner, marked.not_run, marked.code) == (
        "bash", "needs a GPU", "curl localhost:8000/ready\n",
    )  # fmt: skip
    assert diagram.runner is None and not diagram.talks_to_gateway
    assert (shell.runner, shell.code, shell.name) == ("bash", "make lint\n", "DOC.md:19")


def test_what_talks_to_the_gateway() -> None:
    python, marked, _, shell = extract(SAMPLE, DOC)
    assert python.talks_to_gateway and marked.talks_to_gateway
    assert not shell.talks_to_gateway
    for code in ("lorafleet adapters ls", "lorafleet train --publish URL", "lorafleet keys ls"):
        assert extract(f"```bash\n{code}\n```\n", DOC)[0].talks_to_gateway, code
    assert not extract("```bash\nlorafleet model fetch\n```\n", DOC)[0].talks_to_gateway


def test_shown_output_is_read_from_print_comments() -> None:
    python, marked, _, _ = extract(SAMPLE, DOC)
    assert python.expected_output() == ["smollm2-135m-instruct"]
    assert marked.expected_output() == []


def test_examples_are_pointed_at_the_test_gateway() -> None:
    python, marked, _, _ = extract(SAMPLE, DOC)
    assert 'base_url="http://127.0.0.1:4321/v1"' in python.for_gateway("http://127.0.0.1:4321")
    assert marked.for_gateway("http://127.0.0.1:4321") == "curl 127.0.0.1:4321/ready\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<!-- example: not-run () -->\n```bash\nls\n```\n", "needs a reason"),
        ("<!-- example: not-run (why) -->\n\n```bash\nls\n```\n", "line before a fence"),
        ("<!-- example: skip -->\n```bash\nls\n```\n", "write the marker as"),
        ("```bash\nls\n", "never closed"),
    ],
)
def test_bad_markers_and_fences_are_errors(text: str, problem: str) -> None:
    with pytest.raises(ExampleError, match=problem):
        extract(text, DOC)


def test_marker_syntax_quoted_in_prose_is_not_a_marker() -> None:
    assert extract("Mark it with `<!-- example: not-run (why) -->`.\n", DOC) == []


def test_every_docs_example_is_run_or_marked_with_a_reason() -> None:
    """Unmarked examples run in CI, so they must be gateway examples (never `make test` or a
    cluster command run by accident); everything else must say why it is not run."""
    examples = all_examples(ROOT)
    unmarked = [e.name for e in examples if e.not_run is None and not e.talks_to_gateway]
    assert unmarked == [], "mark these <!-- example: not-run (reason) --> or make them run"
    assert all(e.not_run for e in examples if e.not_run is not None)


def test_the_quick_start_runs_and_shows_its_answer() -> None:
    run = [e for e in all_examples(ROOT) if e.not_run is None]
    first_python = next(e for e in run if e.runner == "python" and e.path.name == "README.md")
    assert first_python.expected_output() == ["The capital of France is Paris."]
    assert "temperature=0" in first_python.code and "max_tokens=" in first_python.code
    streamed = next(e for e in run if '"stream": true' in e.code)
    assert '"max_tokens"' in streamed.code
