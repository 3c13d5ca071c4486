"""The sidebar's local-checkpoint box: a folder, weights file or cached Hub name, and for a
checkpoint written by other code (the authors' RMT or ARMT) the facts it does not store."""
from __future__ import annotations

from typing import Any

import streamlit as st

from rmt_core import RMTLensError

from app import services, settings, state
from app.views.common import literal

PICKLE_WARNING = (
    "These weights are a **pickled** PyTorch file. Unpickling can run code hidden in the file. "
    "RMT Lens reads it with `torch.load(weights_only=True)`, which admits tensors and plain values "
    "only, but tick the box only if you trust where the file came from."
)


def choose() -> str | None:
    """Render the box; the path to load, or None while something is missing (said on screen)."""
    folder = st.text_input(
        "Checkpoint folder", key=state.LOCAL_FOLDER,
        placeholder="a folder, a weights file, or org/name from the local Hugging Face cache",
    ).strip()
    if not folder:
        return None
    try:
        folder = services.allowed_checkpoint(folder)
        info = services.inspect_checkpoint(folder)
    except RMTLensError as exc:
        st.error(literal(f"Could not load this model: {services.app_message(exc)}"))
        return None
    if info.format not in ("authors", "armt", "pickled"):
        return folder  # RMT Lens's own, or a format whose refusal the loader explains
    st.info(f"Found {literal(info.describe())}. It does not store everything RMT Lens needs:")
    if not info.has_segment_size:
        st.number_input("Segment size it was trained with (tokens)", min_value=1, value=None, step=1,
                        key=state.LOCAL_SEGMENT_SIZE)
    if not info.has_backbone_config:
        st.text_input("Backbone: a folder with its config.json, or a Hugging Face name in the local cache",
                      key=state.LOCAL_BACKBONE, placeholder="e.g. /models/gpt2 or openai-community/gpt2")
    if info.needs_pickle_opt_in and not settings.allow_pickle():
        st.error("These weights are a pickled PyTorch file, and this server does not read pickled files "
                 "(unpickling can run code hidden in the file). Convert them to safetensors, or ask the person "
                 f"who started the server to allow it ({settings.ALLOW_PICKLE}=1, `make app ALLOW_PICKLE=1`).")
        return None
    if info.needs_pickle_opt_in:
        st.warning(PICKLE_WARNING)
        st.checkbox("I trust this file: read the pickled weights", key=state.LOCAL_TRUST_PICKLE)
    try:
        options = load_options()
    except RMTLensError as exc:
        st.error(f"Could not load this model: {exc}")
        return None
    segment = {"segment_size": options["segment_size"]} if options["segment_size"] else None
    missing = info.missing(options["trust_pickle"], segment, options["backbone"])
    if missing:
        st.caption(literal("Still needed: " + "; ".join(item.split(":")[0] for item in missing) + "."))
        return None
    return folder


def load_options() -> dict[str, Any]:
    """services.load_model keyword arguments from the box's inputs (a backbone path checked by
    services.allowed_checkpoint; pickles only where settings.allow_pickle()). Raises
    rmt_core.CheckpointError for a backbone outside the allowed folders."""
    segment = st.session_state.get(state.LOCAL_SEGMENT_SIZE)
    backbone = (st.session_state.get(state.LOCAL_BACKBONE) or "").strip() or None
    return {
        "trust_pickle": settings.allow_pickle() and bool(st.session_state.get(state.LOCAL_TRUST_PICKLE, False)),
        "segment_size": int(segment) if segment else None,
        "backbone": services.allowed_checkpoint(backbone) if backbone else None,
    }
