"""The HTML viewer (``sequential_rationales.html``): escaping, one element per token, rationale
data attributes and, in headless Chromium driven over the DevTools protocol (``tests/cdp.py``),
hovering, pinning, keyboard focus and a screenshot."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser

import pytest
import torch

from sequential_rationales import (
    RationalizationProblem,
    conditional_log,
    rationalize,
    rationalize_sequence,
)
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.html import (
    display_token,
    rationale_order,
    render_fragment,
    render_html,
    script_json,
    write_html,
)

from .cdp import INSTALL_HINT, Browser, find_browser

EVIL = ["<script>window.__pwned = 1</script>", '"onmouseover=alert(1)', "a&amp;b",
        "</script><b>x", "\u2028"]


# -- helpers ---------------------------------------------------------------------------------
class _Collector(HTMLParser):
    """Every token span (attributes and text) and every script's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[dict] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in_token = self._in_script = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "sr-tok" in (attrs.get("class") or "").split():
            self._in_token = {**attrs, "text": ""}
            self.tokens.append(self._in_token)
        if tag == "script":
            self._in_script = (attrs, [])
            self.scripts.append(self._in_script)

    def handle_endtag(self, tag):
        if tag == "span":
            self._in_token = None
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_token is not None:
            self._in_token["text"] += data
        if self._in_script is not None:
            self._in_script[1].append(data)


def _parse(page: str) -> _Collector:
    parser = _Collector()
    parser.feed(page)
    return parser


def _data_blob(page: str) -> dict:
    blobs = [("".join(parts), attrs) for attrs, parts in _parse(page).scripts
             if attrs.get("type") == "application/json"]
    assert len(blobs) == 1
    text = blobs[0][0]
    assert not set("<>&\u2028") & set(text)  # nothing in it can end the <script> element
    return json.loads(text)


def _step(position, prediction="x", stream=None, prob=0.5):
    step = {"rationale_size": 1, "added_token_position": position, "added_token_text": "?",
            "prediction": prediction, "prediction_prob": prob, "true_token_prob": prob / 2}
    if stream is not None:
        step["from"] = stream
    return step


def _lm_log(tokens: list[str]) -> dict:
    """A hand-made LM log: every token from position 2 on is a target whose rationale is the
    previous token, then position 0."""
    entries = []
    for t in range(2, len(tokens)):
        order = [t - 1, 0]
        entries.append({"target_position": t, "goal_word": tokens[t],
                        "log": [_step(p, tokens[t]) for p in order], "rationale": order,
                        "reached_argmax": t % 2 == 0})
    return {"input_ids": list(range(len(tokens))), "input_text": tokens,
            "rationalization": entries, "all_rationales": [e["rationale"] for e in entries],
            "duration": 0.25, "method": "greedy"}


def _translation_log() -> dict:
    entry = {"target_position": 2, "goal_word": "b",
             "log": [_step(1, "b", "target"), _step(2, "b", "source"), _step(0, "b", "source")],
             "source_rationale": [0, 2], "target_rationale": [1], "reached_argmax": True}
    return {"source_tokens": [5, 6, 7, 2], "target_tokens": [2, 8, 9],
            "source_tokens_text": ["Das", "ist", "<gut>", "</s>"],
            "target_tokens_text": ["</s>", "a", "b"], "rationalizations": [entry],
            "all_source_rationales": [[0, 2]], "all_target_rationales": [[1]],
            "duration": 0.1, "method": "greedy"}


# -- unit tests on the HTML ------------------------------------------------------------------
def test_display_token_shows_byte_level_markers():
    assert display_token("\u0120the") == " the"
    assert display_token("\u010a") == "\u21b5"
    assert display_token("\u2581word") == " word"
    assert display_token("") == "\u2205"
    assert display_token("plain") == "plain"


def test_script_json_cannot_close_a_script_element():
    text = script_json({"k": "</script><!--&\u2028"})
    assert not set("<>&") & set(text)
    assert "\u2028" not in text
    assert json.loads(text) == {"k": "</script><!--&\u2028"}


