"""The learned rationale extractor: its ranking loss against a brute-force Plackett-Luce
likelihood, training that lowers the loss on greedy's rationales, seeded and resumable runs,
the ``amortized`` method (rationales that satisfy the argmax condition), saving and the
refusals."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch

from sequential_rationales import InputError, RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.extractor import (
    EXACT_DISTANCES,
    ExtractorConfig,
    RationaleExtractor,
    TeacherSequence,
    distance_bucket,
    extractor_scores,
    hidden_states,
    mean_order_loss,
    order_loss,
    train_extractor,
)
from sequential_rationales.search import score_subsets

from .conftest import VOCAB

pytest.importorskip("transformers")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One thread: tiny models run fastest so, and the trained models (and with them the
    thresholds below) are the same on every machine, whatever its OpenMP setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_distance_buckets_are_exact_near_and_logarithmic_far():
    d = torch.arange(0, 2000)
    b = distance_bucket(d, 32)
    assert b[:EXACT_DISTANCES].tolist() == list(range(EXACT_DISTANCES))
    assert bool((b[1:] >= b[:-1]).all()) and int(b.max()) == 31
    assert int(b[16]) == EXACT_DISTANCES + 4  # one doubling: four buckets further


def plackett_luce_nll(scores: list[float], order: list[int], context: int) -> float:
    """The plain formula: each pick against the positions not picked before it."""
    remaining = set(range(context)) - {order[0]}
    total = 0.0
    for pick in order[1:]:
        total += math.log(sum(math.exp(scores[c]) for c in remaining)) - scores[pick]
        remaining.discard(pick)
    return total


def test_order_loss_is_the_plackett_luce_likelihood():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 7, generator=generator).tril()
    scores = scores.masked_fill(torch.ones(7, 7).triu(1).bool(), float("-inf"))
    targets = [3, 5, 6, 7]
    orders = [[2, 0, 1], [4], [5, 1, 3, 0], [6, 2]]  # t - 1 first; one order of one token
    expected = [plackett_luce_nll(scores[t - 1, :t].tolist(), o, t)
                for t, o in zip(targets, orders)]
    picks = sum(len(o) - 1 for o in orders)
    assert float(order_loss(scores, targets, orders)) == pytest.approx(sum(expected) / picks)
    assert float(order_loss(scores, [4], [[3]])) == 0.0


def teachers(adapter, count: int, length: int, seed: int) -> list[TeacherSequence]:
    """Greedy rationales of random sequences: the default teacher."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        problem = RationalizationProblem(torch.randint(0, VOCAB, (length,), generator=generator))
        result = rationalize(adapter, problem, "greedy", precision="fp32")
        out.append(TeacherSequence(problem, {r.target_position: r.target_rationale
                                             for r in result.rationales}))
    return out


