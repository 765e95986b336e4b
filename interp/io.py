"""The one way the workbench writes files and folders: atomically.

Every write builds its result in a temporary sibling (`.NAME.tmp-XXXX`) and renames it into
place, so a reader sees the old content or the new one, never half of it. One behaviour
everywhere: files are 0644, data is fsynced before the rename (a checkpoint or an index shard
must survive a crash, and the cost is a few milliseconds a file), and the temporary is removed
on any error, so a failed or retried write leaves nothing behind. A process killed mid-write
can leave a temporary; `remove_temporaries` clears them where a resume starts.

Failures that are the user's to fix (a full disk, a read-only folder, a path under a file)
become one-line `WorkbenchError`s that name the path; `check_file_target` and
`check_dir_target` let a command refuse a bad output path before it starts its work.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.errors import WorkbenchError

FILE_MODE = 0o644
TMP_TAG = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _message(path: Path, e: BaseException) -> str | None:
    """A one-line explanation for the OS errors a user can fix, else None."""
    code = getattr(e, "errno", None)
    text = str(e)
    if code == errno.ENOSPC or "No space left" in text:
        return f"no space left on {str(path)!r}; free some space or write to another folder"
    if code == errno.EDQUOT:
        return f"disk quota exceeded writing {str(path)!r}; free some space or write to another folder"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {str(path)!r} ({os.strerror(code)}); choose a folder you can write to"
    if code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOENT):
        return f"cannot write {str(path)!r} ({os.strerror(code)}); choose another output path"
    return None


@contextmanager
def user_errors(path: str | Path) -> Iterator[None]:
    """Turn a fixable OS error raised inside the block into a WorkbenchError naming `path`."""
    try:
        yield
    except WorkbenchError:
        raise
    except Exception as e:
        msg = _message(Path(path), e)
        if msg is None:
            raise
        raise WorkbenchError(msg) from e


def _make_parent(path: Path) -> None:
    with user_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)


def write_with(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Atomically create `path` by calling `write(tmp)` on a temporary sibling file (for writers
    that want a file name, e.g. safetensors' save_file)."""
    path = Path(path)
    _make_parent(path)
    with user_errors(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600 files
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data, indent: int | None = 1) -> Path:
    return write_bytes(path, json.dumps(data, indent=indent).encode("utf-8"))


