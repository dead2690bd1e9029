"""fcft's cached scorer against plain full-sequence scoring with lm-eval's rules: whatever the batch-mates, the
prompt lengths and the truncation."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from omegaconf import OmegaConf

from fcft.data import formats
from fcft.data.prepare import McqItem, mcq_item, split_tokens
from fcft.data.when2call import load_part
from fcft.eval import mcq as evaluation
from fcft.eval import scorer


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def real_items(real_test_rows, tiny):
    """The longest, the shortest and a middling prompt of the 90 real rows (qwen2_5), and a 1-token prompt."""
    _, tokenizer = tiny
    data = OmegaConf.create({"hub_id": None, "test_path": str(real_test_rows), "on_bad_row": "error"})
    items = sorted(
        (mcq_item(row, formats.QWEN2_5) for row in load_part(data, "test").rows), key=lambda i: len(i.prompt)
    )
    one_token = McqItem("one-token", "<|im_start|>", items[0].choices, items[0].gold, False)
    assert len(tokenizer(one_token.prompt, add_special_tokens=False)["input_ids"]) == 1
    return [items[-1], items[0], items[len(items) // 2], one_token]


def reference(model, tokenizer, item: McqItem, max_length: int) -> list[float]:
    """lm-eval's `_loglikelihood_tokens`, one sequence at a time: (context + continuation)[-(max_length+1):][:-1]."""
    sums = []
    for context, continuation in split_tokens(tokenizer, [item.prompt] * 4, list(item.choices)):
        inputs = (context + continuation)[-(max_length + 1) :][:-1]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([inputs])).logits[0].float(), dim=-1)
        positions = range(len(inputs) - len(continuation), len(inputs))
        sums.append(sum(logprobs[p, t].item() for p, t in zip(positions, continuation)))
    return sums


def test_split_moves_trailing_whitespace_into_the_continuation(tiny):
    _, tokenizer = tiny
    [(context, continuation)] = split_tokens(tokenizer, ["Q: hi\n"], ["A"])
    assert tokenizer.decode(context) == "Q: hi"
    assert tokenizer.decode(continuation) == "\nA"


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_cached_scores_equal_full_sequences_whatever_the_batch_mates(tiny, real_items, batch_size):
    model, tokenizer = tiny
    max_length = scorer.context_length(model, tokenizer)
    scores = scorer.score(model, tokenizer, real_items, batch_size=batch_size)
    for item, lls in zip(real_items, scores):  # batch 4: prompts of 1 to ~3,600 tokens side by side
        assert lls == pytest.approx(reference(model, tokenizer, item, max_length), abs=2e-3), item.uuid


def test_one_row_at_a_time_reuses_shared_prefixes_and_scores_as_alone(tiny, real_items):
    """Rows sharing a prompt prefix, a prompt another row extends, a repeated prompt, a 1-token prompt: scored one
    row per pass in token order, each equals its row scored alone from scratch."""
    model, tokenizer = tiny
    long, short, middle, one_token = real_items
    shared = middle.prompt[: len(middle.prompt) // 2]
    items = [
        middle,
        McqItem("same-prompt", middle.prompt, tuple(reversed(middle.choices)), 0, True),
        McqItem("prefix-of-middle", shared, middle.choices, 1, True),
        McqItem("shares-half", shared + "Something else entirely?\n", middle.choices, 2, True),
        short,
        one_token,
    ]
    calls = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[1]))
    try:
        scores = scorer.score(model, tokenizer, items, batch_size=1)
    finally:
        hook.remove()
    alone = sum(len(c) + sum(map(len, cs)) for c, cs in _contexts(tokenizer, items))
    tokens = {text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in (middle.prompt, shared)}
    # reused: the repeated prompt whole, and the shared half by the two rows after the first that has it
    assert alone - sum(calls) >= tokens[middle.prompt] + 2 * tokens[shared] - 4
    max_length = scorer.context_length(model, tokenizer)
    for item, lls in zip(items, scores):
        assert lls == pytest.approx(reference(model, tokenizer, item, max_length), abs=2e-3), item.uuid


def _contexts(tokenizer, items):
    """(prompt ids, choices' ids) per item: what scoring each row on its own computes."""
    for item in items:
        pairs = split_tokens(tokenizer, [item.prompt] * len(item.choices), list(item.choices))
        yield pairs[0][0], [c for _, c in pairs]


def test_long_rows_lose_tokens_from_the_left_as_lm_eval_cuts_them(tiny, real_items):
    from fcft.eval import lm_eval_backend

    model, tokenizer = tiny
    items = real_items[:3]
    longest_choice = max(
        len(c) for _, c in split_tokens(tokenizer, *zip(*[(i.prompt, c) for i in items for c in i.choices]))
    )
    max_length = longest_choice + 40  # every prompt gets cut, each choice's differently
    scores = scorer.score(model, tokenizer, items, batch_size=3, max_length=max_length)
    for item, lls in zip(items, scores):
        assert lls == pytest.approx(reference(model, tokenizer, item, max_length), abs=2e-3), item.uuid
    for ours, theirs in zip(scores, lm_eval_backend.score(model, tokenizer, items, 3, max_length)):
        assert ours == pytest.approx(theirs, abs=2e-3)
    with pytest.raises(ValueError, match="alone is .* tokens, longer than the model's maximum length 20"):
        scorer.score(model, tokenizer, items, max_length=20)


def test_models_without_full_attention_and_empty_prompts_are_refused(tiny, real_items):
    from transformers import AutoConfig, AutoModelForCausalLM

    model, tokenizer = tiny
    empty = McqItem("empty", " \n", real_items[0].choices, 1, True)
    with pytest.raises(ValueError, match="test row empty: the prompt is empty"):
        scorer.score(model, tokenizer, [empty])
    config = AutoConfig.for_model(
        **{
            **model.config.to_dict(),
            "use_sliding_window": True,
            "sliding_window": 64,
            "max_window_layers": 0,
            "layer_types": None,
        }
    )
    sliding = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match="sliding-window .* use eval.backend=lm_eval"):
        scorer.score(sliding, tokenizer, real_items[:1])


