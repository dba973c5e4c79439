"""The local stack's state folder is private: it holds input texts and secrets.

Redis's append-only file and Kafka's log hold request inputs, the log spool holds records, and the
folder holds Flower's generated password. So every folder in it is 0700, every file the stack
writes is 0600, and the services start under umask 077 (Redis has no per-file mode option).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE_UMASK = 0o077  # what the services write: files 0600, folders 0700
FLOWER_PASSWORD_FILE = "flower.password"


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (created, or narrowed if it exists)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600, also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def open_private_log(path: Path) -> int:
    """A file descriptor appending to ``path``, mode 0600 (also a log from before this version)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def read_password(path: Path) -> str:
    """The password stored in ``path``, or a new random one (not written: see :func:`keep_password`)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return secrets.token_urlsafe(18)


def keep_password(path: Path, password: str) -> str:
    """Store ``password`` in ``path`` (0600) unless a password is there already; returns the stored one,
    so two ``up`` racing on a fresh folder end with the same password."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return read_password(path)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password
