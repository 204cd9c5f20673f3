#!/usr/bin/env python3
"""Renders real chat templates with jinja2 to make the oracle for
tests/chat_template_test.cc.

Writes tests/data/chat_template_<name>.jinja (the template text, so the C++
test also checks detection on it) and tests/data/chat_template_fixtures.txt.

Rendering environment as Hugging Face transformers sets it up for chat
templates: a sandboxed jinja2 environment with trim_blocks and lstrip_blocks,
a raise_exception() global, and bos_token / eos_token variables.

SmolLM2's template is read from the real model (the GGUF key
tokenizer.chat_template); pass its path, or it is fetched with
tools/fetch-model.sh. The other templates are the published instruct
templates of those model families, written out below as data.

Fixture format (all lengths in bytes of UTF-8, every payload followed by one
newline so the file stays readable):
  template <name> <bos|-> <eos|-> <len>\\n<template text>\\n
  conversation <id> <message count>\\n
  message <role> <len>\\n<content>\\n          (repeated per message)
  render <template> <conversation id> <0|1 add_generation_prompt> ok <len>\\n<text>\\n
  render <template> <conversation id> <0|1> error <len>\\n<exception text>\\n
Lines starting with '#' are comments. bos/eos are '-' when empty.

Usage: tools/gen_chat_template_fixtures.py [path/to/model.gguf]
"""
import os
import subprocess
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")

# Generic ChatML: no default system message (also our fallback when a model
# carries no template).
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2-Instruct: ChatML with a default system message.
QWEN2 = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Meta-Llama-3-Instruct.
LLAMA3 = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# Meta-Llama-3.1-Instruct: the system header (knowledge cutoff + date) is
# always rendered. Written out from the published format; the tool-calling
# branches are not exercised by the fixtures.
LLAMA31 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- Pull out the system message: it goes after the header lines. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# Gemma-it: no system role, strict user/model alternation.
GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

# Llama-2-chat: system folded into the first user turn, BOS before every
# [INST], no generation prompt.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

# Phi-3-mini-instruct.
PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

S, U, A = "system", "user", "assistant"

# Roles alternate where a template demands it; the ones that break a
# template's rules are there on purpose (its error is the expectation).
CONVERSATIONS = [
    [(U, "Hello!")],
    [(S, "You are terse."), (U, "What is 2+2?")],
    [(U, "Hi"), (A, "Hello! How can I help?"), (U, "Tell me a joke.")],
    [(S, "Be nice."), (U, "One"), (A, "Two"), (U, "Three"), (A, "Four"),
     (U, "Five"), (A, "Six"), (U, "Seven")],
    [(U, "Grüße aus Köln 👋 — 你好, мир! \u00e9\u0301"),
     (A, "¡Hola! ∑ α² ≠ β"), (U, "日本語で？")],
    [(U, ""), (A, ""), (U, "empty turns above")],
    [(S, "Line one.\nLine two.\n"), (U, "a\nb\n\nc\n"),
     (A, "\n  indented reply\n\n"), (U, "  spaced out  ")],
    # Unicode whitespace at the ends: Python's str.strip() removes it.
    [(U, "\u3000\u00a0ideographic space\u2003\u2028"),
     (A, "\t\x1fcontrol-ish\x0b"), (U, "\u0085next line char\u202f")],
    [(U, "Only a question, then the reply"), (A, "The reply.")],
    [(S, ""), (U, "empty system")],
    [(S, "system first"), (A, "assistant before user")],
    [(U, "{{ not jinja }} {% raw %} <|im_end|> literal")],
]

TEMPLATES = [
    # name, text, bos, eos
    ("chatml", CHATML, "", "<|im_end|>"),
    ("smollm2", None, "<|im_start|>", "<|im_end|>"),
    ("qwen2", QWEN2, "", "<|im_end|>"),
    ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    ("llama31", LLAMA31, "<|begin_of_text|>", "<|eot_id|>"),
    ("gemma", GEMMA, "<bos>", "<eos>"),
    ("llama2", LLAMA2, "<s>", "</s>"),
    ("phi3", PHI3, "<s>", "<|endoftext|>"),
]


def smollm2_template(model_path):
    sys.path.insert(0, os.path.join(ROOT, "gguf-py"))
    import gguf  # noqa: E402  (pip install gguf)

    reader = gguf.GGUFReader(model_path)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def render(text, messages, add_generation_prompt, bos, eos):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(text)
    return template.render(messages=messages,
                           add_generation_prompt=add_generation_prompt,
                           bos_token=bos, eos_token=eos)


def record(out, header, payload):
    data = payload.encode("utf-8")
    out.write(f"{header} {len(data)}\n".encode("ascii"))
    out.write(data + b"\n")


def main():
    if len(sys.argv) > 1:
        model = sys.argv[1]
    else:
        model = subprocess.check_output(
            [os.path.join(ROOT, "tools", "fetch-model.sh")], text=True).strip()
    templates = []
    for name, text, bos, eos in TEMPLATES:
        if text is None:
            text = smollm2_template(model)
        templates.append((name, text, bos, eos))
        with open(os.path.join(DATA, f"chat_template_{name}.jinja"), "wb") as f:
            f.write(text.encode("utf-8"))

    path = os.path.join(DATA, "chat_template_fixtures.txt")
    with open(path, "wb") as out:
        out.write(b"# Generated by tools/gen_chat_template_fixtures.py "
                  b"(jinja2 " + jinja2.__version__.encode() + b"); do not edit.\n")
        for name, text, bos, eos in templates:
            record(out, f"template {name} {bos or '-'} {eos or '-'}", text)
        for cid, conv in enumerate(CONVERSATIONS):
            out.write(f"conversation {cid} {len(conv)}\n".encode("ascii"))
            for role, content in conv:
                record(out, f"message {role}", content)
        count = 0
        for name, text, bos, eos in templates:
            for cid, conv in enumerate(CONVERSATIONS):
                messages = [{"role": r, "content": c} for r, c in conv]
                for gen in (0, 1):
                    try:
                        got = render(text, messages, bool(gen), bos, eos)
                        status = "ok"
                    except jinja2.exceptions.TemplateError as e:
                        got, status = str(e), "error"
                    record(out, f"render {name} {cid} {gen} {status}", got)
                    count += 1
    print(f"wrote {path}: {len(templates)} templates, "
          f"{len(CONVERSATIONS)} conversations, {count} renders")


if __name__ == "__main__":
    main()
