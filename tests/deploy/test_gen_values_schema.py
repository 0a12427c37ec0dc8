"""deploy/gen_values_schema.py's command line: what the chart's values.schema.json is made by.

tests/deploy/test_helm_chart.py checks that the committed schema is the one generated from the
committed values.yaml; this checks the command that rewrites it and its `--check` mode.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_helm_chart import _schema_generator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def generator() -> Any:
    return _schema_generator()  # the chart test's loader of deploy/gen_values_schema.py


def test_check_passes_on_the_committed_chart(generator: Any) -> None:
    assert generator.main(["--check"]) == 0


def test_rewrite_then_check_and_a_stale_schema_fails(
    generator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    shutil.copy(REPO / "helm" / "lorafleet" / "values.yaml", chart / "values.yaml")
    assert generator.main(["--chart", str(chart), "--check"]) == 1  # no schema yet
    assert generator.main(["--chart", str(chart)]) == 0
    assert (chart / "values.schema.json").read_text() == (
        REPO / "helm" / "lorafleet" / "values.schema.json"
    ).read_text()
    assert generator.main(["--chart", str(chart), "--check"]) == 0
    with (chart / "values.yaml").open("a") as values:
        values.write("# A new setting.\nnewSetting: 3\n")
    assert generator.main(["--chart", str(chart), "--check"]) == 1
    assert "is stale: run python deploy/gen_values_schema.py" in capsys.readouterr().err
