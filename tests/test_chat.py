"""format=chat_template on conversational data: every method trains on the bundled conversations in the Qwen3 and
Llama 3.2 templates, the saved model's tokenizer renders what was trained, bad rows and templates are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose, run_cli

from fcft import models
from fcft import spec as run_spec
from fcft.data import SAMPLE_DIR, formats
from fcft.data.chat import ChatTemplate, TemplateError
from fcft.data.when2call import DataError, load_part
from fcft.spec.options import DataSpec, OnBadRow
from fcft.train.methods import get as get_method
from fcft.train.methods import registry

CHAT_DIR = SAMPLE_DIR / "chat"
TRAINING_METHODS = sorted(name for name, m in registry().items() if m.trains)


def _spec(*overrides: str):
    return run_spec.validate(compose("data=chat_sample", "compute=cpu", "tracking=none", *overrides))


@pytest.fixture(scope="module", params=["tiny", "tiny_llama"])
def model_name(request, tiny_dir):
    return request.param


@pytest.mark.parametrize("method", TRAINING_METHODS)
def test_every_method_trains_on_the_conversations(method, model_name, tmp_path):
    spec = _spec(
        f"model={model_name}",
        f"method={method}",
        "eval.enabled=false",
        "data.limit=8",
        "method.max_steps=2",
        "method.per_device_train_batch_size=2",
        "method.gradient_accumulation_steps=1",
        "method.logging_steps=1",
    )
    entry = get_method(method)
    rows = load_part(spec.data, entry.part, spec.data.limit).rows
    model, tokenizer = models.load(spec, "cpu")
    fmt = formats.get(spec.training_format, tokenizer, spec.model.name)
    assert fmt.name == "chat_template"
    dataset = entry.dataset(rows, fmt, tokenizer, spec.model.max_length)
    trainer = entry.train(spec, model, tokenizer, dataset, tmp_path, "cpu")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(loss == loss and abs(loss) < 1e4 for loss in losses)  # finite


def test_a_trained_model_saves_the_template_it_was_trained_with(tmp_path, tiny_dir):
    """A run on Llama's template (a file given as model.chat_template): the saved model/ renders, with
    AutoTokenizer alone, exactly the conversations it was trained on and the prompts it was scored on."""
    from transformers import AutoTokenizer

    from fcft import worker

    spec = _spec(
        "model=tiny_llama",
        "method.max_steps=1",
        "data.limit=6",
        "eval.limit=4",
        "eval.baseline=false",
        "eval.write_requests=true",
    )
    worker.run(spec, tmp_path)
    saved = AutoTokenizer.from_pretrained(tmp_path / "model")
    trained_with = models.load_tokenizer(spec.model)
    assert (
        saved.chat_template == trained_with.chat_template == Path(spec.model.chat_template).read_text(encoding="utf-8")
    )

    rows = load_part(spec.data, "train_sft", spec.data.limit).rows
    sft = get_method("sft")
    as_trained = sft.dataset(rows, formats.get("chat_template", trained_with), trained_with, spec.model.max_length)
    as_saved = sft.dataset(rows, formats.get("chat_template", saved), saved, spec.model.max_length)
    assert as_trained["input_ids"] == as_saved["input_ids"]
    assert as_trained["completion_mask"] == as_saved["completion_mask"]
    for row, ids in zip(rows, as_saved["input_ids"]):  # Llama's template renders each conversation whole
        tools = [json.loads(t) for t in row["tools"]]
        messages = ChatTemplate(saved).render(row["tools"], row["messages"])
        assert saved.decode(ids) == messages
        assert messages == saved.apply_chat_template(
            _served(row["messages"]), tools=_wrapped(tools) or None, tokenize=False
        )

    test_rows = {r["uuid"]: r for r in load_part(spec.data, "test", spec.eval.limit).rows}
    requests = [json.loads(line) for line in (tmp_path / "eval" / "requests.jsonl").read_text().splitlines()]
    assert len(requests) == 4
    for request in requests:
        row = test_rows[request["uuid"]]
        served = saved.apply_chat_template(
            [{"role": "user", "content": row["question"]}],
            tools=_wrapped([json.loads(t) for t in row["tools"]]) or None,
            add_generation_prompt=True,
            tokenize=False,
        )
        assert request["prompt"] == served


def _wrapped(tools: list[dict]) -> list[dict]:
    return [t if t.get("type") == "function" else {"type": "function", "function": t} for t in tools]


def _served(messages: list[dict]) -> list[dict]:
    """Messages as an OpenAI-compatible server receives them: calls with `type` and `function`."""
    out = []
    for m in messages:
        calls = [{"type": "function", "function": c} for c in m.get("tool_calls") or []]
        out.append({**{k: v for k, v in m.items() if k != "tool_calls"}, **({"tool_calls": calls} if calls else {})})
    return out


# --- bad rows ---------------------------------------------------------------------------------------------

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = {"role": "user", "content": "What's the weather in Paris?"}


def _call(name: str, arguments) -> dict:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
    }


GOOD = {
    "tools": [TOOL],
    "messages": [
        QUESTION,
        _call("get_weather", {"city": "Paris"}),
        {"role": "tool", "content": '{"temp_c": 21}'},
        {"role": "assistant", "content": "21 °C in Paris."},
    ],
}


@pytest.mark.parametrize(
    "messages, message",
    [
        (
            [QUESTION, _call("get_time", {})],
            "field 'messages[1].tool_calls[0]' calls 'get_time', which the row's tools don't define",
        ),
        (
            [QUESTION, _call("get_weather", [1, 2])],
            "field 'messages[1].tool_calls[0].function.arguments' must be a JSON object, got list",
        ),
        (
            [QUESTION, _call("get_weather", '"Paris"')],
            "field 'messages[1].tool_calls[0].function.arguments' must be a JSON object, got str",
        ),
        (
            [QUESTION, _call("get_weather", "{city: Paris}")],
            "field 'messages[1].tool_calls[0].function.arguments' is not valid JSON",
        ),
        (
            [QUESTION, {"role": "tool", "content": "{}"}, {"role": "assistant", "content": "Done."}],
            "field 'messages[1]': a tool message must answer a tool call, but messages[0] (user) comes before it",
        ),
        (
            [{"role": "bot", "content": "hi"}],
            "field 'messages[0].role' is 'bot'; it must be system | user | assistant | tool",
        ),
        ([QUESTION], "field 'messages' has no assistant message to train on"),
    ],
)
def test_a_bad_conversation_is_named_by_file_line_and_field(messages, message, tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "messages": messages}) + "\n")
    with pytest.raises(DataError) as raised:
        load_part(DataSpec(name="logs", train_path=str(path)), "train_sft")
    assert str(raised.value).startswith(f"{path} line 2: {message}")
    skipped = load_part(DataSpec(name="logs", train_path=str(path), on_bad_row=OnBadRow.skip), "train_sft")
    assert len(skipped.rows) == 1 and len(skipped.skipped) == 1 and "line 2" in skipped.skipped[0]


def test_a_bad_preference_row_is_named_but_a_rejected_answer_may_call_anything(tmp_path):
    path = tmp_path / "pairs.jsonl"
    pair = {"tools": [TOOL], "prompt": [QUESTION], "chosen": [_call("get_weather", {"city": "Paris"})]}
    rows = [
        {**pair, "rejected": [_call("get_forecast", {"city": "Paris"})]},  # a hallucinated tool: what DPO unlearns
        {**pair, "rejected": [{"role": "user", "content": "Paris"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        DataError, match=f"^{path} line 2: field 'rejected\\[0\\].role' is 'user'; it must be assistant"
    ):
        load_part(DataSpec(name="pairs", pref_path=str(path)), "train_pref")


# --- templates that can't serve ---------------------------------------------------------------------------

PLAIN = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
NO_CALLS = "{{ tools | tojson }}" + PLAIN


@pytest.mark.parametrize(
    "template, reason",
    [
        (PLAIN, "it doesn't render the tools it is given"),
        (NO_CALLS, "it doesn't render an assistant message's tool_calls"),
    ],
)
def test_a_template_without_tools_or_calls_is_refused(template, reason, tiny_dir):
    tokenizer = models.load_tokenizer(run_spec.validate(compose()).model)
    tokenizer.chat_template = template
    with pytest.raises(TemplateError, match=f"^tiny's chat template can't serve as format=chat_template: {reason}"):
        formats.get("chat_template", tokenizer, "tiny")


def test_the_cli_refuses_a_template_that_cant_render_tools_before_training(tmp_path, tiny_dir):
    template = tmp_path / "plain.jinja"
    template.write_text(PLAIN)
    result = run_cli("data=chat_sample", f"model.chat_template={template}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "data.format: tiny's chat template can't serve as format=chat_template" in result.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_show_prints_a_conversation_with_its_loss_tokens(tiny_dir):
    result = run_cli("show", "data=chat_sample", "model=tiny_llama", module="fcft.data")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "format chat_template" in out and "training text == apply_chat_template(conversation): yes" in out
    assert "«" in out and "<|eot_id|>»" in out  # the loss ends with the template's end of turn


def test_conversations_from_a_dataset_id_and_split(tmp_path):
    """A hub dataset id with its split (here a local dataset directory, which `load_dataset` reads the same way)."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "train.jsonl").write_text(json.dumps(GOOD) + "\n")
    data = DataSpec(name="logs", hub_id=str(tmp_path / "logs"), train_split="train")
    loaded = load_part(data, "train_sft")
    assert loaded.source == f"{tmp_path / 'logs'} (train)" and loaded.rows[0]["messages"][1]["tool_calls"]
    with pytest.raises(DataError, match="split 'validation'.*set data.train_split to its split"):
        load_part(DataSpec(name="logs", hub_id=str(tmp_path / "logs"), train_split="validation"), "train_sft")
    with pytest.raises(run_spec.SpecError, match="data.train_split: 'a/b/c' is not a split name or config/split"):
        run_spec.validate(compose("data=when2call", "data.train_split=a/b/c"))
