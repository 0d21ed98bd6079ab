"""Credentials read from files (Kubernetes Secrets mounted by the chart), re-read when rotated."""

import os
from pathlib import Path

from pydantic import SecretStr

from .base import AuthFailed


class SecretFile:
    """A credential in a file. The value is held as SecretStr and never appears in repr or messages."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what  # e.g. "electricitymaps API key", for messages
        self._stamp: tuple[int, int, int] | None = None
        self._value = SecretStr("")

    def __repr__(self) -> str:
        return f"SecretFile({str(self.path)!r})"

    def get(self) -> SecretStr:
        """The current value; a rotated Secret (new file content) is picked up on the next call."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self._stamp:
                self._value = SecretStr(self.path.read_text(encoding="utf-8").strip())
                self._stamp = stamp
        except OSError as exc:
            raise AuthFailed(f"cannot read the {self.what} from {self.path}: {exc.strerror}") from None
        if not self._value.get_secret_value():
            raise AuthFailed(f"the {self.what} file {self.path} is empty")
        return self._value