def write_tensors(path: str | Path, tensors: dict) -> Path:
    """A safetensors file of CPU-contiguous copies of `tensors`."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return write_with(path, lambda tmp: save_file(cpu, str(tmp)))


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for f in files:
            p = Path(root) / f
            try:
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
            except OSError:
                pass
            if p.stat().st_mode & 0o777 == 0o600:
                os.chmod(p, FILE_MODE)
        _fsync_dir(Path(root))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 with RENAME_EXCHANGE); False where the
    system or the filesystem cannot, and the caller falls back to two renames."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_dir(target: str | Path, fill: Callable[[Path], None], replace: bool = True) -> Path:
    """Build a folder with `fill(tmp)` in a temporary sibling, then rename it into place.
    An existing `target` is replaced (replace=True: swapped with the temporary in one step where
    Linux allows, so a reader or a kill never finds it missing) or kept (replace=False: another
    process finished the same folder first, e.g. a shared cache). On error nothing is left behind."""
    target = Path(target)
    _make_parent(target)
    with user_errors(target):
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_TAG}", dir=target.parent))
        try:
            fill(tmp)
            _fsync_tree(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders
            if target.exists() and replace and _exchange(tmp, target):  # one step: never a moment without target
                shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
            elif target.exists() and replace:
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            elif target.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                try:
                    os.replace(tmp, target)
                except OSError:
                    if not target.is_dir():
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)  # a racing writer finished first: keep theirs
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(target.parent)
    return target


def remove_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries a killed write left in `folder` (of `name` only, or of any file
    or folder); returns what was removed. Call it only where no other writer is running."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".{name}{TMP_TAG}*" if name else f".*{TMP_TAG}*"
    removed = []
    for p in folder.glob(pattern):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# -- checking an output path before the work starts ---------------------------------------------


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe(folder: Path, path: Path, what: str) -> None:
    """Create and delete an empty file in `folder`: the only test that holds for root, for
    read-only and virtual filesystems alike."""
    try:
        fd, name = tempfile.mkstemp(prefix=".interp-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else type(e).__name__
        raise WorkbenchError(f"cannot write {what} {str(path)!r} ({reason} in {str(folder)!r}); choose another path") from e


def _check_creatable(path: Path, what: str) -> None:
    """`path` does not exist yet: its nearest existing ancestor must be a folder we can write in."""
    base = _first_existing(path.parent)
    if not base.is_dir():
        raise WorkbenchError(f"{what} {str(path)!r} lies under {str(base)!r}, which is a file; choose another path")
    _probe(base, path, what)


def _given(path: str | Path, what: str, example: str) -> Path:
    """`path` as a Path; an empty one (which Path would read as the working folder) is refused."""
    if not str(path).strip():
        raise WorkbenchError(f"{what} is empty; give a path, e.g. {example}")
    return Path(path).expanduser()


def check_file_target(path: str | Path, what: str = "output file") -> Path:
    """Refuse, before any work, an output file path that cannot be written."""
    path = _given(path, what, "out/result.html")
    if path.is_dir():
        raise WorkbenchError(f"{what} {str(path)!r} is a folder; give a file path")
    if path.exists():
        _probe(path.parent, path, what)
        return path
    _check_creatable(path, what)
    return path


def check_dir_target(path: str | Path, what: str = "output folder") -> Path:
    """Refuse, before any work, an output folder path that cannot be created or written."""
    path = _given(path, what, "runs/result")
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"{what} {str(path)!r} is a file; give a folder path")
    if path.is_dir():
        _probe(path, path, what)
        return path
    _check_creatable(path, what)
    return path


def check_free_space(path: str | Path, need: int, what: str = "output folder") -> None:
    """Refuse, before any work, an output path whose filesystem has fewer than `need` bytes free."""
    path = Path(path).expanduser()
    base = _first_existing(path.absolute())
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return  # cannot tell: the atomic writer still refuses a full disk without leaving anything
    if free < need:
        raise WorkbenchError(f"{what} {str(path)!r} needs about {need / 1e6:,.1f} MB but its disk has {free / 1e6:,.1f} MB "
                             "free; free some space or write to another folder")  # fmt: skip


def check_replaceable(path: str | Path, names: set[str], what: str = "output folder") -> None:
    """Refuse, before any work, an existing folder that `write_dir` would replace although it holds
    more than an earlier result of the same command (the files `names`, shell patterns allowed):
    the user's own files."""
    from fnmatch import fnmatch

    path = Path(path).expanduser()
    if not path.is_dir():
        return
    ours = lambda name: TMP_TAG in name or any(fnmatch(name, n) for n in names)  # noqa: E731
    other = sorted(p.name for p in path.iterdir() if not ours(p.name))
    if other:
        shown = ", ".join(other[:3]) + (" …" if len(other) > 3 else "")
        raise WorkbenchError(f"{what} {str(path)!r} holds other files ({shown}) and would be replaced as a whole; "
                             "choose a new or empty folder")  # fmt: skip


# -- one writer at a time -------------------------------------------------------------------------


def _remove_empty_parents(path: Path, base: Path) -> None:
    """Remove the empty folders from `path` up to (not including) `base`."""
    while path != base and base in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


_HELD: set[tuple[str, int]] = set()  # (target, thread) pairs whose lock this process holds


@contextmanager
def writer_lock(target: str | Path, what: str = "output folder") -> Iterator[None]:
    """Hold the one-writer lock of `target` for the block: a second process writing the same target
    is refused at once instead of interleaving its files with the first's. The lock is an flock on
    a sibling `.NAME.lock` (released by the kernel when its process dies, kill -9 included) and the
    file is removed on the way out, so nothing stays on disk. The thread holding it may enter it
    again; another thread of the same process is refused like another process."""
    import fcntl
    import threading

    target = Path(target).expanduser().absolute()
    mine = (str(target), threading.get_ident())
    if mine in _HELD:  # this thread holds it already (a command's lock, then its library's): re-entered
        yield
        return
    base = _first_existing(target.parent)
    _make_parent(target)
    lock = target.with_name(f".{target.name}.lock")
    while True:
        with user_errors(lock):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            _remove_empty_parents(target.parent, base)
            raise WorkbenchError(f"another process is writing {what} {str(target)!r} right now; wait for it to finish or "
                                 "choose another path") from None  # fmt: skip
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file between our open and our lock: take the new one
            break
        os.close(fd)
    _HELD.add(mine)
    try:
        yield
    finally:
        _HELD.discard(mine)
        lock.unlink(missing_ok=True)
        os.close(fd)
        if not target.exists():
            _remove_empty_parents(target.parent, base)
