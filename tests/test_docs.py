"""README.md and docs/: a README read in minutes, links that resolve, the project's own words,
and commands that name modules, scripts, flags and config keys that exist."""

import dataclasses
import importlib
import json
import re

import pytest

from conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
# Where a flag is defined: absl's DEFINE_*, cli.define_path and small helpers around them
# (string("dataset", ...)), a settings dataclass field (`epochs: int = setting(30, ...)`), and
# argparse's add_argument("--clicks", ...) in benchmarks/.
FLAG_DEFINITION = re.compile(
    r"\b(?:DEFINE_\w+|define_path|string|integer|real|boolean|enum|path)\(\s*\"(\w+)\""
    r"|^\s+(\w+): [^=\n]+= setting\("
    r"|add_argument\(\s*\"--([\w-]+)\"", re.M)
ABSL_FLAGS = {"flagfile", "helpfull", "help", "helpshort"}


def _prose(text: str) -> str:
    """The page without its fenced code blocks (line count kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", _prose(page.read_text()), re.M)}


def _commands(text: str) -> list[str]:
    """Shell commands of a page: fenced lines and inline `python ...`/`tfds build ...` spans,
    continuation lines joined, comments cut."""
    blocks = [m.group(1) for m in FENCE.finditer(text)]
    blocks += re.findall(r"`((?:python|tfds build|bash) [^`]+)`", _prose(text))
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def _defined_flags() -> set[str]:
    names = set(ABSL_FLAGS)
    for folder in ("narm_tf", "export", "benchmarks"):
        for source in (ROOT / folder).rglob("*.py"):
            for match in FLAG_DEFINITION.finditer(source.read_text()):
                names.add(next(name for name in match.groups() if name).replace("-", "_"))
    return names


def test_the_readme_reads_in_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading '#{anchor}' in {file.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_cite_no_document_outside_the_repository(page):
    text = page.read_text()
    assert not re.search(r"\bSPEC\b|SPEC\.md", text), (
        f"{page.relative_to(ROOT)} cites a SPEC: state the rule, or point to docs/data.md, "
        "docs/training.md or docs/results.md")
    assert not re.search(r"\bissue \d+", text, re.I), (
        f"{page.relative_to(ROOT)} cites a tracker issue: say what it is about instead")


def test_documented_commands_name_modules_scripts_and_flags_that_exist():
    flags = _defined_flags()
    problems = []
    for page in PAGES:
        for command in _commands(page.read_text()):
            for module in re.findall(r"python -m ((?:narm_tf|export)\.[\w.]+)", command):
                path = ROOT / module.replace(".", "/")
                if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()):
                    problems.append(f"{page.name}: no module {module}")
            for script in re.findall(r"(?:python|bash) ((?:benchmarks|scripts)/\S+)", command):
                if not (ROOT / script).exists():
                    problems.append(f"{page.name}: no script {script}")
            if not re.search(r"python (-m (narm_tf|export)\.|benchmarks/)", command):
                continue  # tfds build, docker, curl: other programs' flags
            for flag in re.findall(r"(?:^|[\s\[])--([a-z][\w-]*)", command):
                name = flag.replace("-", "_")
                if name not in flags and not (name.startswith("no") and name[2:] in flags):
                    problems.append(f"{page.name}: {command[:60]}...: no flag --{flag}")
    assert not problems, "\n".join(problems)


def _click_log_keys() -> set[str]:
    for name in ("narm_tf.data.clicks", "narm_tf.data.preprocessing"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "ClickLog"):
            return {"name", "base", *(f.name for f in dataclasses.fields(module.ClickLog))}
    raise AssertionError("ClickLog not found in narm_tf.data")


def test_documented_click_log_configs_use_keys_that_exist():
    keys = _click_log_keys()
    configs = 0
    for page in PAGES:
        for command in _commands(page.read_text()):
            for config in re.findall(r"--config='(\{.*?\})'", command):
                if "..." in config:
                    continue  # an elided example
                unknown = set(json.loads(config)) - keys
                assert not unknown, f"{page.name}: {config} has unknown keys {unknown}"
                configs += 1
    assert configs >= 3  # my_shop and skus in README and docs/data.md, the end_date example
