"""How to call the served model: what `ftc serve` prints once the server is ready. The API key appears only as
$VAR (curl) or os.environ[VAR] (the `openai` client), never its value."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftc.runtime.serve.settings import Settings
    from ftc.runtime.serve.target import Target


def usage_lines(url: str, settings: Settings, target: Target) -> list[str]:
    """curl and `openai` examples; the key appears only as $VAR / os.environ[VAR]."""
    env = settings.api_key_env
    name = settings.served_model_name
    auth = f' \\\n    -H "Authorization: Bearer ${env}"' if env else ""
    key = f'os.environ["{env}"]' if env else '"unused"'
    lines = [
        f"  curl {url}/v1/chat/completions{auth} \\",
        '    -H "Content-Type: application/json" \\',
        f"    -d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'",
        "",
        ("  import os\n" if env else "") + "  from openai import OpenAI",
        f'  client = OpenAI(base_url="{url}/v1", api_key={key})',
        f'  reply = client.chat.completions.create(model="{name}", messages=[{{"role": "user", "content": "Hello"}}])',
        "  print(reply.choices[0].message.content)",
    ]
    if target.mode == "adapter":
        lines.append(f"  (model \"{name}\" is the base with the adapter; \"{name}-base\" is the base alone)")
    elif target.mode == "prompt_embeds":
        lines.append(
            "  (ftc's front puts the run's virtual tokens before each prompt and asks vLLM with the embeddings: "
            "/v1/chat/completions, /v1/completions and /v1/models, no streaming)"
        )
    return lines


def print_ready(out, url: str, settings: Settings, target: Target) -> None:
    """The ready message: where the model answers, whether it wants a key, how to call it, how to stop it."""
    auth = f"; clients must send the key in ${settings.api_key_env}" if settings.api_key_env else "; no API key"
    out.print(f"\nready: {settings.served_model_name} at {url}/v1 (bound to {settings.host}:{settings.port}{auth})", markup=False)
    out.print("call it:", markup=False)
    for line in usage_lines(url, settings, target):
        out.print(line, markup=False)
    out.print(f"\nCtrl-C stops the server. vLLM's log: {target.log}", markup=False)
    out.file.flush()
