"""An interactive, self-contained HTML viewer for rationalization logs.

[`render_html`][sequential_rationales.html.render_html] turns one or many seed logs
([`lm_log`][sequential_rationales.results.lm_log] or
[`conditional_log`][sequential_rationales.results.conditional_log] dictionaries, mixed freely)
into one page with inline CSS and a small inline script: nothing is fetched from the network.
Hovering, focusing (Tab) or clicking a target token highlights its rationale, darkest for the
token added first, each marked with the order it was added; a panel shows the model's prediction
after the last step, its probability and whether the argmax was reached. Clicking (or Enter)
pins the selection; clicking again or Escape releases it. Translation logs show the source and
the target side by side. [`render_fragment`][sequential_rationales.html.render_fragment] gives
the same viewer as an embeddable fragment (scoped CSS, unique ids), which notebooks show for a
[`SequenceRationales`][sequential_rationales.results.SequenceRationales].

Every token text is HTML-escaped; the data handed to the script is JSON with `<`, `>` and `&`
written as `\\u003c` etc., so no token can close the `<script>` element.
"""

from __future__ import annotations

import html
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .results import SequenceRationales, conditional_log, lm_log

# Byte-level BPE (GPT-2) and SentencePiece markers, and raw control characters, as shown.
_MARKERS = {"\u0120": " ", "\u010a": "\u21b5", "\u0109": "\u21e5", "\u2581": " ",
            "\n": "\u21b5", "\t": "\u21e5", "\r": ""}
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                 "\u2029": "\\u2029"}
SOURCE_KEY, TARGET_KEY = "s", "t"


def display_token(text: str) -> str:
    """How a token's text is shown in the viewer.

    The word-start markers of byte-level BPE (`Ġ`) and SentencePiece (`▁`) become a space, a
    newline (`Ċ` or a raw one) `↵`, a tab (`ĉ` or a raw one) `⇥`; a carriage return is dropped.

    Args:
        text: the token's text (converted with `str`).

    Returns:
        The text as shown; `∅` for a token that would show as nothing.
    """
    shown = "".join(_MARKERS.get(ch, ch) for ch in str(text))
    return shown if shown else "\u2205"