def test_every_token_is_one_escaped_element_with_its_raw_text_in_title():
    tokens = ["\u0120Hello"] + EVIL + ["\u010a"]
    page = render_html([_lm_log(tokens)], title="<t>")
    parsed = _parse(page)
    assert [t["title"] for t in parsed.tokens] == tokens
    assert [t["text"] for t in parsed.tokens] == [display_token(t) for t in tokens]
    assert [int(t["data-pos"]) for t in parsed.tokens] == list(range(len(tokens)))
    # Only the viewer's two scripts exist; no token became markup.
    assert len(parsed.scripts) == 2
    assert "<b>x" not in page and "<t>" not in page and "&lt;t&gt;" in page
    # The quote shows as &quot; in the markup and as \" in the JSON, never raw.
    assert '"onmouseover' not in page.replace('\\"onmouseover', "")
    # The JSON handed to the script round-trips the raw token texts.
    data = _data_blob(page)
    goals = [t["goal"] for t in data["sequences"][0]["targets"].values()]
    assert goals == tokens[2:]


def test_targets_carry_their_rationale_in_order_and_context_tokens_are_plain():
    log = _lm_log(["a", "b", "c", "d", "e"])
    parsed = _parse(render_html(log))
    context, targets = parsed.tokens[:2], parsed.tokens[2:]
    for tok in context:
        assert "tabindex" not in tok and "data-rationale" not in tok
        assert "sr-target" not in tok["class"].split()
    for tok, entry in zip(targets, log["rationalization"]):
        assert tok["tabindex"] == "0" and tok["role"] == "button"
        assert tok["data-rationale"] == " ".join(f"t{p}" for p in entry["rationale"])
    data = _data_blob(render_html(log))["sequences"][0]["targets"]
    assert data["3"]["prediction"] == "d" and data["3"]["prediction_prob"] == 0.5
    assert data["3"]["reached_argmax"] is False and data["4"]["reached_argmax"] is True


def test_translation_shows_source_and_target_rows_with_cross_stream_order():
    log = _translation_log()
    page = render_html([log, _lm_log(["x", "y", "z"])])  # mixed logs on one page
    parsed = _parse(page)
    streams = [(t["data-stream"], t["title"]) for t in parsed.tokens]
    assert streams[:7] == [("s", "Das"), ("s", "ist"), ("s", "<gut>"), ("s", "</s>"),
                           ("t", "</s>"), ("t", "a"), ("t", "b")]
    assert parsed.tokens[6]["data-rationale"] == "t1 s2 s0"
    assert 'class="sr-pair"' in page and page.count('class="sr-seq"') == 2
    assert "&lt;gut&gt;" in page


def test_rationale_order_falls_back_for_subset_steps():
    entry = {"target_position": 3, "log": [{"rationale_size": 2, "subset": [2, 0]}],
             "source_rationale": [4, 1], "target_rationale": [2, 0]}
    assert rationale_order(entry, True) == [("t", 2), ("s", 4), ("s", 1), ("t", 0)]
    lm = {"target_position": 3, "log": [_step(2), _step(0)], "rationale": [2, 0, 1]}
    assert rationale_order(lm, False) == [("t", 2), ("t", 0), ("t", 1)]


