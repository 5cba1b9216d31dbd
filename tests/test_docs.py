"""The README and docs/ as a newcomer reads them: every `python -m linreg_pl ...` command they show is one the CLI
accepts, and every link between the pages points at a file.

Commands are collected from fenced `bash` blocks (lines joined where they end in `\\`) and from inline code; for
fit/validate/test/predict the CLI parses each with `--print_config` (no model is built, nothing is trained, so
commands that need a GPU, an extra or a data file are checked too); for `export`, every option the command
gives must be one that `export --help` lists. The files that parsing must read (a user's config and classes, a
run's saved config) are made in a temporary directory; placeholders such as `<ckpt>` stand for any path.

    python -m pytest tests/test_docs.py
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from linreg_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
# docs/sweeps.md's commands name a sweep's own files: they run for real in tests/regression/test_example_sweep.py
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "sweeps.md")]
EXAMPLE = ROOT / "linreg_pl" / "regression"

# the pages describe the example; README step 6 deletes it, and the pages with it
pytestmark = pytest.mark.skipif(
    not EXAMPLE.is_dir(),
    reason="README.md and docs/ describe the example, which is deleted (README step 6): rewrite the pages, "
    "then remove this skip",
)

FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
COMMAND = re.compile(r"(?:^|\s)-m linreg_pl\s+(.*)$")  # python -m linreg_pl ..., torchrun ... -m linreg_pl ...
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S+)$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
SUBCOMMANDS = ("fit", "validate", "test", "predict")

# the user's project of README step 2 and the classes docs/runs.md names, made of the tests' own models
PROJECT_FILES = {
    "my_project/__init__.py": "",
    "my_project/model.py": "from user_models import Classifier\n",
    "my_project/data.py": "from user_models import Blobs\n",
    "my_package.py": "from user_models import Blobs as QuadraticDataModule, Classifier as MLPRegression\n",
}


def _commands_in(text: str, page: str) -> list[tuple[str, list[str]]]:
    """(where, arguments after `-m linreg_pl`) for each command of a page."""
    found = []
    for fence in FENCE.finditer(text):
        if fence.group(1) != "bash":
            continue
        line_number = text.count("\n", 0, fence.start(2)) + 1
        variables: dict[str, str] = {}
        lines = fence.group(2).split("\n")
        index = 0
        while index < len(lines):
            start, line = index, lines[index].strip()
            while line.endswith("\\") and index + 1 < len(lines):
                index += 1
                line = line[:-1] + " " + lines[index].strip()
            index += 1
            if assignment := ASSIGNMENT.match(line):
                variables[assignment.group(1)] = assignment.group(2)
                continue
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            if command := COMMAND.search(line):
                found.append((f"{page}:{line_number + start}", _arguments(command.group(1))))
    outside = FENCE.sub(lambda fence: "\n" * fence.group(0).count("\n"), text)
    for code in INLINE.finditer(outside):
        if command := COMMAND.search(code.group(1)):
            found.append((f"{page}:{outside.count(chr(10), 0, code.start()) + 1}", _arguments(command.group(1))))
    return found


def _arguments(line: str) -> list[str]:
    """The command's arguments: shell comments and redirections dropped, placeholders made a path."""
    arguments = []
    for token in shlex.split(line, comments=True):
        if token in (">", ">>", "|", "&&", ";"):
            break
        arguments.append(PLACEHOLDER.sub("placeholder", token))
    return arguments


COMMANDS = [command for page in PAGES for command in _commands_in(page.read_text(), page.relative_to(ROOT).as_posix())]


