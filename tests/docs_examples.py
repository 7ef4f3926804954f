"""Runs the code examples of README.md and of every docs/**/*.md page, so that the
documentation cannot rot (the runner behind ``tests/test_docs_examples.py``).

The convention the pages follow:

* Fenced blocks whose info string starts with ``python`` (or ``python3``, ``py``) or ``bash``
  (or ``sh``, ``shell``) are run, in page order. Every other language (``console``, ``text``,
  ``json``, ``yaml``, no language at all, ...) is not run.
* A block preceded by a line ``<!-- skip: REASON -->`` (only blank lines between the two) is
  not run. The reason must not be empty, and a marker must be followed by a block.
* All blocks of one page run in one fresh working directory. The python blocks of a page share
  one namespace (like the cells of one notebook): they run in one interpreter per page, fed
  the blocks one at a time. bash blocks run with ``bash -euo pipefail`` in the same
  directory, with the virtualenv's ``bin`` first on ``PATH``, the Hugging Face hub offline
  and one thread. Each block has a time limit (:data:`BLOCK_TIMEOUT` seconds).
* The working directory holds small fixtures, at the paths the pages use (see
  :func:`build_fixtures`), and links to the repository's entry-point folders (``scripts``,
  ``huggingface``, ``fairseq``, ``analysis``) and to the virtualenv (``.venv``). Blocks must
  not write into the repository: everything they write lands in the working directory. The
  Hugging Face Hub id ``gpt2`` resolves to the tiny GPT-2 of ``path/to/gpt2`` through a
  Hugging Face cache in the working directory; every other Hub id is absent.

``python -m tests.docs_examples`` (from the repository root) prints, for every page, how many
blocks run, how many are skipped, and why.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON_LANGUAGES = frozenset({"python", "python3", "py"})
BASH_LANGUAGES = frozenset({"bash", "sh", "shell"})
BLOCK_TIMEOUT = 300.0  # seconds per block
REPO_LINKS = ("scripts", "huggingface", "fairseq", "analysis")
OUTPUT_TAIL_LINES = 40
OUTPUT_TAIL_CHARS = 4000

_FENCE_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_SKIP_RE = re.compile(r"^\s*<!--\s*skip\b(?P<rest>.*?)-->\s*$")
_FAILED_MARK = "@@docs-example-failed@@"


# ---------------------------------------------------------------------------------------------
# Parsing.


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    line: int  # 1-based line of the opening fence
    language: str  # first word of the info string, lower case ("" without one)
    code: str
    skip: str | None = None  # the skip marker's reason; None when there is no marker

    @property
    def runner(self) -> str | None:
        """``"python"`` or ``"bash"`` for the languages that are run, else None."""
        if self.language in PYTHON_LANGUAGES:
            return "python"
        if self.language in BASH_LANGUAGES:
            return "bash"
        return None

    @property
    def executed(self) -> bool:
        return self.runner is not None and self.skip is None

    @property
    def skipped(self) -> bool:
        return self.runner is not None and self.skip is not None


@dataclass
class Page:
    """A parsed markdown page: its blocks and what is wrong with its markup."""

    name: str  # as reported, e.g. "docs/guides/python.md"
    text: str
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def executed(self) -> list[Block]:
        return [b for b in self.blocks if b.executed]

    @property
    def skipped(self) -> list[Block]:
        return [b for b in self.blocks if b.skipped]


def _language(info: str) -> str:
    """The language of an info string: ``python title="x.py"`` and ``{.python}`` are python."""
    words = info.strip().split()
    if not words:
        return ""
    word = words[0].lstrip("{").lstrip(".").rstrip("}")
    return re.split(r"[^\w+-]", word, maxsplit=1)[0].lower()


def _dedent(line: str, indent: int) -> str:
    """``line`` without up to ``indent`` leading spaces (the opening fence's indentation)."""
    stripped = len(line) - len(line.lstrip(" "))
    return line[min(indent, stripped):]


def parse_markdown(text: str, name: str = "<page>") -> Page:
    """The fenced code blocks of a markdown page, with their skip markers.

    Fences may be indented (inside lists, admonitions and tabs); a fence closes only on a line
    of the same character, at least as long, with nothing after it, so longer fences can
    show shorter ones. Blocks inside multi-line HTML comments are ignored.
    """
    page = Page(name, text)
    lines = text.splitlines()
    pending: tuple[int, str] | None = None  # (line, reason) of a skip marker not yet used
    i = 0
    while i < len(lines):
        line = lines[i]
        number = i + 1
        marker = _SKIP_RE.match(line)
        fence = _FENCE_RE.match(line)
        if fence and fence["fence"][0] == "`" and "`" in fence["info"]:
            fence = None  # inline code such as ```x``` is no fence
        if marker:
            if pending is not None:
                page.problems.append(f"{name}:{pending[0]}: skip marker not followed by a "
                                     "code block")
            reason = marker["rest"].strip()
            reason = reason[1:].strip() if reason.startswith(":") else reason
            if not marker["rest"].strip().startswith(":") or not reason:
                page.problems.append(f"{name}:{number}: skip marker without a reason "
                                     "(write <!-- skip: REASON -->)")
                reason = reason or "(no reason)"
            pending = (number, reason)
            i += 1
            continue
        if fence:
            indent = len(fence["indent"].expandtabs(4))
            char, length = fence["fence"][0], len(fence["fence"])
            body: list[str] = []
            j = i + 1
            closed = False
            while j < len(lines):
                close = _FENCE_RE.match(lines[j])
                if (close and close["fence"][0] == char and len(close["fence"]) >= length
                        and not close["info"].strip()):
                    closed = True
                    break
                body.append(_dedent(lines[j], indent))
                j += 1
            if not closed:
                page.problems.append(f"{name}:{number}: code block never closed")
            code = "\n".join(body) + ("\n" if body else "")
            page.blocks.append(Block(number, _language(fence["info"]), code,
                                     None if pending is None else pending[1]))
            pending = None
            i = j + 1
            continue
        stripped = line.strip()
        if stripped.startswith("<!--") and "-->" not in stripped:
            if pending is not None:
                page.problems.append(f"{name}:{pending[0]}: skip marker not followed by a "
                                     "code block (only blank lines may come between them)")
                pending = None
            while i < len(lines) and "-->" not in lines[i]:  # a multi-line comment
                i += 1
            i += 1
            continue
        if stripped and pending is not None:
            page.problems.append(f"{name}:{pending[0]}: skip marker not followed by a code "
                                 "block (only blank lines may come between them)")
            pending = None
        i += 1
    if pending is not None:
        page.problems.append(f"{name}:{pending[0]}: skip marker not followed by a code block")
    return page


def doc_pages(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and every markdown page under docs/, in a stable order."""
    pages = [root / "README.md"] if (root / "README.md").is_file() else []
    return pages + sorted((root / "docs").rglob("*.md"))


def page_name(path: Path, root: Path = REPO_ROOT) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def load_page(path: Path, root: Path = REPO_ROOT) -> Page:
    return parse_markdown(path.read_text(encoding="utf-8"), page_name(path, root))


# ---------------------------------------------------------------------------------------------
# Running.


class ExampleFailure(AssertionError):
    """A block of a page failed; the message names the page, the line, the command and the
    tail of its output."""


def _tail(text: str) -> str:
    lines = text.rstrip().splitlines()[-OUTPUT_TAIL_LINES:]
    tail = "\n".join(lines)
    return tail if len(tail) <= OUTPUT_TAIL_CHARS else "..." + tail[-OUTPUT_TAIL_CHARS:]


def _excerpt(code: str, limit: int = 12) -> str:
    lines = code.rstrip().splitlines()
    shown = "\n".join("    " + line for line in lines[:limit])
    return shown + (f"\n    ... ({len(lines) - limit} more lines)" if len(lines) > limit else "")


def example_env(workdir: Path) -> dict[str, str]:
    """The environment of the blocks: the virtualenv first on PATH, no hub, one thread."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    env.pop("PYTHONHOME", None)
    home = workdir.parent / "home"
    (home / "hf").mkdir(parents=True, exist_ok=True)
    (home / "matplotlib").mkdir(parents=True, exist_ok=True)
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        HF_HOME=str(home / "hf"),  # an empty cache: hub names never resolve by accident ...
        HF_HUB_CACHE=str(workdir / HUB_CACHE),  # ... but for the fixtures' snapshot of gpt2
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="Agg", MPLCONFIGDIR=str(home / "matplotlib"),
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ in the linked repository folders
        PYTHONUNBUFFERED="1",
    )
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


# The interpreter that runs a page's python blocks: requests (one JSON line per block) come
# on one pipe, answers go back on another; a block's stdout and stderr (at the file
# descriptor level, so that its subprocesses are caught too) go to the block's log file.
_PYTHON_DRIVER = r"""
import json, linecache, os, sys, traceback, types
requests = os.fdopen(int(sys.argv[1]), "r", encoding="utf-8")
answers = os.fdopen(int(sys.argv[2]), "w", encoding="utf-8")
name = sys.argv[3]
sys.argv = [name]
main = types.ModuleType("__main__")
main.__dict__["__builtins__"] = __builtins__
sys.modules["__main__"] = main
out, err = os.dup(1), os.dup(2)
for request in requests:
    request = json.loads(request)
    if "page" in request:
        lines = request["page"].splitlines(True)
        linecache.cache[name] = (len(request["page"]), None, lines, name)
        continue
    sys.stdout.flush(); sys.stderr.flush()
    with open(request["log"], "ab") as log:
        os.dup2(log.fileno(), 1); os.dup2(log.fileno(), 2)
    ok = True
    try:
        exec(compile("\n" * request["line"] + request["code"], name, "exec"), main.__dict__)
    except SystemExit as stop:
        ok = stop.code in (None, 0)
        if not ok:
            traceback.print_exc()
    except BaseException:
        ok = False
        traceback.print_exc()
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(out, 1); os.dup2(err, 2)
    answers.write(json.dumps({"ok": ok}) + "\n"); answers.flush()
"""


class _PythonProcess:
    """One interpreter for the python blocks of a page (started at its first block)."""

    def __init__(self, page: Page, workdir: Path, logdir: Path, env: dict[str, str]) -> None:
        request_read, self._requests = os.pipe()
        self._answers, answer_write = os.pipe()
        self._stderr = open(logdir / "python-driver.log", "wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _PYTHON_DRIVER, str(request_read), str(answer_write),
                 page.name],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=self._stderr,
                stderr=self._stderr, pass_fds=(request_read, answer_write),
                start_new_session=True)
        finally:
            os.close(request_read)
            os.close(answer_write)
        self._send({"page": page.text})

    def _send(self, request: dict) -> None:
        os.write(self._requests, (json.dumps(request) + "\n").encode())

    def run(self, block: Block, log: Path, timeout: float) -> tuple[bool, str]:
        """(success, why not) of one block."""
        self._send({"code": block.code, "line": block.line, "log": str(log)})
        deadline = time.monotonic() + timeout
        answer = b""
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready = select.select([self._answers], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                _kill_group(self.proc)
                self.close()
                return False, f"timed out after {timeout:g} s"
            chunk = os.read(self._answers, 4096)
            if not chunk:
                self.proc.wait()
                crash = Path(self._stderr.name).read_text(errors="replace")
                return False, f"the interpreter died (exit {self.proc.returncode}):\n{crash}"
            answer += chunk
        return bool(json.loads(answer)["ok"]), ""

    def close(self) -> None:
        for fd in (self._requests, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)  # its request pipe is closed: it ends by itself
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
        self._stderr.close()


def _bash_script(block: Block) -> str:
    """The block at its page line numbers (so that bash's messages name page lines), with a
    trap that reports the command that failed."""
    trap = (f"trap 'printf \"\\n{_FAILED_MARK}%s\\t%s\\n\" \"$LINENO\" \"$BASH_COMMAND\" >&2'"
            " ERR")
    return trap + "\n" * block.line + block.code


def _run_bash(block: Block, name: str, workdir: Path, log: Path, env: dict[str, str],
              timeout: float) -> tuple[bool, str]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", _bash_script(block), name],
                                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return False, f"timed out after {timeout:g} s"
    return code == 0, f"exit status {code}"


def _failure(page: Page, block: Block, why: str, log: Path) -> ExampleFailure:
    output = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    command = ""
    kept = []
    for line in output.splitlines():
        if line.startswith(_FAILED_MARK):
            if not command:
                at, _, cmd = line[len(_FAILED_MARK):].partition("\t")
                command = f"failing command ({page.name}:{at}): {cmd}\n"
        else:
            kept.append(line)
    return ExampleFailure(
        f"{page.name}:{block.line}: {block.language} block failed: {why}\n"
        f"{command}block:\n{_excerpt(block.code)}\n"
        f"output (tail):\n{_tail(chr(10).join(kept)) or '(none)'}")


def run_page(page: Page, workdir: Path, timeout: float = BLOCK_TIMEOUT) -> int:
    """Run the page's blocks in order in ``workdir``; raise :class:`ExampleFailure` at the
    first that fails. Returns how many blocks ran."""
    logdir = workdir.parent / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    env = example_env(workdir)
    python: _PythonProcess | None = None
    ran = 0
    try:
        for block in page.executed:
            log = logdir / f"line{block.line}.log"
            if block.runner == "python":
                if python is None:
                    python = _PythonProcess(page, workdir, logdir, env)
                ok, why = python.run(block, log, timeout)
                why = why or "exception"
            else:
                ok, why = _run_bash(block, page.name, workdir, log, env, timeout)
            if not ok:
                raise _failure(page, block, why, log)
            ran += 1
    finally:
        if python is not None:
            python.close()
    return ran


# ---------------------------------------------------------------------------------------------
# Fixtures: tiny random models at the paths the pages use.

_SUBJECTS = ["The court", "A small dog", "My neighbor", "The old teacher", "Our team",
             "The city council", "A young scientist", "The company", "Her brother",
             "The river", "This model", "The students"]
_VERBS = ["walked to", "wrote about", "looked at", "talked about", "waited for", "cleaned",
          "found", "painted", "studied", "visited", "opened", "remembered"]
_OBJECTS = ["the house on the hill", "a new book", "the morning news", "the green door",
            "an empty room", "the long report", "the market", "a quiet park",
            "the last train", "the results", "a letter from home", "the bridge"]
_TIMES = ["on Monday", "on Tuesday", "last week", "after lunch", "in the evening",
          "before the storm", "this year", "at night"]
_HANDWRITTEN = """\
The Supreme Court on Tuesday rejected the appeal.
The Supreme Court on Tuesday agreed to hear the case.
Hello there, how are you today?
Hi! I am a small language model.
The cat sat on the mat and looked out of the window.
A dog ran to the big red house.
It was a bright cold day in April, and the clocks were striking thirteen.
The weather was warm, so we went for a long walk by the sea.
She said that the meeting would start at nine o'clock.
He bought bread, milk, eggs and a bag of apples.
The president spoke to reporters at the White House.
Scientists discovered a new species of frog in the forest.
The stock market fell sharply after the announcement.
Please translate this sentence into German.
I see a dog. The dog sees me.
When the rain stopped, the children played outside.
The train to Boston leaves from platform four.
We need to finish the project before Friday.
What is the capital of France? The capital of France is Paris.
Water boils at one hundred degrees Celsius.
My favorite color is blue, but my sister likes green.
The museum is closed on Mondays and public holidays.
They watched a movie and then went to sleep.
Tell me a story about a brave little mouse.
The doctor told him to rest for a few days.
Rationales explain which words a model used for each prediction.
The greedy search adds one word at a time until the prediction is the same.
Yesterday the team won the final game of the season.
The book on the table belongs to my grandmother.
Thank you for your help with the report.
"""
_GERMAN = """\
ich sehe einen hund .
der hund sieht mich .
das haus ist gross und alt .
wir gehen heute in den park .
danke fuer ihre hilfe .
"""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def english_sentences() -> list[str]:
    """A few hundred English sentences (handwritten ones and combinations)."""
    sentences = _HANDWRITTEN.splitlines()
    for i, subject in enumerate(_SUBJECTS):
        for j, verb in enumerate(_VERBS):
            obj = _OBJECTS[(i + 5 * j) % len(_OBJECTS)]
            when = _TIMES[(3 * i + j) % len(_TIMES)]
            sentences.append(f"{subject} {verb} {obj} {when}.")
    return sentences


def byte_level_bpe(texts: list[str], special_tokens: list[str], vocab_size: int = 600,
                   eos: str | None = None):
    """A byte-level BPE tokenizer (as GPT-2's) trained on ``texts``: any text tokenizes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(texts, trainer)
    if eos is not None:  # like Marian and BART tokenizers: every text ends with </s>
        from tokenizers.processors import TemplateProcessing

        core.post_processor = TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
            special_tokens=[(eos, core.token_to_id(eos))])
    return core


def save_gpt2(path: Path, texts: list[str], seed: int = 0) -> Path:
    """``path/to/gpt2``: a random 2-layer GPT-2 with a byte-level BPE tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    end = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(texts, [end]),
                                        bos_token=end, eos_token=end, unk_token=end,
                                        model_max_length=256)
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_inner=64, vocab_size=len(tokenizer),
                        n_positions=256, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_chat_model(path: Path, texts: list[str], seed: int = 1) -> Path:
    """``path/to/chat-model``: a random 2-layer Qwen2-style LM whose tokenizer has turn tokens
    and a chat template."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    texts = [*texts, "system", "user", "assistant", "You are a helpful assistant."]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(texts, specials),
                                        eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", model_max_length=256,
                                        additional_special_tokens=specials[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                         num_attention_heads=2, num_key_value_heads=1,
                         vocab_size=len(tokenizer), max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    Qwen2ForCausalLM(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_marian(path: Path, texts: list[str], seed: int = 2) -> Path:
    """``path/to/marian``: a random 2-layer Marian translation model; its byte-level BPE
    tokenizer ends every text with ``</s>`` as Marian's does."""
    import torch
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    core = byte_level_bpe(texts, ["</s>", "<unk>", "<pad>"], eos="</s>")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>",
                                        model_max_length=128)
    torch.manual_seed(seed)
    config = MarianConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2,
                          decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                          encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                          decoder_start_token_id=tokenizer.pad_token_id,
                          forced_eos_token_id=tokenizer.eos_token_id)
    MarianMTModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_demo_models(hf: Path, bits: int = 17) -> Path:
    """``outputs/demo/hf``, as ``make demo`` lays it out: the word-level tokenizer over ``0``,
    ``1`` and ``=``, a little Majority Class data, and random (untrained) ``compatible`` and
    ``standard`` GPT-2s of the demo's shape."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from sequential_rationales_experiments.majority_class import majority_class_sentences
    from sequential_rationales_integrations.huggingface.word_level_tokenizer import (
        build_word_level_tokenizer,
    )

    tokenizer = build_word_level_tokenizer(["0 1 ="])
    tokenizer.save_pretrained(hf / "tokenizer")
    data = hf / "data"
    data.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 20), ("valid", 10), ("test", 5)):
        lines = majority_class_sentences(n, bits, generator)
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n")
    for seed, name in enumerate(("compatible", "standard")):
        torch.manual_seed(seed)
        config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=len(tokenizer),
                            n_positions=bits + 3, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
        GPT2LMHeadModel(config).eval().save_pretrained(hf / name)
        tokenizer.save_pretrained(hf / name)
    return hf


HUB_CACHE = ".hub-cache"  # the Hugging Face cache of the pages, in their working directory


def hub_snapshot(cache: Path, repo: str, folder: Path) -> Path:
    """``folder``'s files as the Hugging Face cache holds a downloaded snapshot of the Hub
    model ``repo``, so that the pages' ``--model gpt2`` reads the tiny GPT-2 offline."""
    commit = "0" * 40
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)
    return root / "snapshots" / commit


