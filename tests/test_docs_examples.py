"""The code examples of README.md and docs/**/*.md run (one test per page with examples), and
the markdown parser and block runner behind them behave (tests/docs_examples.py has the
convention). ``python -m tests.docs_examples`` lists what runs and what is skipped."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from . import docs_examples as de

# The examples executed across README.md and docs/ must never drop below this number, so the
# check cannot pass by running nothing.
MIN_EXECUTED_BLOCKS = 60


def _pages() -> list[de.Page]:
    return [de.load_page(path) for path in de.doc_pages()]


PAGES_WITH_EXAMPLES = [page.name for page in _pages() if page.executed]


@pytest.fixture(scope="session")
def docs_fixtures(tmp_path_factory, request) -> Path:
    """The fixtures of the pages' working directories, built once."""
    pytest.importorskip("transformers")
    translation = None
    if importlib.util.find_spec("fairseq") is not None:
        translation = request.getfixturevalue("translation_checkpoint")
    return de.build_fixtures(tmp_path_factory.mktemp("docs_fixtures"), translation)


# ---------------------------------------------------------------------------------------------
# The pages.


@pytest.mark.parametrize("name", PAGES_WITH_EXAMPLES)
def test_page_examples_run(name, docs_fixtures, tmp_path):
    page = de.load_page(de.REPO_ROOT / name)
    assert not page.problems, "\n".join(page.problems)
    if "checkpoints/compatible_iwslt" in page.text and not (
            docs_fixtures / "checkpoints/compatible_iwslt").exists():
        pytest.skip("fairseq is not installed: no translation checkpoint fixture")
    before = de.repo_files()
    workdir = de.prepare_workdir(tmp_path / "work", docs_fixtures)
    try:
        de.run_page(page, workdir)
    except de.ExampleFailure as failure:
        pytest.fail(str(failure), pytrace=False)
    written = sorted(de.repo_files() - before)
    assert not written, f"{name}: its examples wrote into the repository: {written}"


def test_skip_markers_are_well_formed():
    problems = [problem for page in _pages() for problem in page.problems]
    assert not problems, "\n".join(problems)


def test_enough_examples_run():
    executed = sum(len(page.executed) for page in _pages())
    assert executed >= MIN_EXECUTED_BLOCKS, (
        f"only {executed} code blocks of README.md and docs/ run (at least "
        f"{MIN_EXECUTED_BLOCKS} must); see python -m tests.docs_examples")


def test_the_table_lists_every_page():
    table = de.summary()
    for path in de.doc_pages():
        assert de.page_name(path) in table
    assert table.splitlines()[0].split() == ["page", "run", "skipped"]


# ---------------------------------------------------------------------------------------------
# The parser.


def blocks(text: str) -> list[tuple[int, str, str | None, str | None]]:
    """(line, language, runner, skip reason) of each block."""
    return [(b.line, b.language, b.runner, b.skip) for b in de.parse_markdown(text).blocks]


def test_languages_that_run_and_those_that_do_not():
    text = "\n".join(f"```{info}\ncode\n```\n" for info in (
        "python", "bash", "sh", "shell", "console", "text", "json", "yaml", "",
        'python title="example.py"', "{.python}", "pycon", "py", "python3", "Bash"))
    runners = [runner for _, _, runner, _ in blocks(text)]
    assert runners == ["python", "bash", "bash", "bash", None, None, None, None, None,
                       "python", "python", None, "python", "python", "bash"]


def test_code_and_line_numbers():
    page = de.parse_markdown("# Title\n\n```python\nx = 1\n\nprint(x)\n```\ntext\n~~~bash\n"
                             "echo hi\n~~~\n", "page.md")
    assert [(b.line, b.code) for b in page.blocks] == [(3, "x = 1\n\nprint(x)\n"),
                                                      (9, "echo hi\n")]
    assert not page.problems and len(page.executed) == 2


def test_skip_marker_with_blank_lines_between():
    text = ("<!-- skip: needs a GPU -->\n\n\n```bash\nnvidia-smi\n```\n\n"
            "```bash\necho runs\n```\n<!--skip:downloads-->\n```python\nimport x\n```\n")
    assert blocks(text) == [(4, "bash", "bash", "needs a GPU"), (8, "bash", "bash", None),
                            (12, "python", "python", "downloads")]
    page = de.parse_markdown(text)
    assert [b.line for b in page.executed] == [8] and not page.problems


@pytest.mark.parametrize("marker", ["<!-- skip: -->", "<!-- skip:   -->", "<!-- skip -->",
                                    "<!-- skip because -->"])
def test_a_skip_marker_without_a_reason_is_a_problem(marker):
    page = de.parse_markdown(f"intro\n\n{marker}\n```bash\necho hi\n```\n", "docs/x.md")
    assert page.problems == ["docs/x.md:3: skip marker without a reason (write "
                             "<!-- skip: REASON -->)"]
    assert not page.executed  # still not run


def test_a_skip_marker_must_be_followed_by_a_block():
    page = de.parse_markdown("<!-- skip: later -->\nsome text\n```bash\necho hi\n```\n"
                             "<!-- skip: at the end -->\n", "p.md")
    assert page.problems == [
        "p.md:1: skip marker not followed by a code block (only blank lines may come between "
        "them)", "p.md:6: skip marker not followed by a code block"]
    assert [b.line for b in page.executed] == [3]


def test_other_comments_are_no_skip_markers():
    assert blocks("<!-- skipped on purpose? no -->\n```bash\necho hi\n```\n") == [
        (2, "bash", "bash", None)]


