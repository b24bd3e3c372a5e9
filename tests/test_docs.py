"""The README and docs/ cannot drift: every block marked runnable runs, every link leads somewhere.

A block runs when its fence says so: ```` ```bash runnable ```` or ```` ```python runnable ````. Each runs as
written in its own process, in a temporary folder holding small copies of examples/ (centre crops, so the
suite stays fast) and a photos/ folder, with this environment's `dfpir` and Python. The quick start's set-up
prefix (venv + pip install) is the one thing not run: the suite runs inside such an install already, and
test_setup_commands_match_ci checks the README's install commands against .ci/run instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)( runnable)?[^\n]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# The fresh-machine set-up the README's commands start with; runnable blocks run without it (see above).
SETUP = re.compile(r"\Apython3 -m venv \.venv && \. \.venv/bin/activate && pip install -e [^\n]*? && \\\n")
CROP = 96  # the examples are cut to their centre CROP x CROP pixels: the same photos, a fraction of the time
TIMEOUT = 300


def blocks(runnable: bool | None = None) -> list[tuple[str, str, str]]:
    """(where, language, code) of the fenced blocks of every page (only those marked runnable, or not)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            if runnable is None or bool(match.group(2)) == runnable:
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1), match.group(3)))
    return found


RUNNABLE = blocks(runnable=True)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A folder like a fresh clone's root, as far as the docs' commands look: examples/ and photos/."""
    for source in sorted((ROOT / "examples").glob("*/*.png")):
        image = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
        top, left = (image.shape[0] - CROP) // 2, (image.shape[1] - CROP) // 2
        for folder in (tmp_path / "examples" / source.parent.name, tmp_path / "photos"):
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / source.name), image[top:top + CROP, left:left + CROP])
    return tmp_path


@pytest.mark.parametrize(("where", "language", "code"), RUNNABLE, ids=[where for where, _, _ in RUNNABLE])
def test_runnable_block_runs(where: str, language: str, code: str, workspace: Path) -> None:
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", SETUP.sub("", code)]
    elif language == "python":
        command = [sys.executable, "-c", code]
    else:
        pytest.fail(f"{where}: a runnable block must be bash or python, not {language}")
    result = subprocess.run(command, cwd=workspace, env=environment, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{where} failed ({result.returncode}):\n{code}\n{result.stdout}\n{result.stderr}"


def test_the_readme_and_docs_have_runnable_blocks_of_each_kind() -> None:
    pages = {where.partition(":")[0] for where, _, _ in RUNNABLE}
    assert {"README.md", "docs/api.md", "docs/code.md"} <= pages
    assert {language for _, language, _ in RUNNABLE} == {"bash", "python"}
    quick_start = next(code for where, language, code in RUNNABLE if where.startswith("README.md"))
    assert SETUP.match(quick_start), "the quick start is one command that sets up and restores"


def test_setup_commands_match_ci() -> None:
    """The README's test command installs what .ci/run installs and runs pytest; the quick start installs the
    package as it is."""
    ci = (ROOT / ".ci" / "run").read_text()
    tests = [code for _, language, code in blocks(runnable=False) if language == "bash" and "pytest" in code]
    assert len(tests) == 1, "the README has one test command"
    install = re.search(r'pip install (-e "\.\[test\]" -c constraints\.txt) && pytest -q$', tests[0].strip())
    assert install, tests[0]
    assert f"python -m pip install -q {install.group(1)}" in ci
    assert "python -m pytest -q" in ci


def test_links_lead_to_files_that_exist() -> None:
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"https?://", target) and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"(docs/{page.name})" in readme, f"link docs/{page.name} from the README"


def test_the_before_after_picture_is_small() -> None:
    picture = ROOT / "docs" / "images" / "before_after.jpg"
    assert picture.is_file() and picture.stat().st_size < 300 * 1024
