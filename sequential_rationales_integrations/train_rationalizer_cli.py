"""Train a rationale extractor for a model: rationales from one forward pass.

The extractor (sequential_rationales.extractor) reads the frozen model's hidden states and
ranks every context token of every target at once; `rationalize --method amortized
--extractor DIR` then adds tokens in its order until the model's argmax is the target, so every
rationale still satisfies the paper's condition, at a fraction of greedy search's forward
passes. It learns from a teacher: greedy rationales computed now from --text / --input, or the
records of an earlier `rationalize --out FILE.jsonl` run (--teacher FILE.jsonl; any method's
order, greedy's by default). Language models (Hugging Face) and fairseq translation models
(source sentences as the texts; --data as for `rationalize`) are served.

The objectives are UNIREX's, for next-token predictions (sequential_rationales.extractor.
Objectives): the teacher's order (--lambda-order, plausibility), the sufficiency and
comprehensiveness of rationales drawn from the extractor's own ranking, scored exactly by the
model (--lambda-sufficiency, --lambda-comprehensiveness: faithfulness), and with --finetune the
model's own loss (--lambda-task), the model then training jointly.

OUT receives extractor.json and extractor.pt (the extractor), checkpoint.pt (weights,
optimizer and step: a rerun with the same settings resumes from it), train_log.jsonl (the loss
of every step and of each objective), tensorboard/ (the same curves, when tensorboard is
installed) and, with --finetune, model/ (the fine-tuned model and its tokenizer). Examples:

  rationales-train-rationalizer --model path/to/gpt2 --input texts.txt --out extractor/
  rationalize --model path/to/gpt2 --input texts.txt --out greedy.jsonl
  rationales-train-rationalizer --model path/to/gpt2 --teacher greedy.jsonl --out extractor/
  rationalize --model path/to/gpt2 --text "..." --method amortized --extractor extractor/
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import RationalizationProblem
from sequential_rationales.extractor import (
    ExtractorConfig,
    Objectives,
    RationaleExtractor,
    TeacherSequence,
    mean_order_loss,
    train_extractor,
)
from sequential_rationales.text import load
from sequential_rationales.validation import InputError

from .cli import HelpFormatter, ProgramParser, positive_int, program_status
from .sharding import read_records

CHECKPOINT = "checkpoint.pt"
QUICK = {"steps": 200, "rank": 16}  # a CPU-sized run


def build_parser() -> argparse.ArgumentParser:
    p = ProgramParser(prog="rationales-train-rationalizer", description=__doc__,
                      formatter_class=HelpFormatter)
    p.add_argument("--model", required=True,
                   help="the model the extractor serves (its hidden states are the "
                        "extractor's input; the model stays frozen): a Hugging Face causal-LM "
                        "directory or a fairseq translation checkpoint (with --data)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer directory (default: the --model directory)")
    p.add_argument("--data", default=None,
                   help="the fairseq checkpoint's binarized data directory (its dictionaries)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", nargs="+", default=None,
                        help="training texts (translation: source sentences, translated "
                             "greedily); their greedy rationales are the teacher")
    source.add_argument("--input", default=None,
                        help="a text file, one training text per non-blank line (greedy "
                             "rationales as the teacher)")
    source.add_argument("--teacher", default=None, metavar="FILE.jsonl",
                        help="records written by `rationalize --out` for this model: their "
                             "input_ids and each target's rationale (in the order added) are "
                             "the teacher")
    p.add_argument("--out", required=True, help="output folder of the extractor")
    p.add_argument("--steps", type=positive_int, default=1000, help="training steps")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--rank", type=positive_int, default=32,
                   help="width of the extractor's query and key maps")
    p.add_argument("--layer", type=int, default=-1,
                   help="the block whose output the extractor's queries read (-1: the last)")
    p.add_argument("--key-layer", type=int, default=0,
                   help="the block whose output its keys read (0: the first, whose states "
                        "still say which token sits where)")
    p.add_argument("--batch-sequences", type=positive_int, default=8,
                   help="sequences per step")
    p.add_argument("--lambda-order", type=float, default=1.0, metavar="W",
                   help="weight of the teacher's order (plausibility)")
    p.add_argument("--lambda-sufficiency", type=float, default=0.0, metavar="W",
                   help="weight of sufficiency: log p(target) given only a rationale drawn from "
                        "the extractor's ranking")
    p.add_argument("--lambda-comprehensiveness", type=float, default=0.0, metavar="W",
                   help="weight of comprehensiveness: -log p(target) given the context "
                        "without the drawn rationale")
    p.add_argument("--lambda-task", type=float, default=0.0, metavar="W",
                   help="--finetune: weight of the model's own loss on the texts")
    p.add_argument("--samples", type=int, default=4,
                   help="rationales drawn per target for the faithfulness objectives (>= 2)")
    p.add_argument("--finetune", action="store_true",
                   help="train the model jointly (Hugging Face language models; the "
                        "fine-tuned model is saved in OUT/model)")
    p.add_argument("--model-lr", type=float, default=1e-5,
                   help="--finetune: the model's learning rate")
    p.add_argument("--held-out", type=float, default=0.1, metavar="FRACTION",
                   help="share of the sequences kept out of training to report the loss on")
    p.add_argument("--max-steps", type=positive_int, default=1024,
                   help="largest greedy rationale of the teacher (--text / --input)")
    p.add_argument("--generate", type=positive_int, default=None, metavar="N",
                   help="language models: first continue each text greedily by up to N "
                        "tokens and learn the continuation's rationales (the model's own "
                        "predictions: what `rationalize --generate` explains)")
    p.add_argument("--seed", type=int, default=0, help="seeds the extractor and the draws")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present)")
    p.add_argument("--quick", action="store_true",
                   help=f"a CPU-sized run: {QUICK['steps']} steps, rank {QUICK['rank']}")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.steps, args.rank = QUICK["steps"], QUICK["rank"]
    if not 0 <= args.held_out < 1:
        raise InputError(f"--held-out {args.held_out} must be in [0, 1)")
    if args.lr <= 0 or args.model_lr <= 0:
        raise InputError(f"--lr {args.lr} and --model-lr {args.model_lr} must be positive")
    if args.lambda_task and not args.finetune:
        raise InputError("--lambda-task trains the model: it needs --finetune")
    args.objectives = Objectives(
        order=args.lambda_order, sufficiency=args.lambda_sufficiency,
        comprehensiveness=args.lambda_comprehensiveness, task=args.lambda_task,
        samples=args.samples)
    return args


def teacher_sequences(records: list[dict[str, Any]], source: str) -> list[TeacherSequence]:
    """Sequences and their teacher orders (context codes in the order added) from seed logs
    (targets whose rationale did not reach the argmax are left out):
    a language model's (``input_ids``, ``rationalization`` entries with ``target_position``
    and ``rationale``) or a fairseq translation model's (``source_tokens`` ending with
    ``</s>``, ``target_tokens``, ``rationalizations`` whose ``log`` steps say which token was
    added ``from`` which side)."""
    sequences = []
    for number, record in enumerate(records, 1):
        try:
            if "source_tokens" in record:
                sequence = _translation_teacher(record)
            else:
                ids = torch.tensor(record["input_ids"], dtype=torch.long)
                sequence = TeacherSequence(RationalizationProblem(ids), {
                    int(e["target_position"]): [int(c) for c in e["rationale"]]
                    for e in record["rationalization"] if e.get("reached_argmax", True)})
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{source}, record {number}: not a record of `rationalize --out` "
                             "(a language model's input_ids and rationalization, or a "
                             "translation's source_tokens, target_tokens and "
                             "rationalizations)") from None
        if sequence.orders:
            sequences.append(sequence)
    if not sequences:
        raise InputError(f"{source} holds no rationale that reached the argmax to learn from")
    return sequences


def _translation_teacher(record: dict[str, Any]) -> TeacherSequence:
    source = torch.tensor(record["source_tokens"][:-1], dtype=torch.long)  # without </s>
    problem = RationalizationProblem(torch.tensor(record["target_tokens"], dtype=torch.long),
                                     source)
    offset = {"source": 0, "target": len(source)}
    return TeacherSequence(problem, {
        int(e["target_position"]): [offset[step["from"]] + int(step["added_token_position"])
                                    for step in e["log"]]
        for e in record["rationalizations"] if e.get("reached_argmax", True)})


def results_teacher(results: list[Any]) -> list[TeacherSequence]:
    """Teacher sequences from typed results (those of a call of the text API)."""
    sequences = []
    for result in results:
        if result is None or not result.rationales:
            continue
        source = None if result.source_ids is None else torch.tensor(result.source_ids)
        problem = RationalizationProblem(torch.tensor(result.target_ids), source)
        sequence = TeacherSequence.from_result(problem, result)
        if sequence.orders:
            sequences.append(sequence)
    if not sequences:
        raise InputError("no greedy rationale of the texts reached the argmax (the model "
                         "never predicted their next tokens): nothing to learn from; "
                         "--generate N learns the rationales of the model's own continuations")
    return sequences


def read_texts(args: argparse.Namespace) -> list[str]:
    if args.text is not None:
        return list(args.text)
    from sequential_rationales.validation import utf8_lines

    texts = [line.strip() for line in utf8_lines(Path(args.input)) if line.strip()]
    if not texts:
        raise InputError(f"{args.input} holds no text")
    return texts


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    return {"model": str(Path(args.model).resolve()), "teacher": args.teacher,
            "data": args.data,
            "texts": args.text, "input": args.input, "rank": args.rank, "layer": args.layer,
            "key_layer": args.key_layer,
            "lr": args.lr, "batch_sequences": args.batch_sequences, "seed": args.seed,
            "held_out": args.held_out, "max_steps": args.max_steps, "generate": args.generate,
            "objectives": asdict(args.objectives), "finetune": args.finetune,
            "model_lr": args.model_lr if args.finetune else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rationalizer = load(args.model, args.tokenizer, device=args.device, data=args.data)
    if args.finetune and rationalizer.kind != "language model":
        raise InputError("--finetune serves Hugging Face language models; train the "
                         "extractor of a translation model with the model frozen")
    adapter = rationalizer.text_model.adapter_for
    if args.teacher is not None:
        sequences = teacher_sequences(read_records(args.teacher), args.teacher)
    else:
        rationales = rationalizer.rationalize(read_texts(args), method="greedy",
                                              generate=args.generate,
                                              max_steps=args.max_steps, progress=True)
        sequences = results_teacher(rationales.results)
    held = int(len(sequences) * args.held_out)
    order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(args.seed))
    train = [sequences[i] for i in order[held:].tolist()]
    test = [sequences[i] for i in order[:held].tolist()]

    extractor, optimizer_state, start = None, None, 0
    checkpoint = out / CHECKPOINT
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved["settings"] != settings(args):
            raise InputError(f"{checkpoint} belongs to a run with other settings; use another "
                             "--out or delete it")
        extractor = RationaleExtractor(ExtractorConfig(**saved["config"]))
        extractor.load_state_dict(saved["weights"])
        if args.finetune:  # the model as it was at that step
            rationalizer.text_model.model.load_state_dict(saved["model"])
        extractor.to(adapter(sequences[0].problem).device)
        optimizer_state, start = saved["optimizer"], saved["step"]

    from tqdm.auto import tqdm

    bar = tqdm(total=args.steps, initial=start, desc="training the extractor", unit="step")
    log = _train_log(out / "train_log.jsonl", start)
    board = _tensorboard(out / "tensorboard")

    def on_step(step: int, loss: float, current: RationaleExtractor, optimizer: Any,
                parts: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        log.write(json.dumps({"step": step, "loss": loss, **parts}) + "\n")
        if board is not None:
            board.add_scalar("loss/train", loss, step)
            for name, value in parts.items():
                board.add_scalar(f"objective/{name}", value, step)
        if step % 100 == 0 or step == args.steps:
            _save_checkpoint(checkpoint, current, optimizer, step, args,
                             rationalizer.text_model.model if args.finetune else None)

    try:
        extractor = train_extractor(
            adapter, train, ExtractorConfig(0, rank=args.rank, layer=args.layer,
                                           key_layer=args.key_layer),
            steps=args.steps, lr=args.lr, seed=args.seed, batch_sequences=args.batch_sequences,
            extractor=extractor, optimizer_state=optimizer_state, start_step=start,
            on_step=on_step, objectives=args.objectives, finetune=args.finetune,
            model_lr=args.model_lr)
    finally:
        bar.close()
        log.close()
    extractor.save(out)
    if args.finetune:
        text_model = rationalizer.text_model
        text_model.model.save_pretrained(out / "model")
        text_model.tokenizer.save_pretrained(out / "model")
    summary = {"sequences": len(sequences), "train": len(train), "held_out": len(test),
               "steps": args.steps,
               "train_loss": mean_order_loss(extractor, adapter, train),
               "held_out_loss": mean_order_loss(extractor, adapter, test) if test else None}
    if board is not None:
        board.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"extractor saved to {out}: train loss {summary['train_loss']:.3f}"
          + (f", held-out loss {summary['held_out_loss']:.3f}" if test else ""))
    return summary


def _save_checkpoint(path: Path, extractor: RationaleExtractor, optimizer: Any, step: int,
                     args: argparse.Namespace, model: Any = None) -> None:
    """Written whole, then moved into place: a killed run leaves the previous checkpoint."""
    partial = path.with_suffix(".partial")
    state = {"weights": extractor.state_dict(), "optimizer": optimizer.state_dict(),
             "step": step, "config": asdict(extractor.config), "settings": settings(args)}
    if model is not None:  # fine-tuned jointly: the model's weights at this step
        state["model"] = model.state_dict()
    torch.save(state, partial)
    os.replace(partial, path)


def _train_log(path: Path, start: int) -> Any:
    """The loss log opened for appending after step ``start``: the lines of steps a killed run
    took after its last checkpoint are dropped, since the resumed run takes them again."""
    kept = []
    if start and path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= start:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                break  # a torn last line
    path.write_text("".join(kept), encoding="utf-8")
    return path.open("a", encoding="utf-8")


def _tensorboard(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: train_log.jsonl has the same numbers
        return None
    return SummaryWriter(str(directory))


def console() -> int:
    """The ``rationales-train-rationalizer`` console command."""
    return program_status(main)


if __name__ == "__main__":
    raise SystemExit(console())
