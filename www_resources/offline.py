"""The offline policy: downloads only when allowed and the server answers a short probe; cache
look-ups; errors that say what is missing, where it was looked for and how to fetch it."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from www_resources.model_specs import _TRUE, PROBE_TIMEOUT_S, ModelUnavailableError


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """Whether a missing weight file may be fetched: the argument, else not when
    `WWW_OFFLINE` or `HF_HUB_OFFLINE` is set to a true value, else yes."""
    if allow_download is not None:
        return bool(allow_download)
    for variable in ("WWW_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return False
    return True


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the URL's host opens within `timeout` seconds.

    With an HTTP(S) proxy configured the probe cannot tell, so it answers True.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    parts = urlparse(url)
    if not parts.hostname:
        return False
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Give sockets opened without a timeout (urllib downloads) this one, for the block."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_timeout_s() -> float:
    """Socket timeout (seconds) for weight downloads: `$WWW_DOWNLOAD_TIMEOUT`, default 60."""
    return float(os.environ.get("WWW_DOWNLOAD_TIMEOUT", "60"))


@contextlib.contextmanager
def quiet_library_errors() -> Iterator[None]:
    """Silence library log records up to ERROR for the block (open_clip logs a cache miss as an
    error before raising; the exception we raise instead says it better)."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face Hub in offline mode for the block: files come from the local cache only.

    The hub client reads `HF_HUB_OFFLINE` once at import, so the module constant is switched
    as well as the environment variable; both are restored afterwards.
    """
    import huggingface_hub.constants as hub_constants

    previous_env = os.environ.get("HF_HUB_OFFLINE")
    previous_constant = hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous_constant
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder the hub client uses now."""
    import huggingface_hub.constants as hub_constants

    return Path(hub_constants.HF_HUB_CACHE)


def hf_endpoint() -> str:
    """The Hugging Face hub address the client talks to (`HF_ENDPOINT` or huggingface.co)."""
    import huggingface_hub.constants as hub_constants

    return getattr(hub_constants, "ENDPOINT", None) or "https://huggingface.co"


_CACHE_MISS_NAMES = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "URLError", "EntryNotFoundError"}


def is_cache_miss(error: BaseException) -> bool:
    """Whether an exception (or one it was raised from) means "file not cached / no network"."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in _CACHE_MISS_NAMES or isinstance(
            current, (ConnectionError, TimeoutError, socket.timeout, FileNotFoundError)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def weights_unavailable(spec: str, *, looked_in: str, reason: str, fetch: str, copy_hint: str,
                        what: str = "pretrained weights for") -> ModelUnavailableError:
    """The error for weights that are neither cached nor downloadable here: names the spec,
    where it looked, why, the command that fetches them with internet, and where to put them."""
    return ModelUnavailableError(
        f"{what} {spec!r}: not available on this machine.\n"
        f"  looked in: {looked_in}\n"
        f"  reason: {reason}\n"
        f"  to fetch them, run on a machine with internet:\n"
        f"    {fetch}\n"
        f"  then copy {copy_hint}"
    )


def download_refusal(allow_download: bool | None, url: str) -> str | None:
    """Why a download must not be tried (None when it may be)."""
    if not downloads_allowed(allow_download):
        return "not in the local cache, and downloads are off (WWW_OFFLINE / HF_HUB_OFFLINE or allow_download=False)"
    if not host_reachable(url):
        return f"not in the local cache, and {urlparse(url).hostname} cannot be reached (no internet?)"
    return None


def _close_matches_message(kind: str, name: str, known: list[str], *, show_all: bool, how_to_list: str) -> str:
    close = difflib.get_close_matches(name, known, n=8, cutoff=0.6)
    message = f"unknown {kind} architecture {name!r}."
    if close:
        message += f" Close matches: {close}."
    if show_all:
        message += f" Known architectures: {sorted(known)}."
    else:
        message += f" {len(known)} architectures are known; list them with {how_to_list}."
    return message


# -- torchvision ----------------------------------------------------------------------------