def test_longer_fences_show_shorter_ones():
    text = ("````markdown\n<!-- skip: shown, not run -->\n```python\nprint(1)\n```\n````\n"
            "```python\nprint(2)\n```\n")
    page = de.parse_markdown(text)
    assert [(b.line, b.language) for b in page.blocks] == [(1, "markdown"), (7, "python")]
    assert page.blocks[0].code.startswith("<!-- skip") and not page.problems
    assert [b.code for b in page.executed] == ["print(2)\n"]


def test_indented_fences_in_lists_and_admonitions():
    text = ("1. Install:\n\n    ```bash\n    pip install -e .\n      echo indented\n    ```\n\n"
            "2. Then\n\n   <!-- skip: slow -->\n   ```python\n   x = 1\n   ```\n"
            '!!! note\n    === "Tab"\n        ```python\n        y = 2\n\n        ```\n')
    page = de.parse_markdown(text)
    assert [(b.line, b.code, b.skip) for b in page.blocks] == [
        (3, "pip install -e .\n  echo indented\n", None), (11, "x = 1\n", "slow"),
        (16, "y = 2\n\n", None)]
    assert not page.problems


def test_a_fence_with_an_info_string_does_not_close_a_block():
    page = de.parse_markdown("```text\n```python\n```\n")
    assert [(b.language, b.code) for b in page.blocks] == [("text", "```python\n")]


def test_blocks_in_multi_line_comments_are_ignored():
    text = "<!--\n```bash\nexit 1\n```\n-->\n```bash\necho hi\n```\n"
    assert blocks(text) == [(6, "bash", "bash", None)]


def test_an_unclosed_block_is_a_problem():
    page = de.parse_markdown("text\n```python\nprint(1)\n", "p.md")
    assert page.problems == ["p.md:2: code block never closed"]


# ---------------------------------------------------------------------------------------------
# The runner (no fixtures: a bare working directory).


def run(text: str, tmp_path: Path, timeout: float = 60) -> int:
    page = de.parse_markdown(text, "docs/sample.md")
    return de.run_page(page, de.prepare_workdir(tmp_path / "work", None), timeout=timeout)


def test_blocks_share_a_namespace_and_a_directory(tmp_path):
    text = ("```python\nimport os\nvalue = 41\nopen('a.txt', 'w').write('from python')\n```\n"
            "```bash\ntest \"$(cat a.txt)\" = 'from python'\necho from bash > b.txt\n"
            "test -d scripts -a -d huggingface -a -d fairseq -a -d analysis\n```\n"
            "<!-- skip: never runs -->\n```python\nraise SystemExit(3)\n```\n"
            "```python\nvalue += 1\nassert open('b.txt').read() == 'from bash\\n'\n"
            "from huggingface import rationalization\n```\n"
            "```python\nassert value == 42 and __name__ == '__main__'\n"
            "class Kept:\n    pass\nimport pickle\npickle.dumps(Kept())\n```\n")
    assert run(text, tmp_path) == 4
    assert not (de.REPO_ROOT / "a.txt").exists()


def test_the_environment_of_the_blocks(tmp_path):
    bin_dir = Path(sys.executable).parent
    text = ("```bash\ntest \"$HF_HUB_OFFLINE$TRANSFORMERS_OFFLINE$HF_DATASETS_OFFLINE\" = 111\n"
            f"test \"$OMP_NUM_THREADS $MPLBACKEND\" = '1 Agg'\n"
            f"test \"$(dirname \"$(command -v python)\")\" = '{bin_dir}'\n"
            "test -L scripts -a -L .venv\n```\n"
            "```python\nimport sys, os\n"
            f"assert os.path.dirname(sys.executable) == {str(bin_dir)!r}\n```\n")
    assert run(text, tmp_path) == 2


def test_a_failing_bash_block_names_the_page_line_command_and_output(tmp_path):
    text = ("# Title\n\n```bash\necho first\necho some output\nfalse --flag \\\n  value\n"
            "echo never\n```\n```python\nraise AssertionError('not reached')\n```\n")
    with pytest.raises(de.ExampleFailure) as failure:
        run(text, tmp_path)
    message = str(failure.value)
    assert message.startswith("docs/sample.md:3: bash block failed: exit status 1\n")
    assert "failing command (docs/sample.md:6): false --flag value" in message
    assert "some output" in message and "never" not in message.split("output (tail)")[1]


def test_a_failing_python_block_shows_its_traceback_at_page_lines(tmp_path):
    text = "intro\n\n```python\nx = 1\nprint('before')\n1 / 0\n```\n"
    with pytest.raises(de.ExampleFailure) as failure:
        run(text, tmp_path)
    message = str(failure.value)
    assert message.startswith("docs/sample.md:3: python block failed: exception\n")
    assert 'File "docs/sample.md", line 6' in message and "1 / 0" in message
    assert "ZeroDivisionError" in message and "before" in message


def test_bash_errors_name_page_lines(tmp_path):
    with pytest.raises(de.ExampleFailure, match=r"docs/sample\.md: line 4: UNSET: unbound"):
        run("text\n\n```sh\necho $UNSET\n```\n", tmp_path)


@pytest.mark.parametrize("language, code", [("bash", "sleep 30"),
                                            ("python", "import time\ntime.sleep(30)")])
def test_a_block_that_hangs_times_out(tmp_path, language, code):
    with pytest.raises(de.ExampleFailure, match=r"sample\.md:1: .* timed out after 1 s"):
        run(f"```{language}\n{code}\n```\n", tmp_path, timeout=1)


def test_the_readme_fits_one_screenful_and_its_links_resolve():
    """The README stays short (the docs hold the rest), and every relative link or image of it
    names a file of the repository (the docs site checks its own links when it is built)."""
    readme = de.REPO_ROOT / "README.md"
    text = readme.read_text()
    assert len(text.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert len(local) >= 20  # the links into the docs are there
    missing = [t for t in local if not (de.REPO_ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
