"""Pretrained weights without a network: where the Hugging Face hub cannot be reached (a Kaggle notebook
with the internet off, a firewalled cluster), the run reads timm's weights from the local cache only.

Left to itself, huggingface_hub retries each download with back-off before it looks in the cache: about
45 s per entry here (no network), then the entry fails anyway unless its weights were cached. One check of
the hub per run, a few seconds at most, instead.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from planner_trainer.progress import Reporter

HUB_TIMEOUT_SECONDS = 5


def hub_unreachable() -> str | None:
    """Why huggingface_hub's endpoint (``HF_ENDPOINT``, else huggingface.co) does not answer; None when it does
    (any HTTP answer, an error status included, means the network reaches it)."""
    from huggingface_hub import constants

    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"),
                               timeout=HUB_TIMEOUT_SECONDS).close()
    except urllib.error.HTTPError:
        return None
    except OSError as error:  # URLError (no name, refused, a proxy's refusal) and timeouts
        return str(getattr(error, "reason", None) or error)
    return None


@contextmanager
def cached_weights_when_offline(pretrained: bool, reporter: Reporter) -> Iterator[None]:
    """Within the block, huggingface_hub reads the local cache only when the run wants pretrained weights and
    the hub cannot be reached (said in one line); a user's own ``HF_HUB_OFFLINE`` is left as it is. Restored
    afterwards: a notebook's next call checks again."""
    from huggingface_hub import constants

    why = hub_unreachable() if pretrained and not constants.HF_HUB_OFFLINE else None
    if why is None:
        yield
        return
    reporter.notice(f"the Hugging Face hub ({constants.ENDPOINT}) cannot be reached ({why}): pretrained weights "
                    "are read from the local cache only")
    variable = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # the processes started from here (data loader and Ray workers)
    constants.HF_HUB_OFFLINE = True  # this one: huggingface_hub read the variable when it was imported
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False
        if variable is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = variable
