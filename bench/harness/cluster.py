"""Ray token authentication and private session files for ``bench.harness.run``.

Ray 2.60 authenticates every gRPC and HTTP request with one static token when
``RAY_AUTH_MODE=token``. The token comes from, in this order: ``RAY_AUTH_TOKEN`` (the token
itself), ``RAY_AUTH_TOKEN_PATH`` (a file holding it), ``~/.ray/auth_token``. A local
``ray.init()`` turns token mode on by itself when ``RAY_AUTH_MODE`` is unset, but ``ray start``
and ``ray.init(address=...)`` do not, and Ray writes its token file with the process umask
(``0644``) and makes its temp and session directories ``0777``. So ``bench.harness.run``:

* always sets ``RAY_AUTH_MODE=token`` (a ``disabled`` in the environment is overridden, with a
  warning in ``run.log``);
* local runs: uses the token Ray would use, creating ``~/.ray/auth_token`` as ``0600`` in a
  ``0700`` directory when there is none, and keeps Ray's session files under a ``0700``
  directory of its own (:func:`private_temp_dir`);
* ``--address`` runs: requires the cluster's token and stops before any work, in one line,
  when none is found (:func:`token_source`).

Nothing here starts Ray; ``bench.harness.run``'s execution module calls :func:`prepare_ray_auth` right
before ``ray.init``.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from typing import Optional

log = logging.getLogger("bench")

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"

MISSING_TOKEN = (
    "--address {address}: the cluster's Ray auth token was not found; set RAY_AUTH_TOKEN=<token> "
    "or RAY_AUTH_TOKEN_PATH=<file>, or copy it to ~/.ray/auth_token (print it on the head with "
    "`ray get-auth-token`)"
)


def default_token_path() -> str:
    """Ray's default token file, ``~/.ray/auth_token`` (``$HOME`` at call time)."""
    return os.path.join(os.path.expanduser("~"), ".ray", "auth_token")


def _tighten(path: str) -> None:
    """Make a token file ``0600`` when it is ours and readable by group or others."""
    st = os.stat(path)
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        try:
            os.chmod(path, 0o600)
            log.warning("Ray auth token %s was readable by other users; made it 0600", path)
        except OSError as e:  # e.g. a read-only mount
            log.warning("Ray auth token %s is readable by other users (chmod failed: %s)", path, e)


def _nonempty_file(path: str) -> bool:
    try:
        with open(path) as f:
            return bool(f.read().strip())
    except OSError:
        return False


def token_source() -> Optional[str]:
    """Where Ray will read the token from (``"RAY_AUTH_TOKEN"`` or a file path), in Ray's
    order, or ``None`` when there is none.

    Raises:
        ValueError: ``RAY_AUTH_TOKEN_PATH`` is set but names no readable, non-empty file (Ray
            aborts on that rather than falling back).
    """
    if os.environ.get(TOKEN_ENV, "").strip():
        return TOKEN_ENV
    path = os.environ.get(TOKEN_PATH_ENV)
    if path:
        if not _nonempty_file(path):
            raise ValueError(f"{TOKEN_PATH_ENV}={path} is not a readable file holding a token")
        return path
    path = default_token_path()
    return path if _nonempty_file(path) else None


def create_default_token() -> str:
    """Write a new 256-bit token to ``~/.ray/auth_token`` as ``0600`` (directory ``0700`` when
    created here), as ``ray get-auth-token --generate`` would but never world-readable.

    Returns:
        The file's path.
    """
    path = default_token_path()
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def check_address_token(address: str) -> str:
    """Validate that a run joining ``address`` has the cluster's token.

    Returns:
        The token's source (see :func:`token_source`).

    Raises:
        ValueError: one line naming ``--address`` and how to provide the token.
    """
    try:
        src = token_source()
    except ValueError as e:
        raise ValueError(f"--address {address}: {e}") from None
    if src is None:
        raise ValueError(MISSING_TOKEN.format(address=address))
    return src


def private_temp_dir() -> str:
    """``<tmp>/facefill-ray-<uid>/ray``: Ray's temp dir for local runs, inside a ``0700``
    directory owned by this user (Ray makes its own temp and session dirs ``0777``; the
    parent keeps other users out of them).

    Raises:
        RuntimeError: the parent exists and is not a directory owned by this user.
    """
    base = os.path.join(tempfile.gettempdir(), f"facefill-ray-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RuntimeError(f"{base} is not a directory owned by uid {os.getuid()}; remove it or set TMPDIR")
    if st.st_mode & 0o077:
        os.chmod(base, 0o700)
    return os.path.join(base, "ray")


def _refresh_ray_config() -> None:
    """Make this process's Ray see the auth mode and token set here even when Ray was imported
    (and read its config) before: the refresh Ray itself does when it turns token mode on."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def prepare_ray_auth(address: Optional[str]) -> dict:
    """Set up token authentication for the coming ``ray.init`` in this process.

    Sets ``RAY_AUTH_MODE=token`` (overriding ``disabled``). ``address=None`` (a local cluster):
    makes sure a token exists (creating ``~/.ray/auth_token`` 0600 when none is found) and
    returns ``{"_temp_dir": private_temp_dir()}`` for ``ray.init``. With an address: the token
    must already be available (:func:`check_address_token`); returns ``{}``.

    Raises:
        ValueError: ``--address`` without a token (one line, for the CLI).
    """
    if os.environ.get(AUTH_MODE, "token").lower() != "token":
        log.warning("%s=%s ignored: facefill always uses Ray token authentication", AUTH_MODE, os.environ[AUTH_MODE])
    os.environ[AUTH_MODE] = "token"
    src = check_address_token(address) if address else token_source()
    if src is None:
        src = create_default_token()
        log.info("created Ray auth token %s (0600)", src)
    elif src != TOKEN_ENV:
        _tighten(src)
    _refresh_ray_config()
    return {} if address else {"_temp_dir": private_temp_dir()}
