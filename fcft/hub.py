"""Can a hub repository be reached? Answered at validation time, without downloading anything."""

from __future__ import annotations

from typing import Optional


def problem(repo_id: str, repo_type: str, revision: Optional[str], key: str, filename: str) -> Optional[str]:
    """Why `repo_id` can't be used (not cached while offline, unreachable, gated, missing), or None.

    `key` is the config key that named the repository (e.g. model.hub_id), for the message.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type), str):
        return None
    local = "model.path=DIR to a local copy" if repo_type == "model" else "the data.*_path keys to local files"
    remedy = f"set {local}, or go online so that '{repo_id}' can be downloaded"
    if constants.HF_HUB_OFFLINE:
        return f"{key}: '{repo_id}' is not in the local hub cache and HF_HUB_OFFLINE is set: {remedy}"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision), timeout=10)
    except Exception as err:  # network errors, 401/403 on gated repos, 404
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            return f"{key}: '{repo_id}' is gated: accept its licence on the hub and set HF_TOKEN (or {remedy})"
        if status == 404:
            return f"{key}: '{repo_id}' was not found on the hub (check the id and revision)"
        return f"{key}: can't reach the hub for '{repo_id}' ({type(err).__name__}): {remedy}"
    return None
