"""Declarative rewards for GRPO and RLOO: the spec's `[[method.rewards]]` tables, as trl reward functions.

The compiler resolves the spec's rewards into plain dicts, which a generated script holds as its REWARDS constant;
the script turns them into trl reward functions with `declared_rewards`. Each reward scores the same thing as the
`ftc eval` metric of the same name (runtime/evaluate/metrics.py), one completion at a time, so that training
pushes on what evaluation measures.

ftc imports this file as a module (ftc.templates.rewards). A generated script includes it from the `# ---- ftc
rewards` banner down, verbatim (compiler/build/render.py, `support`): this docstring and the imports stay above
the banner, and the script imports the same modules in its own import block at the top. So add an import here,
above the banner, and to the import block of every template that includes this file. Standard library, jsonschema,
rouge-score and sacrebleu only.
"""

import json
import re

from jsonschema.validators import validator_for
from rouge_score import rouge_scorer
from sacrebleu.metrics import CHRF

# ---- ftc rewards (shared verbatim by ftc and every GRPO/RLOO script; stdlib, jsonschema, rouge-score, sacrebleu) ----
# An entry of REWARDS is a dict with a unique "name" (trl logs the reward as rewards/<name>/mean), a "kind" and a
# "weight" (the script hands the weights to trl), plus the settings of its kind. trl calls a reward function as
# f(prompts=..., completions=..., completion_ids=..., **columns): every dataset column but "prompt" arrives as a
# list aligned with the completions. A completion is a string, or a list of messages for conversational data.
# "The reference" is the dataset column "reference" (the example's reference answer), or the column an entry names
# in "field". "reward_model" entries are models, not functions: the script loads those itself.

REFERENCE_COLUMN = "reference"  # the column where the script puts each example's reference answer


def answer_text(completion):
    """The text of a completion: the string itself, or the content of its assistant message(s), joined by
    newlines (a content given as parts contributes its text parts)."""
    if isinstance(completion, str):
        return completion
    texts = []
    for message in completion:
        if message.get("role") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        if content:
            texts.append(content)
    return "\n".join(texts)


def _is_messages(value):
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def reference_value(value):
    """A reference cell as text: a string as it is; a list of messages, the content of its last assistant
    message; any other value, its JSON with sorted keys."""
    if isinstance(value, str):
        return value
    if _is_messages(value):
        for message in reversed(value):
            if message["role"] == "assistant":
                return answer_text([message])
        raise ValueError("the reference is a list of messages without an assistant message")
    return json.dumps(value, sort_keys=True)


def label_of(text, key):
    """Key `key` of the text parsed as a JSON object (a non-string value as its JSON with sorted keys), or None
    when the text is no JSON object or lacks the key: the label rule of `ftc eval`."""
    try:
        parsed = json.loads(text.strip())
    except ValueError:
        return None
    label = parsed.get(key) if isinstance(parsed, dict) else None
    if label is None:
        return None
    return label if isinstance(label, str) else json.dumps(label, sort_keys=True)


def parses_as_json(text):
    try:
        json.loads(text.strip())
    except ValueError:
        return False
    return True


# Each _score_<kind>(entry) checks the entry's settings once and returns score(answer, reference, ids) -> float:
# the answer's text, the reference as text (None for a kind that reads none) and the completion's token ids.


def _score_json_valid(entry):
    return lambda answer, reference, ids: float(parses_as_json(answer))


def _score_json_schema(entry):
    schema = entry["schema"]
    cls = validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema)

    def score(answer, reference, ids):
        try:
            value = json.loads(answer.strip())
        except ValueError:
            return 0.0
        return float(validator.is_valid(value))

    return score


def _score_exact_match(entry):
    key = entry.get("key")
    if key is None:
        return lambda answer, reference, ids: float(answer.strip() == reference.strip())
    return lambda answer, reference, ids: float(label_of(answer, key) == reference.strip())


def _score_label_match(entry):
    key = entry["key"]

    def score(answer, reference, ids):
        label = label_of(reference, key)
        given = label_of(answer, key)
        if label is None:  # the reference is the label itself: so is an answer that holds no key (as `ftc eval`)
            label = reference.strip()
            if given is None:
                given = answer.strip()
        return float(given == label)

    return score


def _score_regex(entry):
    pattern = re.compile(entry["pattern"])
    hit = 1.0 if entry.get("match", True) else 0.0
    return lambda answer, reference, ids: hit if pattern.search(answer) else 1.0 - hit


def _score_length(entry):
    target, penalty = entry["target"], float(entry["penalty"])
    if not isinstance(target, int) or target <= 0:
        raise ValueError(f"reward {entry['name']!r}: target must be a positive number of tokens, not {target!r}")
    return lambda answer, reference, ids: -penalty * abs(len(ids) - target) / target


def _score_similarity(entry):
    metric = entry["metric"]
    if metric == "rouge_l":
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        return lambda answer, reference, ids: scorer.score(reference, answer)["rougeL"].fmeasure
    if metric == "chrf":
        chrf = CHRF()
        return lambda answer, reference, ids: chrf.sentence_score(answer, [reference]).score / 100
    raise ValueError(f"reward {entry['name']!r}: unknown similarity metric {metric!r} (rouge_l or chrf)")


SCORERS = {
    "json_valid": _score_json_valid,
    "json_schema": _score_json_schema,
    "exact_match": _score_exact_match,
    "label_match": _score_label_match,
    "regex": _score_regex,
    "length": _score_length,
    "similarity": _score_similarity,
}
READS_REFERENCE = {"exact_match", "label_match", "similarity"}


def reward_function(entry):
    """The trl reward function of one REWARDS entry, named after the entry; its scorer is built once, here."""
    kind = entry["kind"]
    if kind == "reward_model":
        raise ValueError(
            f"reward {entry['name']!r} is a reward_model: the script loads the model, no function scores it"
        )
    if kind not in SCORERS:
        raise ValueError(f"reward {entry['name']!r} has an unknown kind {kind!r} (one of {', '.join(SCORERS)})")
    score = SCORERS[kind](entry)
    column = (entry.get("field") or REFERENCE_COLUMN) if kind in READS_REFERENCE else None

    def reward(completions, completion_ids=None, **columns):
        n = len(completions)
        if column is None:
            references = [None] * n
        elif column in columns:
            references = [reference_value(cell) for cell in columns[column]]
        else:
            found = ", ".join(sorted(k for k, v in columns.items() if isinstance(v, list) and k != "prompts")) or "none"
            raise ValueError(
                f"reward {entry['name']!r} reads the dataset column {column!r}, which the batch lacks "
                f"(its columns: {found})"
            )
        if kind == "length" and completion_ids is None:
            raise ValueError(f"reward {entry['name']!r} counts completion tokens, but no completion_ids were passed")
        ids = completion_ids if completion_ids is not None else [None] * n
        return [float(score(answer_text(c), r, i)) for c, r, i in zip(completions, references, ids, strict=True)]

    reward.__name__ = reward.__qualname__ = entry["name"]
    return reward


def declared_rewards(entries):
    """The reward functions of the entries that are not reward models, in their order."""
    return [reward_function(entry) for entry in entries if entry["kind"] != "reward_model"]
# ---- end of ftc rewards ----
