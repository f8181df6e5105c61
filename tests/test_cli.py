"""`facevae --help` texts: docstrings flow into paragraphs at the terminal's width."""

import pytest
from typer.testing import CliRunner

from facevae.cli import app

WIDTH = 80


def help_text(command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.output


def description_paragraphs(text: str) -> list[list[str]]:
    """The lines between 'Usage:' and the first option box, split at blank lines."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("╭"))
    paragraphs, current = [], []
    for line in lines[start:end]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(current)
            current = []
    return paragraphs + ([current] if current else [])


@pytest.mark.parametrize("command", ["evaluate", "train", "sweep", "reconstruct"])
def test_docstring_paragraphs_are_rewrapped_not_broken_at_the_source_lines(command):
    for paragraph in description_paragraphs(help_text(command)):
        # a line cut at the docstring's own line break would leave a short line mid-paragraph
        assert all(len(line) > WIDTH // 2 for line in paragraph[:-1]), paragraph


def test_placeholders_survive_the_markup():
    assert "models/ACTOR/mlflow.json" in help_text("evaluate")
    assert "data/faces/ACTOR" in help_text("review")
