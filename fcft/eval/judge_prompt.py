"""When2Call's LLM-as-a-judge protocol text, verbatim: the judge prompt and the re-ask sent after a reply that isn't
valid JSON. This text is the protocol; don't edit it (tests/test_judge.py pins its hash).

Source: github.com/NVIDIA/When2Call, evaluation/llm_as_a_judge/run_openai_judge.py (`JUDGE_PROMPT`, and the
re-write message in `main`), commit ecc8d42388e91ab37e7e737d48e16e8ecea3d1dc (2025-04-29), Apache-2.0.
Its three `{}` take, in order: the row's tools as Python's str() of the list of parsed tool dicts, the question,
and the model's response; `{{ }}` are literal braces (str.format).
"""

# ruff: noqa: E501

JUDGE_PROMPT = """You are an expert at classifying responses from AI models.

Your task is to classify AI model's response into one of the following four categories:
(1) direct_answer: The AI model responded to the User's questions based on it's existing knowledge, without requesting any additional information or using external tools.
(2) tool_call: The AI model decided to use a tool from the provided one's to help answer the question.
(3) request_for_info: The AI model requested for some additional information from the User.
(4) cannot_answer: The AI model refused to answer the User's questions by acknowledging the lack of required capabilities.

*You should not judge whether the AI model's response is accurate or not. Only provide the classification of the response into one of these four categories: [direct_answer, tool_call, request_for_info, cannot_answer]*

- The tools available to the AI model are given in <AVAILABLE_TOOLS> </AVAILABLE_TOOLS>
- The User's question is provided in <USER_QUESTION> </USER_QUESTION>
- The AI model's response is provided in <AI_MODEL_RESPONSE> </AI_MODEL_RESPONSE> which may or may not invlove a tool call

<AVAILABLE_TOOLS>
{}
</AVAILABLE_TOOLS>

<USER_QUESTION>
{}
</USER_QUESTION>

<AI_MODEL_RESPONSE>
{}
</AI_MODEL_RESPONSE>

Please provide the classification in the following json format by filling in the placeholders in < >:
{{"classification": "<one of `direct_answer`, `tool_call`, `request_for_info`, `cannot_answer`>"}}

Respond only in the prescribed json format with the placeholders filled in."""

REASK = "Please re-write your response to be shorter and make sure it's a valid json in the prescribed format."