def test_the_pages_show_commands():
    # a change to the collection that finds nothing would pass every test below
    assert len(COMMANDS) >= 30, COMMANDS
    assert {arguments[0] for _, arguments in COMMANDS} >= {*SUBCOMMANDS, "export"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A working directory with what the commands name: the repository's configs, the README's step-3 config,
    the user's package, and a run's saved config.yaml."""
    directory = tmp_path_factory.mktemp("project")
    (directory / "configs").mkdir()
    for config in (ROOT / "configs").glob("*.yaml"):
        (directory / "configs" / config.name).symlink_to(config)
    readme = (ROOT / "README.md").read_text()
    step3 = [f.group(2) for f in FENCE.finditer(readme) if f.group(1) == "yaml" and "my_project." in f.group(2)]
    assert len(step3) == 1, "README.md should show one config of my_project's classes (step 3)"
    (directory / "configs" / "my_experiment.yaml").write_text(step3[0])
    for name, text in PROJECT_FILES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


@pytest.fixture
def in_project(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    saved = project / "lightning_logs" / "version_0" / "config.yaml"
    if not saved.exists():  # what `fit` saves in a run's directory: its --print_config
        with pytest.raises(SystemExit) as stop:
            main(["fit", "--config", "configs/default.yaml", "--print_config"])
        assert stop.value.code == 0
        saved.parent.mkdir(parents=True)
        saved.write_text(capsys.readouterr().out)
    return project


@pytest.mark.parametrize("where, arguments", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_the_cli_parses_the_command(where, arguments, in_project, capsys):
    subcommand = arguments[0]
    if subcommand in SUBCOMMANDS:
        args = arguments if "--print_config" in arguments else [*arguments, "--print_config"]
        with pytest.raises(SystemExit) as stop:
            main(args)
        printed = capsys.readouterr()
        assert stop.value.code == 0, f"{where}: {shlex.join(arguments)}\n{printed.err}"
        assert "trainer:" in printed.out
    elif subcommand in ("export", "sweep"):  # they load files as soon as they have parsed: compare with their help
        with pytest.raises(SystemExit) as stop:
            main([subcommand, "--help"])
        assert stop.value.code == 0
        accepted = set(re.findall(r"--\w[\w.]*", capsys.readouterr().out))
        given = {argument for argument in arguments[1:] if argument.startswith("--")}
        assert given <= accepted, f"{where}: {subcommand} does not take {sorted(given - accepted)}"
    else:
        pytest.fail(f"{where}: `{subcommand}` is no subcommand of linreg_pl")


LINKS = [
    (page.relative_to(ROOT).as_posix(), target)
    for page in PAGES
    for target in LINK.findall(FENCE.sub("", page.read_text()))
    if "://" not in target and not target.startswith("mailto:")
]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{page}->{target}" for page, target in LINKS])
def test_a_link_between_the_pages_points_at_a_file(page, target):
    path, _, anchor = target.partition("#")
    file = (ROOT / page).parent / path if path else ROOT / page
    assert file.exists(), f"{page} links to {target}: no such file"
    if anchor:
        assert anchor in _anchors(file), f"{page} links to {target}: no such heading in {file.name}"


def python_lines(paths) -> int:
    """What `wc -l` gives for these files."""
    return sum(path.read_bytes().count(b"\n") for path in paths)


def test_the_readmes_table_states_the_measured_lines_and_the_core_keeps_to_1200():
    package = ROOT / "linreg_pl"
    aliases = [package / f"{name}.py" for name in ("data", "model", "streaming")]  # the example's old class paths
    core = [p for p in package.glob("*.py") if p not in aliases and p.name != "sweep.py"]
    measured = {
        "core (keep)": python_lines(core),
        "the sweep command": python_lines([package / "sweep.py"]),
        "example (linear regression)": python_lines([*EXAMPLE.glob("*.py"), *aliases]),
    }
    rows = {row.split(" | ")[0].strip("| "): row.split(" | ")[-1] for row in PAGES[0].read_text().splitlines()}
    for part, lines in measured.items():
        assert rows[part].strip("| ").startswith(f"{lines:,}"), (part, lines, rows[part])
    assert measured["core (keep)"] <= 1200  # issue 26: the core's budget, docstrings included