def script_json(value: Any) -> str:
    """Serialize `value` as JSON that is safe inside a `<script>` element.

    `<`, `>`, `&` and the line and paragraph separators are written as `\\u` escapes, so no
    string can close the element.

    Args:
        value: a JSON-serializable value without NaN or infinite numbers.

    Returns:
        The JSON text (non-ASCII characters kept as they are).

    Raises:
        ValueError: `value` holds NaN or an infinite number.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return "".join(_JSON_ESCAPES.get(ch, ch) for ch in text)


def _finite(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


# -- logs -> a neutral description -----------------------------------------------------------
def _is_translation(log: dict[str, Any]) -> bool:
    if "rationalizations" in log or "source_tokens_text" in log or "source_tokens" in log:
        return True
    if "rationalization" in log or "input_text" in log or "input_ids" in log:
        return False
    raise ValueError("not a rationalization log: expected the keys of lm_log (input_ids, "
                     "input_text, rationalization) or conditional_log (source_tokens, "
                     f"target_tokens, rationalizations); got {sorted(log)}")


def _texts(log: dict[str, Any], text_key: str, ids_key: str) -> list[str]:
    text = log.get(text_key)
    if text is None:
        text = [str(i) for i in log.get(ids_key, [])]
    return [str(t) for t in text]


def rationale_order(entry: dict[str, Any], conditional: bool) -> list[tuple[str, int]]:
    """The rationale of one target entry of a seed log, in the order its tokens were added.

    The order is read from the steps of the entry's `log`. Tokens no step names (searches that
    record subsets, such as exhaustive search) follow: the previous target token, then the
    source tokens, then the other target tokens.

    Args:
        entry: one target's entry of a seed log (an item of `rationalization` or
            `rationalizations`).
        conditional: whether the entry comes from a translation log (with
            `source_rationale` and `target_rationale`) rather than a language-model log
            (with `rationale`).

    Returns:
        `(stream, position)` pairs, `stream` being `"s"` (source) or `"t"` (target).
    """
    targets = [(TARGET_KEY, int(p)) for p in
               entry.get("target_rationale" if conditional else "rationale", [])]
    sources = [(SOURCE_KEY, int(p)) for p in entry.get("source_rationale", [])] \
        if conditional else []
    final = targets[:1] + sources + targets[1:]
    allowed = set(final)
    order: list[tuple[str, int]] = []
    for step in entry.get("log", []):
        if "added_token_position" not in step:
            continue
        stream = SOURCE_KEY if step.get("from") == "source" else TARGET_KEY
        key = (stream, int(step["added_token_position"]))
        if key in allowed and key not in order:
            order.append(key)
    order += [key for key in final if key not in order]
    return order


def _target_info(entry: dict[str, Any], target_text: list[str], conditional: bool
                 ) -> dict[str, Any]:
    steps = entry.get("log") or [{}]
    last = steps[-1]
    position = int(entry["target_position"])
    goal = entry.get("goal_word", target_text[position] if position < len(target_text) else "")
    prediction = last.get("prediction")
    reached = entry.get("reached_argmax")
    return {
        "position": position,
        "goal": str(goal),
        "goal_shown": display_token(str(goal)),
        "prediction": None if prediction is None else str(prediction),
        "prediction_shown": None if prediction is None else display_token(str(prediction)),
        "prediction_prob": _finite(last.get("prediction_prob")),
        "true_token_prob": _finite(last.get("true_token_prob")),
        "reached_argmax": None if reached is None else bool(reached),
        "steps": len(entry.get("log", [])),
        "rationale": [f"{s}{p}" for s, p in rationale_order(entry, conditional)],
    }


def _describe(log: dict[str, Any]) -> dict[str, Any]:
    conditional = _is_translation(log)
    if conditional:
        source = _texts(log, "source_tokens_text", "source_tokens")
        target = _texts(log, "target_tokens_text", "target_tokens")
        entries = log.get("rationalizations", [])
    else:
        source, target = None, _texts(log, "input_text", "input_ids")
        entries = log.get("rationalization", [])
    infos = [_target_info(e, target, conditional) for e in entries]
    return {"kind": "translation" if conditional else "lm", "source": source, "target": target,
            "method": log.get("method"), "duration": _finite(log.get("duration")),
            "targets": {str(info["position"]): info for info in infos},
            "turns": _turns(log, len(target))}


def _turns(log: dict[str, Any], length: int) -> list[tuple[str, int]] | None:
    """``(role, first token)`` of each turn of a chat record (``rationalize --chat``), when
    the template let every turn's first token be found."""
    chat, starts = log.get("chat"), log.get("chat_starts")
    if not isinstance(chat, list) or not isinstance(starts, list) or len(chat) != len(starts):
        return None
    roles = [str(m.get("role", "")) if isinstance(m, dict) else "" for m in chat]
    if not all(isinstance(b, int) and 0 <= b <= length for b in starts) or (
            starts != sorted(starts)):
        return None
    return list(zip(roles, starts, strict=True))


def log_from_result(result: SequenceRationales) -> dict[str, Any]:
    """Build a seed log of `result` without a tokenizer.

    The token texts come from `result.extra["target_text"]` and `result.extra["source_text"]`
    when attached, else the ids are shown. A predicted id is shown as the text of that id where
    it occurs in the sequence, else as `#id`.

    Args:
        result: the rationales of one sequence.

    Returns:
        The log as [`lm_log`][sequential_rationales.results.lm_log] (language models) or
            [`conditional_log`][sequential_rationales.results.conditional_log] (conditional
            models) builds it.
    """
    def texts(key: str, ids: list[int]) -> list[str]:
        given = result.extra.get(key)
        if isinstance(given, (list, tuple)) and len(given) >= len(ids):
            return [str(t) for t in given]
        return [str(i) for i in ids]

    def decoder(ids: list[int], text: list[str]):
        known = {int(i): t for i, t in zip(ids, text)}
        return lambda i: known.get(int(i), f"#{int(i)}")

    target_ids = [int(i) for i in result.target_ids]
    target_text = texts("target_text", target_ids)
    decode_target = decoder(target_ids, target_text)
    if result.source_ids is None:
        log = lm_log(result, decode_target)
        log["input_text"] = target_text[:len(target_ids)]
        return log
    source_ids = [int(i) for i in result.source_ids]
    source_text = texts("source_text", source_ids)
    log = conditional_log(result, decoder(source_ids, source_text), decode_target)
    log["source_tokens_text"] = source_text  # may hold the final </s> the ids lack
    return log