def build_fixtures(root: Path, translation: tuple[Path, Path] | None = None) -> Path:
    """Every fixture of the pages' working directory, under ``root``.

    ``translation``: the checkpoint folder and binarized data folder of a tiny fairseq
    translation model of the plugin (source words ``s0``..``s9``, target words ``t0``..``t9``;
    the target is the source reversed, ``s`` mapped to ``t``), copied to
    ``checkpoints/compatible_iwslt`` and ``data-bin/iwslt14.tokenized.de-en``.
    """
    texts = english_sentences()
    save_gpt2(root / "path/to/gpt2", texts)
    hub_snapshot(root / HUB_CACHE, "gpt2", root / "path/to/gpt2")
    save_chat_model(root / "path/to/chat-model", texts)
    save_marian(root / "path/to/marian", texts + _GERMAN.splitlines())
    save_demo_models(root / "outputs/demo/hf")
    if translation is not None:
        checkpoints, data = translation
        target = root / "checkpoints/compatible_iwslt"
        shutil.copytree(checkpoints, target)
        for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
            if not (target / name).exists():
                found = sorted(target.glob("*.pt"))
                shutil.copy2(found[0], target / name)
        shutil.copytree(data, root / "data-bin/iwslt14.tokenized.de-en")
    (root / "prompts.txt").write_text("The Supreme Court on Tuesday\nHello there, how are\n"
                                      "The cat sat on the\n")
    pairs = [{"source": "s1 s2 s3", "target": "t3 t2 t1"},
             {"source": "s4 s5 s6 s7", "target": "t7 t6 t5 t4"}]
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return root


