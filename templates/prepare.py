"""Data preparation: tokenization and loss masks, in one place for ftc and for every generated script.

ftc imports this file as a module (ftc.templates.prepare). A generated script includes it from the
`# ---- ftc data preparation` banner down, verbatim (compiler/build/render.py, `support`): this docstring and
the imports stay above the banner, and the script imports the same modules in its own import block at the
top. So add an import here, above the banner, and to the import block of templates/sft.py.j2 and preference.py.j2
(tests/templates/test_script_layout.py fails until both agree). Standard library only.
"""

import json
import random

# ---- ftc data preparation (shared verbatim by the compiler and every generated script; stdlib only) ----
# mask[i] == 1 means token i carries loss. An example is rendered to text with the character spans that carry
# loss (render_*), then encoded, many examples to a tokenizer call (encode_batch). Without generation markers
# in the chat template, an assistant span is found by rendering the conversation up to the turn (with the
# generation prompt) and up to the end of the turn: the span between the two renders is the answer plus its
# end-of-turn token.


def _render(tokenizer, chat_template, messages, add_generation_prompt):
    return tokenizer.apply_chat_template(
        messages, chat_template=chat_template, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def _check_prefix(full, prefix, what):
    if not full.startswith(prefix):
        raise ValueError(
            f"the chat template is not prefix-stable: {what} does not render as a prefix of the whole "
            f"conversation, so the assistant tokens cannot be located (prefix ends {prefix[-60:]!r})"
        )


def encode_batch(tokenizer, rendered):
    """Rendered examples [(text, spans)] -> [(input_ids, mask)], with one call to the (fast) tokenizer. Token i
    carries loss when it starts inside one of its example's character spans."""
    if not rendered:
        return []
    enc = tokenizer([text for text, _ in rendered], return_offsets_mapping=True, add_special_tokens=False)
    out = []
    for (text, spans), ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"]):
        inside = bytearray(len(text) + 1)
        for a, b in spans:
            if a < b:
                inside[a:b] = b"\x01" * (b - a)
        out.append((list(ids), [inside[start] for start, _ in offsets]))
    return out


def render_messages(tokenizer, chat_template, messages, train_on_all=False):
    """A chat example -> (text, spans): the spans cover every assistant turn (but those with weight 0), or
    everything."""
    full = _render(tokenizer, chat_template, messages, False)
    if train_on_all:
        return full, [(0, len(full))]
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        start = _render(tokenizer, chat_template, messages[:i], True)
        end = full if i + 1 == len(messages) else _render(tokenizer, chat_template, messages[: i + 1], False)
        _check_prefix(full, start, f"the conversation before turn {i + 1} with the generation prompt")
        _check_prefix(full, end, f"the conversation up to turn {i + 1}")
        spans.append((len(start), len(end)))
    return full, spans


def render_prompt_completion(tokenizer, chat_template, prompt, completion, train_on_all=False):
    """A prompt/completion example -> (text, spans). Plain strings get the EOS token appended."""
    if isinstance(prompt, str):
        if not completion.endswith(tokenizer.eos_token):
            completion += tokenizer.eos_token
        start, full = prompt, prompt + completion
    else:
        start = _render(tokenizer, chat_template, prompt, True)
        full = _render(tokenizer, chat_template, prompt + completion, False)
        _check_prefix(full, start, "the prompt with the generation prompt")
    return full, [(0 if train_on_all else len(start), len(full))]


def render_text(tokenizer, text):
    """Plain text -> (text, spans): every token trains, and the EOS token ends it."""
    if not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return text, [(0, len(text))]


def render_record(tokenizer, chat_template, data_format, record, train_on_all):
    """A supervised record -> (text, spans), ready for encode_batch."""
    if data_format == "chat":
        return render_messages(tokenizer, chat_template, record["messages"], train_on_all)
    if data_format == "completion":
        return render_prompt_completion(tokenizer, chat_template, record["prompt"], record["completion"], train_on_all)
    if data_format == "text":
        return render_text(tokenizer, record["text"])
    if data_format == "unpaired":  # one sequence, as KTO trains it: the loss is on the completion whatever train_on
        return render_unpaired(tokenizer, chat_template, record)
    raise ValueError(f"cannot tokenize {data_format} data for supervised training")


def render_preference(tokenizer, chat_template, record):
    """A preference record -> [prompt + chosen, prompt + rejected], each as (text, spans), as DPO sees them."""
    return [
        render_prompt_completion(tokenizer, chat_template, record["prompt"], answer)
        for answer in (record["chosen"], record["rejected"])
    ]


def render_unpaired(tokenizer, chat_template, record):
    """An unpaired record (prompt, completion, label) -> (text, spans) of prompt + completion, as KTO sees it: the
    completion carries the loss, desirable or not (the label says which way it pulls)."""
    return render_prompt_completion(tokenizer, chat_template, record["prompt"], record["completion"])


def tokenize_messages(tokenizer, chat_template, messages, train_on_all=False):
    """A chat example -> (input_ids, mask). The mask covers every assistant turn (but those with weight 0),
    or everything."""
    return encode_batch(tokenizer, [render_messages(tokenizer, chat_template, messages, train_on_all)])[0]


def tokenize_prompt_completion(tokenizer, chat_template, prompt, completion, train_on_all=False):
    """A prompt/completion example -> (input_ids, mask). Plain strings get the EOS token appended."""
    return encode_batch(
        tokenizer, [render_prompt_completion(tokenizer, chat_template, prompt, completion, train_on_all)]
    )[0]


def tokenize_text(tokenizer, text):
    """Plain text -> (input_ids, mask): every token trains, and the EOS token ends it."""
    return encode_batch(tokenizer, [render_text(tokenizer, text)])[0]


def tokenize_record(tokenizer, chat_template, data_format, record, train_on_all):
    """A supervised record -> (input_ids, mask)."""
    return encode_batch(tokenizer, [render_record(tokenizer, chat_template, data_format, record, train_on_all)])[0]


def preference_lengths(tokenizer, chat_template, record):
    """Tokens of prompt + chosen and of prompt + rejected, as DPO sees them."""
    return [len(ids) for ids, _ in encode_batch(tokenizer, render_preference(tokenizer, chat_template, record))]


def unpaired_lengths(tokenizer, chat_template, record):
    """Tokens of prompt + completion, as KTO sees them: a list of one, as preference_lengths lists two."""
    return [len(ids) for ids, _ in encode_batch(tokenizer, [render_unpaired(tokenizer, chat_template, record)])]


def held_out_indices(n_records, share, seed):
    """The records a validation_split holds out: a seeded sample, the same on every machine."""
    k = int(n_records * share)
    return sorted(random.Random(seed).sample(range(n_records), k))


def fit_length(ids, mask, max_length, policy):
    """Apply the overlong policy: returns (ids, mask), or None when the example is dropped."""
    if len(ids) <= max_length:
        return ids, mask
    if policy == "truncate":
        return ids[:max_length], mask[:max_length]
    if policy == "drop":
        return None
    raise ValueError(f"example has {len(ids)} tokens, more than max_length = {max_length}")


CONVERSATION_COLUMNS = ("messages", "prompt", "completion", "chosen", "rejected")
UNPAIRED_COLUMNS = {"prompt", "completion", "label"}


def record_from_row(row):
    """A CSV or Parquet row (column -> cell) as a record. A messages cell of text is JSON, decoded. In the other
    columns, text that is a JSON list of messages (objects with a role) is decoded, and other text (a prompt
    like "[urgent] ...") stays text. In a Parquet list of structs every message has every field: a null field
    is one the message does not have. The label of an unpaired row, the text true or false in CSV, is that boolean."""
    record = dict(row)
    if UNPAIRED_COLUMNS <= set(record) and record["label"] in ("true", "false"):  # a CSV cell holds text only
        record["label"] = record["label"] == "true"
    for column in CONVERSATION_COLUMNS:
        cell = record.get(column)
        if isinstance(cell, list):
            record[column] = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in cell]
        elif column == "messages" and isinstance(cell, str) and cell.strip():
            try:
                record[column] = json.loads(cell)
            except json.JSONDecodeError as exc:
                raise ValueError(f"the messages cell is not JSON: {exc.msg} (character {exc.pos + 1})") from None
        elif isinstance(cell, str) and cell.lstrip().startswith("["):
            try:
                value = json.loads(cell)
            except json.JSONDecodeError:
                continue
            if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
                record[column] = value
    return record
# ---- end of ftc data preparation ----
