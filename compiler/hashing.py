"""sha256 of files, with a cache keyed by (path, size, mtime, inode) so that `--check` stays cheap on big inputs.

The cache lives outside the build (in the user's cache folder): builds stay a pure function of their inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 20


def _cache_file() -> Path:
    root = os.environ.get("FTC_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "ftc")
    return Path(root) / "sha256-v1.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def _valid(entry: object) -> bool:
    """A cache entry as `sha256` writes it: [size, mtime_ns, inode, hex digest]."""
    return (
        isinstance(entry, list) and len(entry) == 4 and all(isinstance(x, int) and not isinstance(x, bool) for x in entry[:3])
        and isinstance(entry[3], str) and len(entry[3]) == 64
    )


class FileHasher:
    """Hashes files once per change. Use as a context manager so the cache is saved at the end."""

    def __init__(self, use_cache: bool = True) -> None:
        self.use_cache = use_cache
        self._path = _cache_file()
        self._entries: dict[str, list] = {}
        self._dirty = False
        if use_cache:
            try:
                entries = json.loads(self._path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # ValueError covers bytes that are not UTF-8
                entries = None
            self._entries = {k: v for k, v in entries.items() if _valid(v)} if isinstance(entries, dict) else {}  # a cache edited out of shape only costs time

    def __enter__(self) -> FileHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.save()

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self._entries.get(key)
        if self.use_cache and hit and hit[:3] == stamp:
            return hit[3]
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        self._entries[key] = [*stamp, value]
        self._dirty = True
        return value

    def save(self) -> None:
        if not (self.use_cache and self._dirty):
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._entries, sort_keys=True))
            os.replace(tmp, self._path)
        except OSError:
            pass  # a cache that cannot be written only costs time
