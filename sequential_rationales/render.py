"""Plain-text rendering of rationales for terminals and logs."""

from __future__ import annotations

from collections.abc import Callable

from .results import SOURCE, SequenceRationales, TargetRationale

# ANSI styles for terminals: the predicted token bold, rationale tokens cyan.
BOLD, CYAN, RESET = "\033[1m", "\033[36m", "\033[0m"


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{RESET}" if color else text


def _context_text(r: TargetRationale, target_text: list[str], source_text: list[str] | None,
                  color: bool = False) -> str:
    parts = []
    for c in sorted(r.rationale, key=lambda c: (c.stream != SOURCE, c.position)):
        side = "src:" if c.stream == SOURCE and source_text is not None else ""
        text = (source_text if c.stream == SOURCE else target_text)[c.position]  # type: ignore[index]
        parts.append(f"{side}{_paint(repr(text), CYAN, color)}@{c.position}")
    return ", ".join(parts)


def format_rationales(result: SequenceRationales, decode_target: Callable[[int], str],
                      decode_source: Callable[[int], str] | None = None,
                      color: bool = False) -> str:
    """Format a result as plain text, one line per target.

    The text starts with the method and its time, then the source (conditional models) and the
    target tokens. Each target's line gives its position, its token and its rationale in
    position order (source tokens first, marked `src:`), each rationale token as its text and
    position; a rationale that does not reach the argmax is marked so.

    Args:
        result: the rationales of one sequence.
        decode_target: turns a target token id into its text.
        decode_source: turns a source token id into its text; `None` uses `decode_target`.
        color: style the text with ANSI escape codes (the target token bold, rationale tokens
            cyan), for a terminal.

    Returns:
        The lines, joined by newlines (no final newline).
    """
    target_text = [decode_target(i) for i in result.target_ids]
    source_text = None
    lines = [f"method: {result.method}  ({result.duration:.2f}s)"]
    if result.source_ids is not None:
        dec = decode_source or decode_target
        source_text = [dec(i) for i in result.source_ids]
        lines.append("source: " + " ".join(source_text))
    lines.append("target: " + " ".join(target_text))
    for r in result.rationales:
        mark = "" if r.reached_argmax else "  (argmax not reached)"
        predicted = _paint(f"{target_text[r.target_position]!r:>14}", BOLD, color)
        lines.append(f"  [{r.target_position:>3}] {predicted} <- {len(r.rationale)} token(s): "
                     f"{_context_text(r, target_text, source_text, color)}{mark}")
    return "\n".join(lines)


def highlight_rationale(tokens: list[str], rationale: list[int], target_position: int) -> str:
    """Show one rationale inline: the tokens before the target, rationale tokens in brackets.

    Args:
        tokens: the texts of the sequence's tokens.
        rationale: the positions of the rationale's tokens.
        target_position: the position of the target token in `tokens`.

    Returns:
        The tokens before the target separated by spaces, the rationale's in `[brackets]`,
        then `->` and the target token.
    """
    chosen = set(rationale)
    shown = [f"[{tok}]" if i in chosen else tok for i, tok in enumerate(tokens[:target_position])]
    return " ".join(shown) + f"  ->  {tokens[target_position]}"