# -- HTML ------------------------------------------------------------------------------------
_CSS = """
.sr-viewer{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f}
.sr-viewer .sr-seq{border:1px solid #d8dbe0;border-radius:8px;padding:.6em .9em;margin:.8em 0;
 background:#fff}
.sr-viewer .sr-head{font-size:.85em;color:#555;margin-bottom:.35em}
.sr-viewer .sr-head b{color:#1d1d1f}
.sr-viewer .sr-pair{display:grid;grid-template-columns:1fr 1fr;gap:1.2em}
.sr-viewer .sr-label{font-size:.7em;text-transform:uppercase;letter-spacing:.06em;color:#888}
.sr-viewer .sr-tokens{line-height:2.3}
.sr-viewer .sr-turn{margin:.15em 0}
.sr-viewer .sr-role{display:inline-block;min-width:7.5em;font-size:.75em;font-weight:600;
  text-transform:uppercase;letter-spacing:.04em;color:#5f6368}
.sr-viewer .sr-tok{position:relative;white-space:pre;padding:.15em .25em;margin:0 1px;
 border-radius:4px;border-bottom:2px solid transparent}
.sr-viewer .sr-target{cursor:pointer;border-bottom:2px dotted #9aa3ad}
.sr-viewer .sr-target:hover{background:#e8f0fe}
.sr-viewer .sr-target:focus{outline:2px solid #1a73e8;outline-offset:1px}
.sr-viewer .sr-tok.sr-active{background:#1a73e8;color:#fff;border-bottom-color:#1a73e8}
.sr-viewer .sr-tok.sr-pinned{box-shadow:0 0 0 2px #0b2f6b}
/* The order number floats above the token, so highlighting never moves the layout. */
.sr-viewer .sr-tok[data-order]::after{content:attr(data-order);position:absolute;top:-1.05em;
 right:-.15em;font-size:.62em;line-height:1;font-weight:700;color:#8a3a00}
.sr-viewer .sr-info{min-height:2.9em;font-size:.88em;background:#f5f6f8;border-radius:6px;
 padding:.4em .7em;margin-top:.5em;white-space:pre-wrap}
.sr-viewer .sr-legend{font-size:.75em;color:#777;margin-top:.3em}
.sr-viewer .sr-swatch{display:inline-block;width:1.1em;height:.8em;vertical-align:middle;
 border-radius:2px;margin:0 1px}
"""

# Shading: the k-th of n rationale tokens gets hsl(HUE, SAT, light), light rising linearly from
# DARKEST (added first) to LIGHTEST (added last).
HUE, SAT, DARKEST, LIGHTEST = 24, 92, 36, 84