def test_page_is_self_contained(tmp_path):
    path = write_html([_lm_log(["a", "b", "c"]), _translation_log()], tmp_path / "v.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page
    for needle in ("http://", "https://", "src=", "href=", "@import", "url("):
        assert needle not in page, needle


def test_repr_html_falls_back_to_ids_and_uses_attached_text(tiny_gpt2):
    ids = torch.tensor([3, 7, 1, 9, 4])
    result, _ = rationalize_sequence(HuggingFaceCausalLM(tiny_gpt2), ids, lambda i: f"w{i}",
                                     "greedy", start_step=2)
    result.extra.pop("target_text", None)
    first, second = result._repr_html_(), result._repr_html_()
    assert "<html" not in first and "<!DOCTYPE" not in first
    root_ids = [re.search(r'class="sr-viewer" id="([^"]+)"', f).group(1)
                for f in (first, second)]
    assert root_ids[0] != root_ids[1]  # two outputs in one notebook do not clash
    assert [t["text"] for t in _parse(first).tokens] == ["3", "7", "1", "9", "4"]
    result.extra["target_text"] = ["\u0120a", "<b>", "c", "d", "e"]
    shown = _parse(result._repr_html_()).tokens
    assert [t["title"] for t in shown] == result.extra["target_text"]
    assert [t.get("data-rationale") is not None for t in shown] == [False] * 3 + [True] * 2


def test_fragment_accepts_a_translation_result(toy_seq2seq):
    result = rationalize(toy_seq2seq, RationalizationProblem(torch.tensor([0, 3, 5, 7]),
                                                             torch.tensor([4, 6, 8])), "greedy")
    tokens = _parse(render_fragment(result)).tokens
    assert [t["data-stream"] for t in tokens] == ["s"] * 3 + ["t"] * 4
    assert [t["text"] for t in tokens] == ["4", "6", "8", "0", "3", "5", "7"]
    assert sum("data-rationale" in t for t in tokens) == 3
    # Attached texts may hold the source's final </s>, which the ids lack.
    result.extra.update(source_text=["Ich", "bin", "da", "</s>"],
                        target_text=["</s>", "I", "am", "here"])
    tokens = _parse(result._repr_html_()).tokens
    assert [t["title"] for t in tokens] == ["Ich", "bin", "da", "</s>", "</s>", "I", "am", "here"]


# -- the browser -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if find_browser() is None:
        pytest.skip(f"browser test skipped: no chromium or chromium-browser on PATH; "
                    f"{INSTALL_HINT}")
    with Browser.launch() as b:
        yield b


GPT2_WORDS = ["\u0120the", "\u0120cat", "\u0120sat", "\u010a", "\u0120on", "\u0120a", "\u0120mat",
              "<script>window.__pwned = 1</script>", "\u0120and", "\u0120purred", ".", "!"]


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(float(x)) for x in re.findall(r"[\d.]+", css)[:3])


def _luminance(rgb: tuple[int, ...]) -> float:
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]


HIGHLIGHTED = """[...document.querySelectorAll('#{sec} .sr-in')].map(e => ({{
    key: e.dataset.stream + e.dataset.pos, order: +e.dataset.order,
    bg: getComputedStyle(e).backgroundColor}})).sort((a, b) => a.order - b.order)"""


def _open(browser, tmp_path, logs, width=1000, height=560):
    path = write_html(logs, tmp_path / "viewer.html", title="Rationales")
    page = browser.new_page(width=width, height=height)
    page.goto(path.as_uri())
    assert page.evaluate("document.getElementById('sr-page').dataset.srReady") == "1"
    return page


def _check_highlight(page, section: str, target: str, expected: list[str]) -> None:
    got = page.evaluate(HIGHLIGHTED.format(sec=section))
    assert [g["key"] for g in got] == expected
    assert [g["order"] for g in got] == list(range(1, len(expected) + 1))
    lum = [_luminance(_rgb(g["bg"])) for g in got]
    assert lum == sorted(lum) and (len(lum) < 2 or lum[0] < lum[-1])  # first added darkest
    assert page.evaluate(f"[...document.querySelectorAll('#{section} .sr-active')]"
                         ".map(e => e.id)") == [target.lstrip("#")]


