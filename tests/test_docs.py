"""The README and docs/ say what the code does: their result tables equal what their sources
generate, and every command they show exists with the flags they give it (DVC commands parsed
by DVC's own parser, MLflow's by its click CLI, ours by their module source)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from pipelines import docs_tables

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"[<>\[\]]|\.\.\.|^[A-Z_]+$")


def _commands() -> list[tuple[str, str]]:
    """(page, command) of every shell line in a bash block and every inline `python -m` /
    `python benchmarks/` / `dvc` command; comments and continuation dropped."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.splitlines():
                command = line.split("  #")[0].split(" # ")[0].strip()
                for part in command.split("&&"):
                    if part.strip():
                        found.append((page.name, part.strip()))
        for span in re.findall(r"`([^`\n]+)`", text):
            if re.match(r"(python -m \w|python benchmarks/|dvc [a-z])", span):
                found.append((page.name, span))
    return found


COMMANDS = _commands()


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) < 150


def test_generated_tables_equal_their_sources():
    """Reference: the sources (sweep reports, benchmark results) through pipelines.docs_tables."""
    regions = 0
    for page in PAGES:
        text = page.read_text()
        regions += len(docs_tables.REGION.findall(text))
        assert docs_tables.regenerate(text, page.name) == text, f"{page.name}: run python -m pipelines.docs_tables"
    assert regions >= 3


def test_a_changed_number_is_caught(tmp_path):
    """The check is not vacuous: one digit changed in a generated table differs from its source."""
    page = ROOT / "docs" / "results.md"
    text = page.read_text()
    start = text.index("<!-- generated: objective-zoo -->")
    number = re.search(r"\b0\.\d{3}\b", text[start:])
    at = start + number.end() - 1
    changed = text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1 :]
    assert changed != text and docs_tables.regenerate(changed, "x") != changed


def _flags(tokens: list[str]) -> list[str]:
    return [t.split("=")[0] for t in tokens if t.startswith("--")]


@pytest.mark.parametrize("page, command", [c for c in COMMANDS if c[1].startswith(("python -m", "python benchmarks/", "bash "))])
def test_our_commands_and_flags_exist(page, command):
    tokens = shlex.split(command)
    if tokens[0] == "bash":
        assert (ROOT / tokens[1]).is_file(), f"{page}: {command}"
        return
    if tokens[1] == "-m":
        module = tokens[2]
        if module in ("pytest", "mlflow", "dvc") or PLACEHOLDER.search(module):
            return
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"{page}: no module {module} ({command})"
        sources = Path(spec.origin).read_text()
        if spec.origin.endswith("__init__.py") and (Path(spec.origin).parent / "__main__.py").is_file():
            sources += (Path(spec.origin).parent / "__main__.py").read_text()
        args = tokens[3:]
    else:
        script = ROOT / tokens[1]
        assert script.is_file(), f"{page}: no script {tokens[1]}"
        sources, args = script.read_text(), tokens[2:]
    for flag in _flags(args):
        assert f'"{flag}"' in sources, f"{page}: {command}: {flag} is no option of it"


@pytest.mark.parametrize("page, command", [c for c in COMMANDS if c[1].startswith("dvc ")])
def test_dvc_commands_parse(page, command):
    """Reference: DVC's own argument parser (in-process: no subprocess per command)."""
    from dvc.cli import parse_args

    tokens = shlex.split(command)
    if any(PLACEHOLDER.search(token) for token in tokens[1:]):
        pytest.skip("placeholder in the command")
    if tokens[-1].startswith("-") and tokens[-1] not in ("--temp", "--json", "--md", "--force", "-f", "--only-changed", "--queue"):
        tokens = tokens[:-1]  # prose names an option without its value: `dvc exp run -S`
    if all(not token.startswith("-") for token in tokens):  # prose names a command (`dvc exp push`): it exists
        tokens = [*tokens, "--help"]
    try:
        parse_args(tokens[1:])
    except SystemExit as exit_:
        if exit_.code != 0:
            pytest.fail(f"{page}: DVC refuses {command!r} (exit {exit_.code})")


@pytest.mark.parametrize("page, command", [c for c in COMMANDS if c[1].startswith("mlflow ")])
def test_mlflow_commands_exist(page, command):
    """Reference: MLflow's click CLI: the subcommand exists and takes the flags given."""
    from click.testing import CliRunner
    from mlflow.cli import cli

    tokens = shlex.split(command)
    result = CliRunner().invoke(cli, [tokens[1], "--help"])
    assert result.exit_code == 0, f"{page}: no mlflow {tokens[1]}"
    for flag in _flags(tokens[2:]):
        assert flag in result.output, f"{page}: mlflow {tokens[1]} has no {flag}"


def test_commands_were_found():
    kinds = {command.split()[0] + " " + command.split()[1] for _, command in COMMANDS}
    assert {"dvc repro", "dvc exp", "python -m", "mlflow ui"} <= kinds


def test_offline_plots_template_is_current_and_loads_nothing_from_the_network():
    """Reference: pipelines.plots_template's page from the pinned vl-convert bundle; the DVC
    config names it, and it keeps DVC's placeholder for the plots and no remote script."""
    from pipelines import plots_template

    text = plots_template.TEMPLATE.read_text()
    assert text == plots_template.page(), "run python -m pipelines.plots_template"
    assert "html_template = plots_offline.html" in (ROOT / ".dvc" / "config").read_text()
    assert "{plot_divs}" in text and "{scripts}" not in text
    assert not re.search(r"<script[^>]+src=", text) and "window.vegaEmbed=" in text