def repo_files(repo: Path = REPO_ROOT) -> set[str]:
    """The files under the linked repository folders (without ``__pycache__``): a page that
    adds one wrote into the repository through a link."""
    files = set()
    for name in REPO_LINKS:
        for path in (repo / name).rglob("*"):
            if "__pycache__" not in path.parts and not path.is_dir():
                files.add(path.relative_to(repo).as_posix())
    return files


def prepare_workdir(workdir: Path, fixtures: Path | None, repo: Path = REPO_ROOT) -> Path:
    """A page's fresh working directory: a copy of the fixtures (blocks may change them
    freely) and links to the repository's entry-point folders and to the virtualenv."""
    if fixtures is not None:
        shutil.copytree(fixtures, workdir, symlinks=True)
    else:
        workdir.mkdir(parents=True)
    for name in REPO_LINKS:
        if (repo / name).exists():
            (workdir / name).symlink_to(repo / name, target_is_directory=True)
    if sys.prefix != sys.base_prefix:  # the pages call .venv/bin/python ...
        (workdir / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return workdir


# ---------------------------------------------------------------------------------------------
# The table: python -m tests.docs_examples


def summary(root: Path = REPO_ROOT) -> str:
    """A table of every page: blocks run, blocks skipped, and each skip's reason."""
    pages = [load_page(path, root) for path in doc_pages(root)]
    width = max([len(p.name) for p in pages] + [4])
    rows = [f"{'page':<{width}}  {'run':>4}  {'skipped':>7}", "-" * (width + 15)]
    notes = []
    for page in pages:
        rows.append(f"{page.name:<{width}}  {len(page.executed):>4}  {len(page.skipped):>7}")
        notes += [f"  skip  {page.name}:{b.line}: {b.skip}" for b in page.skipped]
        notes += [f"  ERROR {problem}" for problem in page.problems]
    rows.append("-" * (width + 15))
    run = sum(len(p.executed) for p in pages)
    skipped = sum(len(p.skipped) for p in pages)
    rows.append(f"{'total':<{width}}  {run:>4}  {skipped:>7}")
    return "\n".join(rows + ([""] + notes if notes else []))


if __name__ == "__main__":
    print(summary())