_SCRIPT = """
(function () {
  var root = document.getElementById(%(root_id)s);
  if (!root || root.getAttribute("data-sr-ready")) return;
  root.setAttribute("data-sr-ready", "1");
  var data = JSON.parse(root.querySelector("script.sr-data").textContent);
  var shade = %(shade)s;
  function pct(p) { return p === null ? "?" : (100 * p).toFixed(1) + "%%"; }
  root.querySelectorAll(".sr-seq").forEach(function (section) {
    var seq = data.sequences[+section.getAttribute("data-seq")];
    var panel = section.querySelector(".sr-info");
    var idle = panel.textContent;
    var tokens = {};
    var pinned = null;
    section.querySelectorAll(".sr-tok").forEach(function (el) {
      tokens[el.getAttribute("data-stream") + el.getAttribute("data-pos")] = el;
    });
    function clear() {
      section.querySelectorAll(".sr-in, .sr-active").forEach(function (el) {
        el.classList.remove("sr-in", "sr-active", "sr-pinned");
        el.style.removeProperty("background-color");
        el.style.removeProperty("color");
        el.removeAttribute("data-order");
      });
      section.querySelectorAll(".sr-target").forEach(function (el) {
        el.setAttribute("aria-pressed", "false");
      });
      panel.textContent = idle;
    }
    function show(el) {
      clear();
      var keys = (el.getAttribute("data-rationale") || "").split(" ").filter(Boolean);
      var n = keys.length;
      var names = [];
      el.classList.add("sr-active");
      if (el === pinned) {
        el.classList.add("sr-pinned");
        el.setAttribute("aria-pressed", "true");
      }
      keys.forEach(function (key, i) {
        var tok = tokens[key];
        if (!tok) return;
        var light = n > 1 ? shade.darkest + (shade.lightest - shade.darkest) * i / (n - 1)
                          : shade.darkest;
        tok.classList.add("sr-in");
        tok.style.backgroundColor = "hsl(" + shade.hue + "," + shade.sat + "%%," + light + "%%)";
        tok.style.color = light < 60 ? "#fff" : "#1d1d1f";
        tok.setAttribute("data-order", String(i + 1));
        names.push((i + 1) + " \\u201c" + tok.textContent + "\\u201d@" + key.slice(1) +
                   (seq.kind === "translation" ? (key[0] === "s" ? " (src)" : " (tgt)") : ""));
      });
      var t = seq.targets[el.getAttribute("data-pos")];
      var argmax = t.reached_argmax === null ? "" :
        (t.reached_argmax ? "  \\u00b7  argmax reached \\u2713" : "  \\u00b7  argmax NOT reached");
      var pred = t.prediction === null ? "?" : "\\u201c" + t.prediction_shown + "\\u201d";
      panel.textContent =
        "target " + t.position + " \\u201c" + t.goal_shown + "\\u201d  \\u00b7  predicted " +
        pred + " p=" + pct(t.prediction_prob) + "  \\u00b7  true token p=" +
        pct(t.true_token_prob) + argmax + (el === pinned ? "  \\u00b7  pinned" : "") +
        "\\nrationale (" + n + " token" + (n === 1 ? "" : "s") + ", in the order added): " +
        names.join(", ");
    }
    function toggle(el) {
      pinned = pinned === el ? null : el;
      show(el);
    }
    section.addEventListener("mouseover", function (e) {
      var el = e.target.closest(".sr-target");
      if (el && !pinned) show(el);
    });
    section.addEventListener("mouseout", function (e) {
      var el = e.target.closest(".sr-target");
      if (el && !pinned && !el.contains(e.relatedTarget)) clear();
    });
    section.addEventListener("focusin", function (e) {
      var el = e.target.closest(".sr-target");
      if (el && !pinned) show(el);
    });
    section.addEventListener("focusout", function () { if (!pinned) clear(); });
    section.addEventListener("click", function (e) {
      var el = e.target.closest(".sr-target");
      if (el) toggle(el);
    });
    section.addEventListener("keydown", function (e) {
      var el = e.target.closest(".sr-target");
      if (el && (e.key === "Enter" || e.key === " ")) {
        e.preventDefault();
        toggle(el);
      } else if (e.key === "Escape") {
        pinned = null;
        clear();
      }
    });
  });
})();
"""


def _token(stream: str, position: int, text: str, info: dict[str, Any] | None,
           element_id: str) -> str:
    attrs = {"class": "sr-tok", "id": f"{element_id}-{stream}{position}", "data-stream": stream,
             "data-pos": str(position), "title": text}
    if info is not None:
        attrs.update({"class": "sr-tok sr-target", "tabindex": "0", "role": "button",
                      "aria-pressed": "false", "data-rationale": " ".join(info["rationale"])})
    rendered = " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
    return f"<span {rendered}>{html.escape(display_token(text), quote=True)}</span>"


def _row(stream: str, texts: list[str], targets: dict[str, Any], element_id: str,
         turns: list[tuple[str, int]] | None = None) -> str:
    spans = [_token(stream, i, t, targets.get(str(i)) if stream == TARGET_KEY else None,
                    element_id) for i, t in enumerate(texts)]
    if not turns:
        return f'<div class="sr-tokens">{"".join(spans)}</div>'
    ends = [start for _, start in turns[1:]] + [len(spans)]
    blocks = "".join(
        f'<div class="sr-turn"><span class="sr-role">{html.escape(role)}</span>'
        f'{"".join(spans[start:end])}</div>'
        for (role, start), end in zip(turns, ends, strict=True))
    lead = "".join(spans[:turns[0][1]])  # tokens before the first turn (a BOS)
    return f'<div class="sr-tokens">{lead}{blocks}</div>'