def test_browser_hover_pin_keyboard_and_screenshot(browser, tiny_gpt2, tmp_path):
    from PIL import Image

    ids = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    _, log = rationalize_sequence(HuggingFaceCausalLM(tiny_gpt2), ids,
                                  lambda i: GPT2_WORDS[i], "greedy", start_step=1)
    page = _open(browser, tmp_path, [log])
    sec = "sr-page-0"
    assert page.evaluate("window.__pwned === undefined")
    assert page.evaluate(f"document.getElementById('{sec}-t6').textContent") == GPT2_WORDS[7]
    assert page.evaluate(f"document.querySelectorAll('#{sec} .sr-tok').length") == len(ids)

    # Hover the target with the largest rationale.
    entry = max(log["rationalization"], key=lambda e: len(e["rationale"]))
    target = f"#{sec}-t{entry['target_position']}"
    expected = [f"t{p}" for p in entry["rationale"]]
    assert [f"t{s['added_token_position']}" for s in entry["log"]] == expected
    page.hover(target)
    _check_highlight(page, sec, target, expected)
    info = page.evaluate(f"document.querySelector('#{sec} .sr-info').textContent")
    last = entry["log"][-1]
    assert f"predicted \u201c{display_token(last['prediction'])}\u201d" in info
    assert f"p={100 * last['prediction_prob']:.1f}%" in info
    assert ("argmax reached" if entry["reached_argmax"] else "argmax NOT reached") in info

    # Leaving the token clears the highlight; clicking pins it against later hovers.
    page.mouse("mouseMoved", 2, 2)
    assert page.evaluate(f"document.querySelectorAll('#{sec} .sr-in').length") == 0
    page.click(target)
    other = next(e for e in log["rationalization"] if e is not entry)
    page.hover(f"#{sec}-t{other['target_position']}")
    _check_highlight(page, sec, target, expected)
    assert page.evaluate(f"document.querySelector('{target}').getAttribute('aria-pressed')") \
        == "true"
    assert "pinned" in page.evaluate(f"document.querySelector('#{sec} .sr-info').textContent")

    png = page.screenshot()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    pixels = {c for _, c in colours}
    assert (26, 115, 232) in pixels  # the selected target
    first = _rgb(page.evaluate(HIGHLIGHTED.format(sec=sec))[0]["bg"])
    assert first in pixels  # the darkest rationale shade

    # Escape releases the pin; Tab moves the focus to the first target, which highlights.
    page.key("Escape")
    assert page.evaluate(f"document.querySelectorAll('#{sec} .sr-in').length") == 0
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):  # focus starts at the top
        page.mouse(kind, 2, 2)
    page.key("Tab")
    first_target = log["rationalization"][0]
    focused = f"#{sec}-t{first_target['target_position']}"
    assert page.evaluate("document.activeElement.id") == focused[1:]
    _check_highlight(page, sec, focused, [f"t{p}" for p in first_target["rationale"]])
    page.key("Enter")
    assert page.evaluate(f"document.querySelector('{focused}').classList.contains('sr-pinned')")


def test_browser_translation_side_by_side(browser, toy_seq2seq, tmp_path):
    src_words = ["Der", "Hund", "&", "die", "<Katze>", "schlafen", "nicht", "heute", "gut",
                 "?", "!", "."]
    tgt_words = ["</s>", "The", "dog", "and", "the", "cat", "do", "not", "sleep", "today",
                 "well", "."]
    source, target = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([0, 1, 2, 3, 4, 5])
    result = rationalize(toy_seq2seq, RationalizationProblem(target, source), "greedy")
    log = conditional_log(result, lambda i: src_words[i], lambda i: tgt_words[i])
    page = _open(browser, tmp_path, [log, _lm_log(["x", "y", "z"])])
    sec = "sr-page-0"
    boxes = page.evaluate(f"""[...document.querySelectorAll('#{sec} .sr-side')].map(e => {{
        const r = e.getBoundingClientRect(); return [r.left, r.right, r.top]; }})""")
    (src_left, src_right, src_top), (tgt_left, _, tgt_top) = boxes
    assert src_right <= tgt_left and src_top == tgt_top  # side by side
    assert page.evaluate(f"document.getElementById('{sec}-s3').textContent") == "<Katze>"

    entry = max(log["rationalizations"], key=lambda e: len(e["source_rationale"]))
    assert entry["source_rationale"], "the toy model never chose a source token"
    expected = [f"{'s' if s['from'] == 'source' else 't'}{s['added_token_position']}"
                for s in entry["log"]]
    target_sel = f"#{sec}-t{entry['target_position']}"
    page.click(target_sel)
    _check_highlight(page, sec, target_sel, expected)
    highlighted_sources = page.evaluate(
        f"[...document.querySelectorAll('#{sec} .sr-source .sr-in')].map(e => +e.dataset.pos)")
    assert sorted(highlighted_sources) == sorted(entry["source_rationale"])
    # The second section (an LM log) is untouched by the first one's selection.
    assert page.evaluate("document.querySelectorAll('#sr-page-1 .sr-in').length") == 0