def test_samples_and_metrics_follow_the_per_row_scores(tiny, real_items):
    model, tokenizer = tiny
    metrics, samples = evaluation.evaluate(model, tokenizer, real_items, batch_size=2, resamples=50)
    assert metrics["n"] == len(real_items) == len(samples)
    assert metrics["acc"] == sum(s["predicted"] == s["gold"] for s in samples) / len(samples)
    for item, sample in zip(real_items, samples):
        assert sample["uuid"] == item.uuid and sample["gold"] == formats.CATEGORIES[item.gold]
        normalised = [ll / len(c) for ll, c in zip(sample["loglikelihoods"], item.choices)]
        assert sample["predicted_norm"] == formats.CATEGORIES[normalised.index(max(normalised))]
    assert set(metrics) == {
        "acc",
        "acc_norm",
        "acc_norm_ci95",
        "macro_f1",
        "macro_f1_ci95",
        "tool_hallucination_rate",
        "confusion",
        "n",
    }
    assert sum(sum(row.values()) for row in metrics["confusion"].values()) == len(samples)


def test_eager_attention_gets_the_same_scores_and_a_cpu_scores_a_row_at_a_time(tiny_dir, tiny, real_items):
    """The packed continuations' 4-D mask in eager attention's additive form; batch_size None on a CPU."""
    from transformers import AutoModelForCausalLM

    from fcft.eval import memory

    _, tokenizer = tiny
    eager = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager")
    assert scorer._mask_dtype(eager) == torch.float32
    max_length = scorer.context_length(eager, tokenizer)
    items = real_items[1:]  # the longest prompt's ~3,600 x 3,600 eager scores would only slow the test
    assert memory.auto_rows(eager, 3600, 240) == memory.CPU_ROWS
    for item, lls in zip(items, scorer.score(eager, tokenizer, items, batch_size=None)):
        assert lls == pytest.approx(reference(eager, tokenizer, item, max_length), abs=2e-3), item.uuid


@pytest.fixture
def two_torch_threads():
    """torch on two threads (as on a 2-core CPU outside the suite's workers), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _scorer_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("fcft-scorer")}


def test_a_cpu_scores_rows_side_by_side_as_one_row_at_a_time(tiny, real_items, two_torch_threads):
    """batch_size None on a CPU with two torch threads: two rows at once, one per thread, each run of rows in
    token order; every row's numbers equal those of one row per pass on both threads, and torch's threads are
    restored after."""
    model, tokenizer = tiny
    names = []
    hook = model.model.embed_tokens.register_forward_hook(
        lambda m, args, out: names.append(threading.current_thread().name)
    )
    try:
        side_by_side = scorer.score(model, tokenizer, real_items, batch_size=None)
        assert torch.get_num_threads() == 2
        one_at_a_time = scorer.score(model, tokenizer, real_items, batch_size=1)
    finally:
        hook.remove()
    assert set(names) >= {"fcft-scorer-0", "fcft-scorer-1", "MainThread"}
    assert _scorer_threads() == set()
    for item, ours, alone in zip(real_items, side_by_side, one_at_a_time):
        assert ours == pytest.approx(alone, abs=1e-4), item.uuid


def test_an_error_in_a_side_by_side_row_reaches_the_caller(tiny, real_items, two_torch_threads):
    model, tokenizer = tiny

    def fail_in_second_worker(module, args, out):
        if threading.current_thread().name == "fcft-scorer-1":
            raise RuntimeError("out of memory in row two")

    hook = model.model.embed_tokens.register_forward_hook(fail_in_second_worker)
    try:
        with pytest.raises(RuntimeError, match="out of memory in row two"):
            scorer.score(model, tokenizer, real_items, batch_size=None)
    finally:
        hook.remove()
    assert torch.get_num_threads() == 2
    assert _scorer_threads() == set()


def test_rows_that_reuse_prefixes_stay_together_when_scored_side_by_side():
    """Rows in token order are cut only where a row reuses nothing of the row before (less than half its prompt
    shared), so scoring the runs apart computes what one pass over all of them computes."""

    def group(item, context):
        return scorer._Group(item, [0], context, [[1]])

    a = group(0, [1] * 10 + [2] * 10)
    b = group(1, [1] * 10 + [2] * 10 + [3] * 2)  # shares 19 of its 21 prompt tokens with a: reuses them
    c = group(2, [1] * 10 + [5] * 30)  # shares 10 of 39: too few, a pass from scratch
    d = group(3, [1] * 10 + [5] * 30 + [6])  # shares 39 of 40 with c
    e = group(4, [7] * 5)
    assert scorer._families([a, b, c, d, e]) == [[a, b], [c, d], [e]]


def test_workers_take_the_next_part_as_they_come_free(two_torch_threads):
    from fcft.eval import side_by_side

    names = []

    def work(part):
        for x in part:
            time.sleep(0.05)
            names.append(threading.current_thread().name)
            yield x

    assert sorted(side_by_side.run(work, [[1, 2, 3], [4], [5, 6], [7]], workers=2)) == [1, 2, 3, 4, 5, 6, 7]
    assert set(names) == {"fcft-scorer-0", "fcft-scorer-1"}
    assert torch.get_num_threads() == 2
    names.clear()
    assert list(side_by_side.run(work, [[1, 2], [3]], workers=1)) == [1, 2, 3]  # one worker: here, in order
    assert set(names) == {"MainThread"}
