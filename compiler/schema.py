"""The one base every spec model shares (the [table] models under compiler/spec/ and each method's table under
compiler/methods/): unknown keys are errors, values are frozen, numbers are finite. It sits outside both packages
so that either can import it first. The text validators below are shared by the tables' string fields."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Variables every shell sets: naming one as the holder of a secret is a mistake (its value is a path or a name).
SYSTEM_ENV_VARS = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TERM",
    "TMPDIR", "TMP", "TEMP", "HOSTNAME", "EDITOR", "VISUAL", "PAGER", "MAIL", "SHLVL", "DISPLAY", "PYTHONPATH",
    "PYTHONHOME", "LD_LIBRARY_PATH", "LD_PRELOAD", "VIRTUAL_ENV", "CONDA_PREFIX", "CUDA_VISIBLE_DEVICES", "CUDA_HOME",
    "HF_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR", "SSH_AUTH_SOCK", "TZ", "_",
})  # fmt: skip
MAX_PATH = 4096  # characters of a path written in the spec (Linux PATH_MAX)
MAX_PATH_PART = 255  # bytes of one file or folder name (NAME_MAX)
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class SpecModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_default=True,
        use_attribute_docstrings=False,
        allow_inf_nan=False,
    )


def env_var_name(value: str | None) -> str | None:
    """Validate that a secret is referenced by environment variable *name*, never written literally."""
    if value is None:
        return None
    if not ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable in upper case (e.g. HF_TOKEN), not the secret itself"
        )
    if value in SYSTEM_ENV_VARS:
        raise ValueError(f"{value} is a system variable, not one that holds a secret")
    return value


def _control(value: str, pattern: re.Pattern[str]) -> None:
    m = pattern.search(value)
    if m:
        raise ValueError(f"contains a control character (U+{ord(m.group(0)):04X} at character {m.start() + 1})")


def one_line(value: str | None) -> str | None:
    """A name or short text: printable, on one line, not blank."""
    if value is None:
        return None
    _control(value, _CONTROL)
    if not value.strip():
        raise ValueError("is blank")
    if value != value.strip():
        raise ValueError("starts or ends with whitespace")
    return value


def free_text(value: str | None) -> str | None:
    """Prose: line breaks and tabs are fine, other control characters (terminal escapes) are not."""
    if value is not None:
        _control(value, _CONTROL_BUT_LINES)
    return value


def path_text(value: str | None) -> str | None:
    """A path written in the spec: something the file system could hold."""
    if value is None:
        return None
    _control(value, _CONTROL)
    if not value.strip():
        raise ValueError("is blank")
    if len(value) > MAX_PATH:
        raise ValueError(f"is {len(value)} characters long, longer than any path ({MAX_PATH})")
    longest = max(value.split("/"), key=lambda part: len(part.encode("utf-8", "surrogatepass")))
    if len(longest.encode("utf-8", "surrogatepass")) > MAX_PATH_PART:
        raise ValueError(f"has a file or folder name longer than {MAX_PATH_PART} bytes, which no file system holds")
    return value


def host_address(value: str) -> str:
    """One address to bind: an IP address or a host name, nothing else (no options, no ports, no spaces)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOST_NAME.match(value):
        raise ValueError("is not a host name or IP address")
    return value
