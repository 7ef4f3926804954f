"""ROAR and recursive ROAR (remove and retrain; Hooker et al., 2019; Madsen et al., 2022) of
every attribution method on the Majority Class task.

For each method, the ``k`` % most important bits of every training and test sentence are
replaced by a mask token, a model is trained from scratch on the masked training set, and its
label accuracy on the masked test set is recorded against ``k``. A faithful importance measure
removes the information the label needs, so the accuracy falls faster than with random masks.

* **Task.** :func:`~sequential_rationales_experiments.majority_class.majority_class_sentences`:
  17 bits, ``=``, the majority bit. The explained prediction is the label given the bits and
  ``=``; the importance ranking is over the 17 bits (``=``, the previous token, is never
  masked, nor is the label).
* **Model.** A tiny Hugging Face GPT-2 (2 layers, width 64, 4 heads; random init from a
  config, word-level vocabulary ``0 1 = <mask>``, no downloads), trained in-process with Adam
  on the label only (cross-entropy of the label at the ``=`` position) and word dropout
  (``uniform_length`` over the bits, mixture 0.5: a model compatible with partial inputs, so
  greedy rationales mean something), through the same 4-D attention masks as
  :mod:`sequential_rationales.word_dropout`. Every retraining starts from the same seeded
  initialization and batch order. It is rationalized through
  :class:`~sequential_rationales.adapters.huggingface.HuggingFaceCausalLM`.
* **Masking.** A removed bit is replaced by ``<mask>`` (as NLP-ROAR does), at its position.
  ``k`` % of 17 bits is ``round(17 k / 100)`` bits (halves up), the same for every sentence.
* **Rankings.** Orderings (registered with ``scores``: the gradient and attention
  baselines, ``occlusion``, ``lrp``, ``iba``) rank all bits by the registry's scorer, sorted by
  :func:`~sequential_rationales.baselines.importance_order` (the
  registered method itself stops at the rationale: its ordered search ends at the argmax);
  ``random`` by :func:`~sequential_rationales.perturbation.random_order`. Searches that return
  a set (``greedy``, and any registered method without ``scores``) rank the bits of
  their rationale first, in the order added, then the other bits in a seeded random order
  (:func:`~sequential_rationales.perturbation.random_order`). Random orders, and IBA's noise,
  are seeded per sentence. ``roar.json`` records which of the two kinds each ranking is.
* **ROAR**: the rankings come from the model trained at ``k = 0`` on unmasked data; the masks
  of larger ``k`` contain those of smaller ``k``. **Recursive ROAR**: the ranking at ``k_i``
  is recomputed by the model retrained at ``k_{i-1}`` on the data masked at ``k_{i-1}``, and
  the ``n_i - n_{i-1}`` highest-ranked bits not yet masked are masked as well. At the first
  nonzero ``k`` both are the same (the ranking model is the ``k = 0`` model), so it is
  computed once.
* **Performance.** Label accuracy (argmax over the vocabulary) on the masked test set, and the
  mean ``log p(label)``; also ``label_share_masked``, the share of the masked test bits that
  equal the label. The ROAR caveat: on this task removing label-valued bits can leak the label
  into the pattern of masks (a model can count the masks), so a method that finds the
  label-valued bits need not lower the accuracy; ``random`` is the floor to compare with, and
  :func:`random_mask_bayes_accuracy` the best accuracy masks independent of the bits allow
  (a row of the tables, the dotted line of the figure).

Every step (the base model, then each method, mode and ``k``) writes
``OUT/<mode>/<method>/k<K>.json`` atomically (its model next to it), last; a rerun with the
same settings skips it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sequential_rationales import RationalizationProblem, list_methods, rationalize
from sequential_rationales.baselines import importance_order
from sequential_rationales.methods import TRAINED_METHODS, ScoreFn, get_method
from sequential_rationales.metrics import METHOD_LABELS, markdown_table
from sequential_rationales.perturbation import random_order
from sequential_rationales.results import write_json_atomic
from sequential_rationales.validation import InputError
from sequential_rationales.word_dropout import WordDropout, self_attention_mask
from sequential_rationales_experiments.majority_class import (
    majority_class_sentences,
    majority_class_true_probability,
)

NUM_BITS = 17
VOCAB = {"0": 0, "1": 1, "=": 2, "<mask>": 3}
MASK_ID = VOCAB["<mask>"]
SEPARATOR = NUM_BITS  # position of "=", the previous token of the label
LABEL = NUM_BITS + 1  # position of the label, the explained target
MODES = ("roar", "recursive")
# The default methods, in this order, when registered; ``exhaustive`` is never one (it
# enumerates subsets and returns no ranking).
DEFAULT_METHODS = ("greedy", "gradient_norm", "signed_gradient", "integrated_gradient",
                   "attention_rollout", "last_attention", "all_attention", "occlusion",
                   "random", "lrp", "iba")
EXCLUDED_METHODS = ("exhaustive", *TRAINED_METHODS)


@dataclass(frozen=True)
class Settings:
    """Everything a step's result depends on (recorded in every step's file)."""

    train_sentences: int = 5_000
    test_sentences: int = 1_000
    k: tuple[int, ...] = (0, 10, 20, 30, 50, 70, 90)
    train_steps: int = 1_000
    batch_size: int = 128
    lr: float = 5e-3
    word_dropout_mixture: float = 0.5
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    integrated_gradient_steps: int | None = None  # None: the adapter's default (100)
    seed: int = 0


# Quick: about 4 s of CPU per retraining. Measured on 500 sentences: 200 steps of 128 learn
# the unmasked task (0.997 test accuracy) and reach about the Bayes accuracy at 40 % random
# masks (0.75 of 0.77); 150 steps of 64 left some heavily masked sets unlearned (0.51, the
# prior). Integrated gradients with 20 steps instead of 100 (five times faster rankings).
QUICK = Settings(train_sentences=500, test_sentences=300, k=(0, 20, 40, 60, 80),
                 train_steps=200, integrated_gradient_steps=20)


def default_methods() -> list[str]:
    """The default methods that are registered now (``lrp`` and ``iba`` when present)."""
    registered = list_methods()
    return [m for m in DEFAULT_METHODS if m in registered]


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` without repeats; an unknown or excluded name is a one-line error."""
    registered = [m for m in list_methods() if m not in EXCLUDED_METHODS]
    bad = [m for m in methods if m not in registered]
    if bad:
        raise InputError(f"unknown method(s) {', '.join(bad)} for ROAR; choose from "
                         f"{', '.join(registered)}")
    return list(dict.fromkeys(methods))


