# SPDX-License-Identifier: GPL-3.0-or-later
"""Out of memory in the reconstructor's heads: retry with fewer frames per chunk, down to one,
then fail with one clear error (the caller has written nothing yet). In the backbone, whose
attention spans every frame and so cannot be chunked: the same clear error at once."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

# torch.cuda.OutOfMemoryError is the same class; older torch only has the cuda name
_OOM_ERROR = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class ReconstructionOutOfMemory(RuntimeError):
    """Reconstruction ran out of memory even at the smallest chunk."""


# what CPU allocators put in a plain RuntimeError (torch's own: "DefaultCPUAllocator: can't allocate memory")
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; CPU allocators raise a RuntimeError saying so."""
    if isinstance(err, _OOM_ERROR):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _OOM_MESSAGES)


def _free_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_oom_retry(fn: Callable[[int], T], chunk: int, failure: str) -> tuple[T, int]:
    """fn(chunk) -> (its result, the chunk that worked). On out of memory: free the cache, halve the
    chunk and retry, down to 1; then free the cache and raise ReconstructionOutOfMemory(`failure`)."""
    chunk = max(1, int(chunk))
    while True:
        try:
            return fn(chunk), chunk
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            if chunk == 1:
                _free_cached_memory()
                raise ReconstructionOutOfMemory(failure) from err
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        # outside the except block: the traceback (and the tensors its frames hold) is gone
        _free_cached_memory()
        chunk //= 2
        log.warning("out of memory (%s); retrying with %d frame(s) per chunk", reason[:200], chunk)


def run_or_fail_clearly(fn: Callable[[], T], failure: str) -> T:
    """fn() for work that cannot be split (the backbone): out of memory is ReconstructionOutOfMemory at once."""
    return run_with_oom_retry(lambda _chunk: fn(), 1, failure)[0]
