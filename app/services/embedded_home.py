"""Where the embedded PostgreSQL keeps its cluster: the project's `.data/`, or, when the server cannot reach
it, a directory of the project's own under the system's state or temporary directory.

Run as root, the server runs as an unprivileged user (`nobody`), which cannot traverse a clone inside a
private directory (`/root/project`, any `mktemp -d`: mode 0700). The cluster then lives in
`<root>/fluxbase-realtime[-<uid>]/<project>-<hash of its path>/`, the same one for every run from that
project. A directory there is used only if it is a real directory (not a symlink) owned by this user and
writable by no one else, so another local user cannot precreate it, or plant a symlink, to take the cluster
over; a world-writable root (/tmp) is used only with its sticky bit, so no one else can rename ours.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The system's state directory first (not shared with other users), then the temporary one.
DEFAULT_ROOTS = (Path("/var/lib"), Path(tempfile.gettempdir()))
PROJECT_DATA = Path(".data") / "postgres"


class UnsafeLocation(Exception):
    """A directory that must not hold the cluster; `str(error)` says which and why."""


@dataclass(frozen=True, slots=True)
class EmbeddedHome:
    """The cluster's data directory, and why it is not under the project's `.data/` (None when it is)."""

    data_dir: Path
    moved_because: str | None = None


def server_user(name: str = "nobody") -> tuple[int, int] | None:
    """(uid, gid) the server runs as when this process is root; None when it runs as this user (or the
    user is missing, which EmbeddedPostgres reports when it starts)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def blocking_directory(target: Path, uid: int, gid: int) -> Path | None:
    """The first existing directory on the way to `target` that (uid, gid) cannot traverse, or None."""
    # Mode bits rather than os.access, which answers for this process and not for the server user.
    for directory in reversed((target, *target.parents)):
        try:
            st = directory.stat()
        except FileNotFoundError:
            break  # created later, by us, traversable
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


def describe(directory: Path) -> str:
    return f"{directory} ({stat.filemode(directory.stat().st_mode)})"


def project_key(project_dir: Path) -> str:
    """A directory name for the project: readable, and unique to its resolved path."""
    resolved = str(project_dir.resolve())
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", project_dir.resolve().name)[:40].lstrip(".") or "project"
    return f"{name}-{digest}"


def embedded_home(project_dir: Path, *, system_user: str = "nobody") -> EmbeddedHome:
    """The data directory the embedded server should use for a project run from `project_dir`."""
    return locate(project_dir, server_user(system_user), system_user=system_user)


def locate(
    project_dir: Path,
    run_as: tuple[int, int] | None,
    *,
    system_user: str = "nobody",
    roots: Sequence[Path] = DEFAULT_ROOTS,
) -> EmbeddedHome:
    """embedded_home for a server that runs as `run_as` (None: as this process), trying `roots` in turn."""
    default = project_dir.resolve() / PROJECT_DATA
    if run_as is None:
        return EmbeddedHome(default)
    blocked = blocking_directory(default.parent, *run_as)
    if blocked is None:
        return EmbeddedHome(default)
    reason = f"{system_user!r} (the user PostgreSQL runs as) cannot traverse {describe(blocked)}"
    refusals = []
    for root in roots:
        try:
            home = _private_directory(root, project_key(project_dir), run_as)
        except (UnsafeLocation, OSError) as error:
            refusals.append(str(error))
            continue
        return EmbeddedHome(home / "postgres", moved_because=reason)
    raise UnsafeLocation(
        f"{reason}, and no other place for the embedded cluster is safe: {'; '.join(refusals)}. "
        "Clone the project where that user can reach it, or set DATABASE_URL"
    )


def _private_directory(root: Path, key: str, user: tuple[int, int]) -> Path:
    """`<root>/fluxbase-realtime[-uid]/<key>`, created if missing, every part checked (see module doc)."""
    st = root.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeLocation(f"{root} is not a directory")
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise UnsafeLocation(f"{describe(root)} is writable by everyone without the sticky bit")
    blocked = blocking_directory(root, *user)
    if blocked is not None:
        raise UnsafeLocation(f"the server user cannot traverse {describe(blocked)}")
    # Shared roots get a name per user, so that two users' runs never meet in one directory.
    shared = bool(st.st_mode & stat.S_IWOTH)
    base = root / (f"fluxbase-realtime-{os.geteuid()}" if shared else "fluxbase-realtime")
    _own_directory(base)
    home = base / key
    _own_directory(home)
    return home


def _own_directory(path: Path) -> None:
    """Make `path` a directory of this user's, mode 0755, or refuse one that someone else could control."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    try:
        # O_NOFOLLOW: a symlink in its place is refused, not followed; the checks and the chmod act on
        # the directory opened, not on whatever the name points to a moment later.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        raise UnsafeLocation(f"{path} exists and is not a directory (a symlink?): remove it") from error
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise UnsafeLocation(f"{path} belongs to uid {st.st_uid}, not to this user: remove it")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeLocation(
                f"{path} ({stat.filemode(st.st_mode)}) is writable by other users: remove it"
            )
        os.fchmod(fd, 0o755)  # the umask (077 is common for root) would lock the server user out
    finally:
        os.close(fd)