def check_k(values: Sequence[int]) -> tuple[int, ...]:
    """The k grid: sorted, without repeats, 0 included (the unmasked baseline)."""
    bad = [k for k in values if not 0 <= k <= 100]
    if bad:
        raise InputError(f"k must be percentages in 0..100, got {bad}")
    grid = tuple(sorted({0, *values}))
    if len(grid) < 2:
        raise InputError("the k grid needs a value above 0")
    return grid


def bits_to_mask(k: int, num_bits: int = NUM_BITS) -> int:
    """``k`` % of ``num_bits``, rounded half up."""
    return math.floor(k * num_bits / 100 + 0.5)


@contextlib.contextmanager
def one_cpu_thread(device: str) -> Iterator[None]:
    """Run on one CPU thread (restored afterwards): a model this small gains nothing from more,
    and on a busy CPU the spin-waiting threads made training 10-30 times slower (measured)."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def random_mask_bayes_accuracy(masked: int, num_bits: int = NUM_BITS) -> float:
    """The best label accuracy when ``masked`` bits, chosen independently of their values, are
    hidden: predict the likelier label given the visible bits. What ``random`` should reach;
    a method whose masks depend on the bits can lie above it only by leaking the label."""
    visible = num_bits - masked
    total = 0.0
    for ones in range(visible + 1):
        p_one = majority_class_true_probability([1] * ones + [0] * (visible - ones), num_bits)
        total += math.comb(visible, ones) / 2 ** visible * max(p_one, 1 - p_one)
    return total


# -- data ------------------------------------------------------------------------------------
def make_data(settings: Settings) -> dict[str, Tensor]:
    """``{"train": [N, 19], "test": [M, 19]}`` token ids (bits, ``=``, label), seeded."""
    generator = torch.Generator().manual_seed(settings.seed)
    data = {}
    for split, n in (("train", settings.train_sentences), ("test", settings.test_sentences)):
        lines = majority_class_sentences(n, NUM_BITS, generator)
        data[split] = torch.tensor([[VOCAB[w] for w in line.split()] for line in lines])
    return data


def mask_sentences(ids: Tensor, masked: Sequence[Sequence[int]]) -> Tensor:
    """A copy of ``ids`` with ``<mask>`` at each sentence's masked bit positions."""
    out = ids.clone()
    for row, positions in enumerate(masked):
        if any(not 0 <= p < NUM_BITS for p in positions):
            raise ValueError(f"sentence {row}: only bits (positions 0..{NUM_BITS - 1}) are "
                             f"masked, got {sorted(positions)}")
        out[row, list(positions)] = MASK_ID
    return out