@pytest.fixture(scope="module")
def trained(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    train = teachers(adapter, 12, 12, seed=0)
    torch.manual_seed(0)
    untrained = RationaleExtractor(ExtractorConfig(hidden_size=32, rank=8))
    losses: list[float] = []
    extractor = train_extractor(adapter, train, ExtractorConfig(0, rank=8), steps=120, lr=1e-2,
                                seed=0, batch_sequences=4,
                                on_step=lambda step, loss, *_: losses.append(loss))
    return adapter, train, untrained, extractor, losses


def test_training_lowers_the_loss_on_the_teachers_rationales(trained):
    adapter, train, untrained, extractor, losses = trained
    assert len(losses) == 120
    assert sum(losses[-20:]) / 20 < 0.8 * sum(losses[:20]) / 20
    assert mean_order_loss(extractor, adapter, train) < 0.8 * mean_order_loss(
        untrained, adapter, train)


def test_saved_extractors_score_alike(trained, tmp_path):
    adapter, _, _, extractor, _ = trained
    problem = RationalizationProblem(torch.tensor([3, 5, 7, 2, 9, 4]))
    loaded = RationaleExtractor.load(extractor.save(tmp_path / "ex"))
    for t, s in extractor_scores(extractor, adapter, problem).items():
        assert torch.equal(s, extractor_scores(loaded, adapter, problem)[t])


def test_training_is_seeded_and_resumes_where_it_stopped(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    train = teachers(adapter, 6, 8, seed=1)
    config = ExtractorConfig(0, rank=4)
    whole = train_extractor(adapter, train, config, steps=10, seed=3, batch_sequences=2)
    again = train_extractor(adapter, train, config, steps=10, seed=3, batch_sequences=2)
    saved = {}

    def keep(step, loss, extractor, optimizer, parts):
        if step == 4:
            saved["weights"] = {k: v.clone() for k, v in extractor.state_dict().items()}
            saved["optimizer"] = optimizer.state_dict()

    train_extractor(adapter, train, config, steps=4, seed=3, batch_sequences=2, on_step=keep)
    resumed = RationaleExtractor(whole.config)
    resumed.load_state_dict(saved["weights"])
    resumed = train_extractor(adapter, train, steps=10, seed=3, batch_sequences=2,
                              extractor=resumed, optimizer_state=saved["optimizer"],
                              start_step=4)
    for a, b, c in zip(whole.parameters(), again.parameters(), resumed.parameters()):
        assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-6)


def test_hidden_states_are_those_of_the_full_sequence(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    ids = torch.tensor([3, 5, 7, 2, 9])
    states = hidden_states(adapter, RationalizationProblem(ids))
    expected = tiny_gpt2(input_ids=ids[None], output_hidden_states=True).hidden_states[-1][0]
    # The last block's output is what the final layer norm receives.
    assert torch.allclose(tiny_gpt2.transformer.ln_f(states), expected, atol=1e-5)


def test_keys_read_another_block_of_the_same_pass(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    ids = torch.tensor([3, 5, 7, 2, 9])
    states = hidden_states(adapter, RationalizationProblem(ids), -1, 0)
    out = tiny_gpt2(input_ids=ids[None], output_hidden_states=True)
    assert states.shape == (2, 5, 32)
    assert torch.allclose(tiny_gpt2.transformer.ln_f(states[0]), out.hidden_states[-1][0],
                          atol=1e-5)
    assert torch.allclose(states[1], out.hidden_states[1][0], atol=1e-5)  # block 0's output
    # An extractor file written before key_layer existed read its keys from ``layer``.
    old = RationaleExtractor(ExtractorConfig(hidden_size=32, key_layer=None))
    folder = old.save(Path(tempfile.mkdtemp()))
    config = json.loads((folder / "extractor.json").read_text())
    del config["key_layer"]
    (folder / "extractor.json").write_text(json.dumps(config))
    assert RationaleExtractor.load(folder).config.key_layer is None


def test_refusals_are_one_sentence(tiny_gpt2, toy_seq2seq):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(torch.tensor([3, 5, 7, 2]))
    with pytest.raises(InputError, match="needs a trained rationale extractor"):
        rationalize(adapter, problem, "amortized")
    other = RationaleExtractor(ExtractorConfig(hidden_size=48))
    with pytest.raises(InputError, match="trained for another model"):
        rationalize(adapter, problem, "amortized", extractor=other)
    with pytest.raises(InputError, match="holds no rationale extractor"):
        RationaleExtractor.load(".")
    with pytest.raises(InputError, match="a layers\\(\\) method"):
        hidden_states(toy_seq2seq, RationalizationProblem(torch.tensor([0, 4, 5]),
                                                          torch.tensor([1, 2])))


def test_amortized_rationales_are_the_first_sufficient_prefix_of_the_extractors_order(trained):
    """Every rationale satisfies the paper's condition: brute force over the prefixes of the
    extractor's order (previous token first)."""
    adapter, _, _, extractor, _ = trained
    problem = RationalizationProblem(torch.tensor([1, 4, 4, 9, 2, 6, 2]))
    result = rationalize(adapter, problem, "amortized", extractor=extractor)
    scores = extractor_scores(extractor, adapter, problem)
    for r in result.rationales:
        t = r.target_position
        ranked = sorted(range(t), key=lambda c: (-float(scores[t][c]), c))
        order = [t - 1] + [c for c in ranked if c != t - 1]
        goal = int(problem.target_ids[t])
        prefixes = [tuple(sorted(order[:k])) for k in range(1, t + 1)]
        table = score_subsets(adapter, problem, prefixes, [goal] * len(prefixes))
        reached = [int(p) == goal for p in table.prediction]
        first = next((k for k, ok in enumerate(reached) if ok), None)
        if first is None:
            assert not r.reached_argmax and len(r.target_rationale) == t
        else:
            assert r.reached_argmax and len(r.target_rationale) == first + 1


def test_the_seed_baseline_function_takes_the_extractor(trained):
    from huggingface.rationalization import baseline_rationalize_lm

    from .test_hf_rationalization import CharTokenizer

    adapter, _, _, extractor, _ = trained
    ids = torch.tensor([3, 5, 7, 2, 9, 4])
    rationales, log = baseline_rationalize_lm(adapter.model, ids, CharTokenizer(),
                                              "amortized", verbose=False, extractor=extractor)
    direct = rationalize(adapter, RationalizationProblem(ids), "amortized", extractor=extractor)
    assert rationales == [r.target_rationale for r in direct.rationales]
    assert log["method"] == "amortized" and log["settings"]["extractor"]["rank"] == 8


# Translation models: the source codes are keys too (encoder states), the target prefix as for
# a language model.

def marian():
    from .test_hf_seq2seq import tiny_model

    return tiny_model("marian", seed=4)


def translation_teachers(model, count: int, seed: int):
    """Greedy rationales (source and target codes, in the order added) of random pairs."""
    from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq

    from .test_hf_seq2seq import sentence_pair

    out = []
    for i in range(count):
        source, target = sentence_pair(model, seed + i, source_len=4 + i % 3, target_len=5)
        adapter = HuggingFaceSeq2Seq(model, source_length=len(source))
        problem = RationalizationProblem(target, source[:-1])
        result = rationalize(adapter, problem, "greedy", precision="fp32")
        s = problem.num_source
        out.append(TeacherSequence(problem, {
            r.target_position: [c.position + (s if c.stream == "target" else 0)
                                for c in r.rationale] for r in result.rationales}))
    return out


def seq2seq_adapter(model):
    from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq

    return lambda problem: HuggingFaceSeq2Seq(model, source_length=problem.num_source + 1)


def test_translation_hidden_states_are_the_encoders_and_the_decoders(tiny_gpt2):
    model = marian()
    source = torch.tensor([5, 7, 9, 11, 2])  # ends with </s>
    target = torch.tensor([1, 4, 6, 8])  # starts with the decoder's start id
    problem = RationalizationProblem(target, source[:-1])
    states = hidden_states(seq2seq_adapter(model)(problem), problem)
    with torch.no_grad():
        out = model(input_ids=source[None], decoder_input_ids=target[None],
                    output_hidden_states=True)
    assert states.shape == (4 + 4, 16)
    assert torch.allclose(states[:4], out.encoder_hidden_states[-1][0, :4], atol=1e-5)
    assert torch.allclose(states[4:], out.decoder_hidden_states[-1][0], atol=1e-5)


def test_fairseq_translation_hidden_states(tmp_path):
    pytest.importorskip("fairseq")
    from sequential_rationales.adapters.fairseq import FairseqTranslationModel

    from .fairseq_helpers import tiny_translation

    model, _, _ = tiny_translation()
    source = torch.tensor([5, 7, 9, 2])
    target = torch.tensor([2, 4, 6, 8, 10])
    problem = RationalizationProblem(target, source[:-1])
    states = hidden_states(FairseqTranslationModel(model, source_length=4), problem)
    with torch.no_grad():
        encoded = model.encoder(source[None], src_lengths=torch.tensor([4]))
        _, extra = model.decoder(target[None], encoder_out=encoded, return_all_hiddens=True)
    assert states.shape == (3 + 5, 16)
    assert torch.allclose(states[:3], encoded["encoder_out"][0][:3, 0], atol=1e-5)
    assert torch.allclose(states[3:], extra["inner_states"][-1][:, 0], atol=1e-5)


def diagonal_teachers(model, count: int, seed: int):
    """A teacher with a known rule: after the previous token, the source token on the
    diagonal (source position ``t - 1``, the last one for targets beyond the source)."""
    from .test_hf_seq2seq import sentence_pair

    out = []
    for i in range(count):
        source, target = sentence_pair(model, seed + i, source_len=4 + i % 3, target_len=5)
        problem = RationalizationProblem(target, source[:-1])
        s = problem.num_source
        out.append(TeacherSequence(problem, {t: [s + t - 1, min(t - 1, s - 1)]
                                             for t in problem.targets}))
    return out


def test_a_translation_extractor_learns_and_its_rationales_satisfy_the_condition():
    model = marian()
    adapter_for = seq2seq_adapter(model)
    train = diagonal_teachers(model, 12, seed=0)
    losses: list[float] = []
    extractor = train_extractor(adapter_for, train, ExtractorConfig(0, rank=8), steps=150,
                                lr=1e-2, seed=0, batch_sequences=4,
                                on_step=lambda step, loss, *_: losses.append(loss))
    assert extractor.config.conditional
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    hits = total = 0
    for sequence in diagonal_teachers(model, 6, seed=100):  # unseen pairs
        scores = extractor_scores(extractor, adapter_for(sequence.problem), sequence.problem)
        for t, v in scores.items():
            first = sequence.orders[t][0]
            hits += int(v.masked_fill(torch.arange(len(v)) == first, -1e9).argmax()
                        == sequence.orders[t][1])
            total += 1
    assert hits / total >= 0.9
    sequence = train[0]
    adapter = adapter_for(sequence.problem)
    scores = extractor_scores(extractor, adapter, sequence.problem)
    s = sequence.problem.num_source
    assert all(len(v) == s + t and torch.isfinite(v).all() for t, v in scores.items())
    result = rationalize(adapter, sequence.problem, "amortized", extractor=extractor)
    ordered = {t: [c for c in sorted(range(s + t), key=lambda c: (-float(scores[t][c]), c))]
               for t in scores}
    for r in result.rationales:
        t = r.target_position
        order = [s + t - 1] + [c for c in ordered[t] if c != s + t - 1]
        codes = [c.position + (s if c.stream == "target" else 0) for c in r.rationale]
        assert codes == order[:len(codes)]  # a prefix of the extractor's order
        goal = int(sequence.problem.target_ids[t])
        table = score_subsets(adapter, sequence.problem, [tuple(sorted(codes))], [goal])
        assert (int(table.prediction[0]) == goal) == r.reached_argmax
    # The seed's translation function takes the extractor, and top_k.
    from huggingface.rationalization import baseline_rationalize_conditional_model

    from .test_hf_seq2seq import Tokenizer

    problem = sequence.problem
    source = torch.cat([problem.source_ids, torch.tensor([2])])
    for top_k in (None, 2):
        sources, targets, log = baseline_rationalize_conditional_model(
            model, source, problem.target_ids, Tokenizer(), "amortized", verbose=False,
            extractor=extractor, top_k=top_k)
        direct = rationalize(adapter, problem, "amortized", extractor=extractor, top_k=top_k)
        assert sources == [r.source_rationale for r in direct.rationales]
        assert targets == [r.target_rationale for r in direct.rationales]
    assert all(len(s) + len(t) == 2 for s, t in zip(sources, targets, strict=True))
    # An extractor serves the kind of model it was trained for.
    lm = RationaleExtractor(ExtractorConfig(hidden_size=16))
    with pytest.raises(InputError, match="trained for a language model"):
        rationalize(adapter, sequence.problem, "amortized", extractor=lm)


# Faithfulness: rationales drawn from the extractor's ranking, rewarded by the model.

@pytest.mark.parametrize("size", [2, 3])
def test_the_score_function_estimate_is_the_gradient_of_the_expected_reward(size):
    """Brute force: the exact expected reward over every Plackett-Luce draw of ``size - 1``
    codes after the previous token, against the mean of reward x grad log-likelihood of many
    draws (:func:`draw_rationale`)."""
    from itertools import permutations

    from sequential_rationales.extractor import draw_rationale

    row = torch.tensor([0.3, -0.5, 1.0, 0.1, 0.0], requires_grad=True)
    previous = 4
    reward = {frozenset(s): float(hash(frozenset(s)) % 7) for s in permutations(range(4), 2)}
    reward.update({frozenset([c]): float(c) for c in range(4)})

    def value(codes):
        return reward[frozenset(c for c in codes if c != previous)]

    exact = torch.zeros(())
    for picks in permutations(range(4), size - 1):
        available = [0, 1, 2, 3]
        p = torch.ones(())
        for c in picks:
            p = p * row[c].exp() / row[available].exp().sum()
            available.remove(c)
        exact = exact + p * value(picks)
    (expected,) = torch.autograd.grad(exact, row)
    noise = torch.Generator().manual_seed(0)
    draws = 20000
    total = torch.zeros(())
    for _ in range(draws):
        codes, log_likelihood = draw_rationale(row, previous, size, noise)
        assert codes[0] == previous and len(set(codes)) == size
        total = total + value(codes) * log_likelihood
    (estimate,) = torch.autograd.grad(total / draws, row)
    assert torch.allclose(estimate, expected, atol=0.08), (estimate, expected)


@pytest.fixture(scope="module")
def copy_model():
    """A tiny GPT-2 trained (with word dropout) to copy the token three positions back: the
    one token that makes each prediction, a known right answer for faithfulness."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from sequential_rationales.word_dropout import self_attention_mask, word_dropout_keep_mask
    from sequential_rationales_integrations.huggingface.word_dropout import additive_mask

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        x = copy_sequences(32, generator)
        keep = word_dropout_keep_mask(torch.ones_like(x, dtype=torch.bool), "uniform_length",
                                      generator)
        logits = model(x, attention_mask=additive_mask(self_attention_mask(keep)[:, None],
                                                       model)).logits
        loss = torch.nn.functional.cross_entropy(logits[:, 2:-1].reshape(-1, VOCAB),
                                                 x[:, 3:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def copy_sequences(n: int, generator: torch.Generator) -> torch.Tensor:
    x = torch.randint(0, VOCAB, (n, 10), generator=generator)
    for j in range(3, 10):
        x[:, j] = x[:, j - 3]
    return x


def test_sufficiency_finds_a_token_that_makes_the_prediction(copy_model):
    """Trained on one faithfulness objective alone (no teacher order; rationales of two
    tokens), the extractor ranks first, after the previous token, a token equal to the target
    (the sequences repeat with period three): one that alone predicts the copy. Its distance
    prior learns the period: queries at ``t - 1`` favour keys 2, 5 and 8 back."""
    from sequential_rationales.extractor import Objectives

    adapter = HuggingFaceCausalLM(copy_model)
    generator = torch.Generator().manual_seed(5)
    train = [TeacherSequence(RationalizationProblem(x), {t: [t - 1, 0] for t in range(4, 10)})
             for x in copy_sequences(32, generator)]
    objectives = Objectives(order=0.0, sufficiency=1.0, samples=4, targets=6)
    extractor = train_extractor(adapter, train, ExtractorConfig(0, rank=8), steps=100, lr=3e-2,
                                seed=0, batch_sequences=4, objectives=objectives)
    bias = extractor.distance_bias.detach()
    assert min(bias[2], bias[5], bias[8]) > max(bias[1], bias[3], bias[4], bias[6], bias[7])
    hits = total = 0
    for x in copy_sequences(6, generator):  # unseen sequences
        problem = RationalizationProblem(x)
        for t, v in extractor_scores(extractor, adapter, problem).items():
            if t >= 4:
                v = v.clone()
                v[t - 1] = float("-inf")
                hits += int(x[int(v.argmax())]) == int(x[t])
                total += 1
    assert hits / total >= 0.7  # a third of the candidates hold the target's token


def test_comprehensiveness_finds_tokens_whose_removal_hurts(copy_model):
    """Trained on comprehensiveness alone, the extractor's two-token rationales are ones
    whose removal lowers log p(y_t) more than an untrained extractor's."""
    from sequential_rationales.extractor import Objectives

    adapter = HuggingFaceCausalLM(copy_model)
    generator = torch.Generator().manual_seed(6)
    train = [TeacherSequence(RationalizationProblem(x), {t: [t - 1, 0] for t in range(4, 10)})
             for x in copy_sequences(32, generator)]
    test = [TeacherSequence(RationalizationProblem(x), {t: [t - 1, 0] for t in range(4, 10)})
            for x in copy_sequences(8, generator)]

    def left_without_rationale(extractor):
        values = []
        for sequence in test:
            problem = sequence.problem
            for t, v in extractor_scores(extractor, adapter, problem).items():
                if t >= 4:
                    v = v.clone()
                    v[t - 1] = float("-inf")
                    rest = [c for c in range(t) if c not in (t - 1, int(v.argmax()))]
                    values.append(float(score_subsets(adapter, problem, [rest],
                                                      [problem.goal(t)]).goal_log_prob[0]))
        return sum(values) / len(values)

    config = ExtractorConfig(0, rank=8)
    untrained = train_extractor(adapter, train, config, steps=1, lr=1e-9, seed=0)
    trained = train_extractor(adapter, train, config, steps=100, lr=3e-2, seed=0,
                              batch_sequences=4,
                              objectives=Objectives(order=0.0, comprehensiveness=1.0,
                                                    samples=4, targets=6))
    assert left_without_rationale(trained) < left_without_rationale(untrained) - 0.2


def test_joint_fine_tuning_trains_the_model_and_lowers_its_task_loss(tiny_gpt2):
    import copy

    from sequential_rationales.extractor import Objectives, model_log_probs

    model = copy.deepcopy(tiny_gpt2)
    adapter = HuggingFaceCausalLM(model)
    generator = torch.Generator().manual_seed(7)
    train = [TeacherSequence(RationalizationProblem(torch.randint(0, VOCAB, (8,),
                                                                  generator=generator)),
                             {t: [t - 1, 0] for t in range(2, 8)}) for _ in range(6)]

    def task_loss():
        with torch.no_grad():
            return -float(torch.cat([model_log_probs(
                adapter, s.problem, [tuple(range(t)) for t in s.orders], list(s.orders))
                for s in train]).mean())

    before = task_loss()
    parts = []
    train_extractor(adapter, train, ExtractorConfig(0, rank=4), steps=30, lr=1e-2, seed=0,
                    batch_sequences=3, finetune=True, model_lr=3e-3,
                    objectives=Objectives(task=1.0, sufficiency=0.5, targets=7),
                    on_step=lambda *args: parts.append(args[-1]))
    assert set(parts[-1]) == {"order", "task", "faithfulness", "model_sufficiency"}
    assert task_loss() < before - 0.1
    assert not torch.equal(model.lm_head.weight, tiny_gpt2.lm_head.weight)
    with pytest.raises(InputError, match="needs finetune=True"):
        train_extractor(adapter, train, steps=1, objectives=Objectives(task=1.0))
    with pytest.raises(InputError, match="samples must be an integer >= 2"):
        Objectives(samples=1)


def test_gold_loss_is_the_first_pick_likelihood():
    from sequential_rationales.extractor import gold_loss

    scores = torch.tensor([[0.5, -1.0, 2.0, 0.1], [1.0, 0.0, -0.5, 0.3]])
    # Target 1 (row 0): previous code 0, gold {0, 2}: the pick must be 2 among {1, 2, 3}.
    # Target 2 (row 1): previous code 1, gold {0, 3} among {0, 2, 3}.
    first = -math.log(math.exp(2.0) / (math.exp(-1.0) + math.exp(2.0) + math.exp(0.1)))
    second = -math.log((math.exp(1.0) + math.exp(0.3))
                       / (math.exp(1.0) + math.exp(-0.5) + math.exp(0.3)))
    value = gold_loss(scores, [1, 2], [[0, 2], [0, 3]], [0, 1])
    assert float(value) == pytest.approx((first + second) / 2)
    assert float(gold_loss(scores, [1], [[0]], [0])) == 0.0  # nothing but the previous token


def test_gold_rationales_teach_the_extractor(copy_model):
    """Gold rationales alone (the position the target copies, as an alignment names a source
    word): the first pick after the previous token becomes that position on most targets of
    unseen sequences."""
    from sequential_rationales.extractor import Objectives

    adapter = HuggingFaceCausalLM(copy_model)
    generator = torch.Generator().manual_seed(8)

    def gold_of(x):
        return {t: [t - 3] for t in range(4, 10)}

    train = [TeacherSequence(RationalizationProblem(x), {}, gold_of(x))
             for x in copy_sequences(32, generator)]
    extractor = train_extractor(adapter, train, ExtractorConfig(0, rank=8), steps=300,
                                lr=3e-2, seed=0, batch_sequences=4,
                                objectives=Objectives(order=0.0, gold=1.0))
    hits = total = 0
    for x in copy_sequences(6, generator):
        gold = gold_of(x)
        for t, v in extractor_scores(extractor, adapter, RationalizationProblem(x)).items():
            if t in gold and set(gold[t]) - {t - 1}:
                v = v.clone()
                v[t - 1] = float("-inf")
                hits += int(v.argmax()) in gold[t]
                total += 1
    assert hits / total >= 0.8  # a random pick is the copied position one time in five
