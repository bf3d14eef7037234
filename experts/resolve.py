"""Find model weights on this machine: a local path, or a Hugging Face id already in the local
cache. Never downloads: a missing model is an error that lists every place looked at."""
from __future__ import annotations

import os
from pathlib import Path


class ModelNotFound(FileNotFoundError):
    pass


def hf_cache_dir() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def resolve_model(name: str | os.PathLike, revision: str | None = None) -> Path:
    """A folder (or file) holding the model named `name`."""
    path = Path(name).expanduser()
    if path.exists():
        return path.resolve()
    looked = [f"local path {path.resolve()}"]
    text = str(name)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        looked.append(f"Hugging Face cache {hf_cache_dir()} (repo {text}, revision {revision or 'main'})")
        try:
            return Path(snapshot_download(text, revision=revision, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
            pass
    raise ModelNotFound(f"model {text!r} not found; looked in: " + "; ".join(looked)
                        + ". fusionweave never downloads weights: put them at a local path or in the Hugging Face "
                          "cache (e.g. `huggingface-cli download ID` on a machine with network)")