def _section(index: int, seq: dict[str, Any], root_id: str) -> str:
    element_id = f"{root_id}-{index}"
    kind = ("Translation" if seq["kind"] == "translation" else
            "Chat" if seq["turns"] else "Sequence")
    head = [f"<b>{kind} {index + 1}</b>"]
    if seq["method"]:
        head.append(f"method {html.escape(str(seq['method']))}")
    if seq["duration"] is not None:
        head.append(f"{seq['duration']:.2f} s")
    head.append(f"{len(seq['targets'])} target token{'s' if len(seq['targets']) != 1 else ''}")
    target_row = _row(TARGET_KEY, seq["target"], seq["targets"], element_id, seq["turns"])
    if seq["kind"] == "translation":
        source_row = _row(SOURCE_KEY, seq["source"], {}, element_id)
        body = ('<div class="sr-pair">'
                f'<div class="sr-side sr-source"><div class="sr-label">Source</div>{source_row}'
                '</div>'
                f'<div class="sr-side sr-target-side"><div class="sr-label">Target</div>'
                f'{target_row}</div></div>')
    else:
        body = target_row
    swatches = "".join(
        f'<span class="sr-swatch" style="background:hsl({HUE},{SAT}%,{light}%)"></span>'
        for light in (DARKEST, (DARKEST + LIGHTEST) // 2, LIGHTEST))
    return (f'<section class="sr-seq" id="{html.escape(element_id, quote=True)}" '
            f'data-seq="{index}" data-kind="{seq["kind"]}">'
            f'<div class="sr-head">{" &middot; ".join(head)}</div>{body}'
            '<div class="sr-info" aria-live="polite">Hover, focus (Tab) or click an underlined '
            'token to see its rationale; click or Enter pins it, Esc releases.</div>'
            f'<div class="sr-legend">added first {swatches} added last; the small number is '
            'the order each token was added</div></section>')


def _as_logs(logs: Any) -> list[dict[str, Any]]:
    if isinstance(logs, (dict, SequenceRationales)):
        logs = [logs]
    return [log_from_result(x) if isinstance(x, SequenceRationales) else x for x in logs]


def render_fragment(logs: Iterable[dict[str, Any] | SequenceRationales] | dict[str, Any],
                    root_id: str | None = None) -> str:
    """Render the viewer as an embeddable HTML fragment.

    The fragment is one `<div>` with its own `<style>` (scoped to `.sr-viewer`) and
    `<script>`, as a notebook shows it.

    Args:
        logs: seed logs ([`lm_log`][sequential_rationales.results.lm_log] or
            [`conditional_log`][sequential_rationales.results.conditional_log] dicts) and
            [`SequenceRationales`][sequential_rationales.results.SequenceRationales], mixed;
            a single log or result is accepted too.
        root_id: the `id` of the fragment's `<div>`, which keeps several fragments on one page
            apart; `None` (the default) draws a random one.

    Returns:
        The HTML fragment.

    Raises:
        ValueError: a dict is not a rationalization log.
    """
    root_id = root_id or f"sr-{secrets.token_hex(6)}"
    sequences = [_describe(log) for log in _as_logs(logs)]
    sections = "".join(_section(i, seq, root_id) for i, seq in enumerate(sequences))
    data = {"sequences": [{"kind": s["kind"], "targets": s["targets"]} for s in sequences]}
    shade = {"hue": HUE, "sat": SAT, "darkest": DARKEST, "lightest": LIGHTEST}
    script = _SCRIPT % {"root_id": script_json(root_id), "shade": script_json(shade)}
    return (f'<div class="sr-viewer" id="{html.escape(root_id, quote=True)}">'
            f"<style>{_CSS}</style>{sections}"
            f'<script type="application/json" class="sr-data">{script_json(data)}</script>'
            f"<script>{script}</script></div>")


def render_html(logs: Iterable[dict[str, Any] | SequenceRationales] | dict[str, Any],
                title: str | None = None) -> str:
    """Render one self-contained HTML page viewing the rationales of `logs`.

    A Content Security Policy forbids every network request.

    Args:
        logs: seed logs ([`lm_log`][sequential_rationales.results.lm_log] or
            [`conditional_log`][sequential_rationales.results.conditional_log] dicts) and
            [`SequenceRationales`][sequential_rationales.results.SequenceRationales], mixed;
            a single log or result is accepted too.
        title: the page's title and heading; `None` (the default): "Sequential rationales".

    Returns:
        The page, a complete HTML document.

    Raises:
        ValueError: a dict is not a rationalization log.
    """
    logs = _as_logs(logs)
    title = title or "Sequential rationales"
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title>"
            "<style>body{margin:1.2em auto;max-width:70em;padding:0 1em;background:#fafbfc}"
            "h1{font:600 1.3em system-ui,sans-serif}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{render_fragment(logs, 'sr-page')}</body></html>\n")


def write_html(logs: Iterable[dict[str, Any] | SequenceRationales] | dict[str, Any],
               path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the page of [`render_html`][sequential_rationales.html.render_html] to a file.

    Args:
        logs: as for `render_html`.
        path: the file to write (UTF-8); an existing file is replaced.
        title: as for `render_html`.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    path.write_text(render_html(logs, title), encoding="utf-8")
    return path