def extend_masks(rankings: Sequence[Sequence[int]], previous: Sequence[Sequence[int]],
                 count: int) -> list[list[int]]:
    """Each sentence's ``previous`` masked bits plus its highest-ranked other bits, ``count``
    masked bits in all (sorted). ROAR passes no previous masks; recursive ROAR those of the
    previous ``k``."""
    masks = []
    for ranking, before in zip(rankings, previous, strict=True):
        chosen = set(before)
        if len(chosen) > count:
            raise ValueError(f"{len(chosen)} bits are masked already, more than {count}")
        for position in ranking:
            if len(chosen) == count:
                break
            chosen.add(position)
        if len(chosen) < count:
            raise ValueError(f"a ranking of {len(ranking)} bits cannot mask {count}")
        masks.append(sorted(chosen))
    return masks


# -- model -----------------------------------------------------------------------------------
def new_model(settings: Settings, device: str) -> Any:
    """A random-init GPT-2 for the task, the same for a given seed (the global RNG is left
    as it was)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(VOCAB), n_positions=NUM_BITS + 2, n_layer=settings.n_layer,
                        n_embd=settings.n_embd, n_head=settings.n_head,
                        n_inner=2 * settings.n_embd, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0,
                        # GPT-2's defaults (50256) lie outside this vocabulary; never generated.
                        bos_token_id=VOCAB["="], eos_token_id=VOCAB["="])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = GPT2LMHeadModel(config)
    return model.to(device)


def train_model(train: Tensor, settings: Settings, device: str) -> Any:
    """Train a new model on the label of ``train`` sentences (masked or not) with word
    dropout; returns it in eval mode."""
    from sequential_rationales_integrations.huggingface.word_dropout import additive_mask

    model = new_model(settings, device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    # Linear decay to 0: with a constant rate the last step's model swung between 0.8 and 1.0
    # test accuracy from one schedule length to the next (measured).
    decay = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1 - step / settings.train_steps)
    dropout = WordDropout(settings.word_dropout_mixture, "uniform_length")
    generator = torch.Generator().manual_seed(settings.seed)
    inputs, labels = train[:, :LABEL].to(device), train[:, LABEL].to(device)
    batch = min(settings.batch_size, len(train))
    # Only the bits are dropped; "=" is the predicting query, which always sees itself.
    bits = torch.zeros(batch, LABEL, dtype=torch.bool)
    bits[:, :NUM_BITS] = True
    for _ in range(settings.train_steps):
        rows = torch.randint(len(train), (batch,), generator=generator).to(device)
        keep = dropout.sample_keep(bits, settings.n_head, generator)
        mask = None if keep is None else additive_mask(
            self_attention_mask(keep.to(device))[:, None], model)
        logits = model(input_ids=inputs[rows], attention_mask=mask, logits_to_keep=1).logits
        loss = torch.nn.functional.cross_entropy(logits[:, -1].float(), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay.step()
    return model.eval()


@torch.no_grad()
def evaluate(model: Any, test: Tensor) -> dict[str, float]:
    """Label accuracy (argmax over the vocabulary) and mean ``log p(label)`` on full inputs."""
    device = next(model.parameters()).device
    correct, log_prob = 0, 0.0
    for chunk in test.split(1024):
        logits = model(input_ids=chunk[:, :LABEL].to(device), logits_to_keep=1).logits[:, -1]
        log_probs = torch.log_softmax(logits.float(), -1).cpu()
        labels = chunk[:, LABEL]
        correct += int((log_probs.argmax(-1) == labels).sum())
        log_prob += float(log_probs.gather(1, labels[:, None]).sum())
    return {"accuracy": correct / len(test), "mean_log_prob": log_prob / len(test)}


# -- rankings --------------------------------------------------------------------------------
def order_scorer(method: str) -> ScoreFn | None:
    """The registered ordering's scorer (the registered method itself stops at the rationale);
    ``None`` for a search (``greedy``) or ``random``."""
    return get_method(method).scores


def ranking_kind(method: str) -> str:
    """``"scores"`` (a full ordering) or ``"rationale+random"`` (a search's rationale first)."""
    return "scores" if method == "random" or order_scorer(method) else "rationale+random"


def sentence_seed(seed: int, split: str, index: int) -> int:
    """The random-order seed of one sentence (a different order per sentence)."""
    return random.Random(f"{seed}/{split}/{index}").getrandbits(31)


def bit_ranking(method: str, adapter: Any, ids: Tensor, seed: int,
                integrated_gradient_steps: int | None) -> list[int]:
    """The 17 bit positions of one sentence, most important for its label first."""
    problem = RationalizationProblem(ids, targets=[LABEL])
    scores_of = order_scorer(method)
    if method == "random":
        order = random_order(problem, LABEL, seed)
    elif scores_of is not None:
        scores = scores_of(adapter, problem, seed=seed,
                           integrated_gradient_steps=integrated_gradient_steps)[LABEL]
        if bool(scores.isnan().any()):  # occlusion's +inf for "=" is expected
            raise ValueError(f"the {method} scores contain NaN values")
        order = importance_order(problem, LABEL, scores)
    else:
        result = rationalize(adapter, problem, method, seed=seed, progress=False,
                             integrated_gradient_steps=integrated_gradient_steps)
        first = [c.position for c in result.rationales[0].rationale]
        order = first + [c for c in random_order(problem, LABEL, seed) if c not in first]
    return [c for c in order if c < NUM_BITS]


def rank_split(method: str, model: Any, ids: Tensor, split: str, settings: Settings
               ) -> list[list[int]]:
    """:func:`bit_ranking` of every sentence of one split."""
    from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

    adapter = HuggingFaceCausalLM(model.eval())
    return [bit_ranking(method, adapter, row, sentence_seed(settings.seed, split, i),
                        settings.integrated_gradient_steps) for i, row in enumerate(ids)]


# -- steps -----------------------------------------------------------------------------------
def _settings_record(settings: Settings, **extra: Any) -> dict[str, Any]:
    """What one step depends on: the settings except the k grid (a ROAR step depends only on
    its own k, a recursive step on the ks before it, given as ``previous_k``)."""
    record = asdict(settings)
    del record["k"]
    return {**record, **extra}


def _step_paths(out: Path, mode: str, method: str, k: int) -> tuple[Path, Path]:
    folder = out / mode / method
    return folder / f"k{k:03d}.json", folder / f"k{k:03d}.pt"


def _finished(path: Path, model_path: Path, settings: dict) -> dict | None:
    """The step's record if it is complete and was made with ``settings``, else ``None``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("settings") != settings or (
            not model_path.is_file()):
        return None
    return record


def _label_share(test: Tensor, masked: Sequence[Sequence[int]]) -> float | None:
    """Share of the masked test bits equal to their sentence's label (1 leaks it fully)."""
    same = total = 0
    for row, positions in zip(test.tolist(), masked):
        same += sum(row[p] == row[LABEL] for p in positions)
        total += len(positions)
    return same / total if total else None


Masks = dict[str, list[list[int]]]  # split -> masked bit positions of each sentence


class Experiment:
    """Runs (or resumes) every step; ``log`` receives one progress line per step."""

    def __init__(self, settings: Settings, methods: Sequence[str], out: Path, device: str,
                 log: Callable[[str], None] = print) -> None:
        self.settings, self.methods, self.out = settings, list(methods), out
        self.device, self.log = device, log
        self.data = make_data(settings)
        self.unmasked: Masks = {split: [[] for _ in ids] for split, ids in self.data.items()}
        # Steps: the base model, then per method ROAR at every nonzero k and recursive ROAR
        # from the second nonzero k on (the first is ROAR's).
        self.total = 1 + len(self.methods) * (2 * len(settings.k) - 3)
        self.done = 0
        self.trained = 0  # models trained by this run (the rest were finished before)
        self._models: dict[tuple[str, str, int], Any] = {}

    def _model(self, mode: str, method: str, k: int) -> Any:
        """A step's model: the one trained in this run, else the one saved with the step."""
        key = (mode, method, k)
        if key not in self._models:
            model = new_model(self.settings, self.device)
            state = torch.load(_step_paths(self.out, mode, method, k)[1],
                               map_location=self.device, weights_only=True)
            model.load_state_dict(state)
            self._models[key] = model.eval()
        return self._models[key]

    def _step(self, mode: str, method: str, k: int, make_masks: Callable[[], Masks],
              extra: dict[str, Any]) -> dict[str, Any]:
        """Train and evaluate on the data masked by ``make_masks()``, unless finished."""
        path, model_path = _step_paths(self.out, mode, method, k)
        kind = None if mode == "base" else ranking_kind(method)
        settings = _settings_record(self.settings, mode=mode, method=method, k_step=k,
                                    ranking=kind, **extra)
        self.done += 1
        where = f"[{self.done}/{self.total}] {mode} {method} k={k}"
        record = _finished(path, model_path, settings)
        if record is not None:
            self.log(f"{where}: finished earlier, accuracy {record['accuracy']:.3f}")
            return record
        start = time.perf_counter()
        masks = make_masks()
        train = mask_sentences(self.data["train"], masks["train"])
        test = mask_sentences(self.data["test"], masks["test"])
        model = train_model(train, self.settings, self.device)
        self.trained += 1
        self._models[(mode, method, k)] = model
        record = {"settings": settings, "mode": mode, "method": method, "k": k,
                  "bits_masked": bits_to_mask(k), **evaluate(model, test),
                  "label_share_masked": _label_share(self.data["test"], masks["test"]),
                  "ranking": kind, "masks": masks,
                  "seconds": time.perf_counter() - start}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = model_path.with_name(model_path.name + ".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(model_path)
        write_json_atomic(record, path)  # last: it marks the step finished
        self.log(f"{where}: accuracy {record['accuracy']:.3f}, log p(label) "
                 f"{record['mean_log_prob']:.3f} ({record['seconds']:.1f} s)")
        return record

    def _rankings(self, method: str, model: Any, masks: Masks) -> Masks:
        """Every sentence's bit ranking by ``model``, on the data masked by ``masks``."""
        start = time.perf_counter()
        rankings = {split: rank_split(method, model, mask_sentences(ids, masks[split]), split,
                                      self.settings)
                    for split, ids in self.data.items()}
        self.log(f"  {method}: ranked {sum(map(len, rankings.values()))} sentences "
                 f"({time.perf_counter() - start:.1f} s)")
        return rankings

    def _roar_rankings(self, method: str) -> Masks:
        """The k = 0 model's rankings of the unmasked data, kept in a file for reruns."""
        path = self.out / "roar" / method / "rankings.json"
        settings = _settings_record(self.settings, method=method, ranking=ranking_kind(method))
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("settings") == settings:
                return record["rankings"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            pass
        rankings = self._rankings(method, self._model("base", "none", 0), self.unmasked)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic({"settings": settings, "rankings": rankings}, path)
        return rankings

    def _roar(self, method: str, base: dict) -> dict[int, dict]:
        rankings: list[Masks] = []  # computed on the first step that needs them

        def masks(k: int) -> Masks:
            if not rankings:
                rankings.append(self._roar_rankings(method))
            return {split: extend_masks(ranked, self.unmasked[split], bits_to_mask(k))
                    for split, ranked in rankings[0].items()}

        results = {0: base}
        for k in self.settings.k[1:]:
            results[k] = self._step("roar", method, k, lambda k=k: masks(k), {})
        return results

    def _recursive(self, method: str, roar: dict[int, dict]) -> dict[int, dict]:
        grid = self.settings.k
        results = {0: roar[0], grid[1]: roar[grid[1]]}
        for i, k in enumerate(grid[2:], 2):
            before = grid[i - 1]
            previous = results[before]["masks"]

            def masks(k=k, before=before, previous=previous) -> Masks:
                mode = "roar" if before == grid[1] else "recursive"
                ranked = self._rankings(method, self._model(mode, method, before), previous)
                return {split: extend_masks(ranked[split], previous[split], bits_to_mask(k))
                        for split in ranked}

            results[k] = self._step("recursive", method, k, masks,
                                    {"previous_k": list(grid[:i])})
        return results

    def run(self) -> dict[str, dict[str, dict[int, dict]]]:
        """``{mode: {method: {k: record}}}`` for both modes (k = 0: the base model)."""
        with one_cpu_thread(self.device):
            base = self._step("base", "none", 0, lambda: self.unmasked, {})
            results: dict[str, dict[str, dict[int, dict]]] = {mode: {} for mode in MODES}
            for method in self.methods:
                roar = results["roar"][method] = self._roar(method, base)
                results["recursive"][method] = self._recursive(method, roar)
                # Keep the base model only: the next method starts its own chain.
                self._models = {key: m for key, m in self._models.items() if key[0] == "base"}
        return results


# -- outputs ---------------------------------------------------------------------------------
def summary_rows(results: dict[str, dict[str, dict[int, dict]]]) -> list[dict[str, Any]]:
    """One row per (mode, method, k)."""
    keys = ("bits_masked", "accuracy", "mean_log_prob", "label_share_masked", "ranking")
    return [{"mode": mode, "method": method, "k": k,
             **{key: record.get(key) for key in keys}}
            for mode, by_method in results.items() for method, by_k in by_method.items()
            for k, record in sorted(by_k.items())]


BAYES_LABEL = "Bayes, random masks"


def markdown_tables(rows: list[dict[str, Any]], grid: Sequence[int]) -> str:
    """Methods x k accuracy, one table per mode, and the Bayes accuracy of random masks."""
    parts = []
    bayes = {f"k={k}": random_mask_bayes_accuracy(bits_to_mask(k)) for k in grid}
    for mode, title in (("roar", "ROAR"), ("recursive", "Recursive ROAR")):
        table: dict[str, dict[str, float]] = {BAYES_LABEL: bayes}
        for row in rows:
            if row["mode"] == mode:
                label = METHOD_LABELS.get(row["method"], row["method"])
                table.setdefault(label, {})[f"k={row['k']}"] = row["accuracy"]
        columns = [f"k={k}" for k in grid]
        parts.append(f"### {title}: test accuracy\n\n"
                     + markdown_table(table, columns, dict.fromkeys(columns, 3)))
    return "\n\n".join(parts) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict[str, Any]], grid: Sequence[int], out: Path) -> list[Path]:
    """``OUT.png`` and ``OUT.pdf``: accuracy against k, ROAR and recursive ROAR side by side,
    ``random`` dashed, the Bayes accuracy of random masks dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sequential_rationales_experiments.figures import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    # tab20 without its greys (entries 14, 15), dark shades first: distinct colors for a
    # dozen methods, grey and black left to the reference lines.
    palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]
    palette = palette[::2] + palette[1::2]
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "random"))
    colors = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    for ax, (mode, title) in zip(axes, (("roar", "ROAR"), ("recursive", "Recursive ROAR"))):
        for method in dict.fromkeys(r["method"] for r in rows if r["mode"] == mode):
            points = [(r["k"], r["accuracy"]) for r in rows
                      if r["mode"] == mode and r["method"] == method]
            ks, accuracy = zip(*points)
            ax.plot(ks, accuracy, marker="o", markersize=3,
                    linestyle="--" if method == "random" else "-",
                    color="black" if method == "random" else colors[method],
                    label=METHOD_LABELS.get(method, method))
        ax.plot(grid, [random_mask_bayes_accuracy(bits_to_mask(k)) for k in grid], color="grey",
                linestyle=":", label=BAYES_LABEL)
        ax.set_title(title)
        ax.set_xlabel("bits masked (k %)")
    axes[0].set_ylabel("test accuracy of the retrained model")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return save_figure(fig, out)


def _step_seconds(results: dict) -> float:
    """Seconds of every step, in this run or before (shared records counted once)."""
    records = {id(r): r for by_method in results.values() for by_k in by_method.values()
               for r in by_k.values()}
    return sum(r["seconds"] for r in records.values())


def write_outputs(results: dict, settings: Settings, methods: Sequence[str], out: Path,
                  test: Tensor, seconds: float) -> dict[str, Any]:
    """``table.csv``, ``table.md``, ``roar.json``, ``roar.png`` and ``roar.pdf``."""
    rows = summary_rows(results)
    write_csv(rows, out / "table.csv")
    text = markdown_tables(rows, settings.k)
    (out / "table.md").write_text(text, encoding="utf-8")
    labels = test[:, LABEL]
    chance = max(float((labels == 1).float().mean()), float((labels == 0).float().mean()))
    summary = {"settings": {**_settings_record(settings), "k": list(settings.k)},
               "methods": list(methods), "ranking": {m: ranking_kind(m) for m in methods},
               "majority_label_rate": chance,
               "bayes_accuracy_random_masks": {
                   k: random_mask_bayes_accuracy(bits_to_mask(k)) for k in settings.k},
               "seconds": seconds, "step_seconds": _step_seconds(results), "rows": rows}
    write_json_atomic(summary, out / "roar.json")
    plot(rows, settings.k, out / "roar")
    return {**summary, "table": text}
