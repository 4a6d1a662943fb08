"""The landing zone's file operations, none of which follows a symbolic link.

Upstream writes below LANDING_DIR, so nothing there is trusted to be what its path says: a symbolic
link planted as the table folder, a stage folder (`incoming/`, `processing/`, `archived/`, `rejected/`), a
day's folder, a run's claim folder, the lock file or a file must never make a load read, write, rename, list
or delete anything elsewhere. So every operation here is relative to directory descriptors: from LANDING_DIR
down, each folder is opened with `O_DIRECTORY | O_NOFOLLOW` relative to its parent's descriptor, and entries
are listed, hashed, created (`O_CREAT | O_EXCL | O_NOFOLLOW`), renamed and removed (`shutil.rmtree` with
`dir_fd` for a rejected folder) relative to the descriptor of their folder. A link anywhere on the way makes
the operation fail instead of following it. We chose descriptors over checking each component with `lstat`
and then using the path, because a check and a later use by path are two steps, and a link swapped in
between them defeats the check; an open descriptor cannot be redirected. LANDING_DIR itself is
configuration, not upstream's, and may be a link (a mount, say).
"""

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class LandingLinkError(ValueError):
    """A path of the landing lifecycle is a symbolic link, or not the kind of entry it must be: refused,
    never followed (see the module docstring)."""


def lstat(folder: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def refusal(path: Path, parent: int, name: str, kind: str = "folder") -> LandingLinkError:
    info = lstat(parent, name)
    what = "a symbolic link" if info is not None and stat.S_ISLNK(info.st_mode) else f"not a {kind}"
    return LandingLinkError(f"{path} is {what}; landing paths are never followed")


def open_child(parent: int, name: str, path: Path, create: bool = False) -> int | None:
    """The folder `name` in the folder open as `parent`, opened without following a link; None if it does not
    exist and `create` is false. `path` is what an error calls it."""
    while True:
        try:
            return os.open(name, FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise refusal(path, parent, name) from None
            raise


def open_folder(root: Path, parts: tuple[str, ...], create: bool = False) -> int | None:
    """A descriptor of `root/parts...`, each part opened relative to the one before without following a link
    (`root`, the configured LANDING_DIR, is opened as it is); None if a part is missing and `create` is false."""
    if create:
        os.makedirs(root, exist_ok=True)
    try:
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    path = Path(root)
    try:
        for part in parts:
            path = path / part
            child = open_child(folder, part, path, create)
            os.close(folder)
            folder = child
            if folder is None:
                return None
    except BaseException:
        if folder is not None:
            os.close(folder)
        raise
    return folder


@contextmanager
def opened_folder(root: Path, parts: tuple[str, ...], create: bool = False) -> Iterator[int | None]:
    folder = open_folder(root, parts, create)
    try:
        yield folder
    finally:
        if folder is not None:
            os.close(folder)


def closing(stack: ExitStack, descriptor: int | None) -> int | None:
    if descriptor is not None:
        stack.callback(os.close, descriptor)
    return descriptor


def read_regular(folder: int, name: str, path: Path) -> bytes:
    try:
        descriptor = os.open(name, FILE_FLAGS, dir_fd=folder)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise refusal(path, folder, name, "regular file") from None
        raise
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise LandingLinkError(f"{path} is not a regular file; landing paths are never followed")
        return handle.read()


def sha256_of_regular_file(folder: int, name: str) -> str | None:
    try:
        descriptor = os.open(name, FILE_FLAGS, dir_fd=folder)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()


def remove(folder: int, name: str) -> None:
    """Remove an entry (a rejected folder with all it holds); a link is removed itself, never followed."""
    info = lstat(folder, name)
    if info is None:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=folder)
    else:
        os.unlink(name, dir_fd=folder)
