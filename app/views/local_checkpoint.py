"""The sidebar's local-checkpoint box: a folder, weights file or cached Hub name, and for a
checkpoint written by other code (the authors' RMT or ARMT) the facts it does not store: the
segment size, the backbone, the pickle opt-in and, for an ARMT, the memory options neither its
files nor its weights decide (CheckpointInfo.open_options), prefilled with the default the loader
takes and saying so."""
from __future__ import annotations

import hashlib
from typing import Any

import streamlit as st

from rmt_core import CheckpointArgumentError, RMTLensError

from app import services, settings, state
from app.views.common import literal

PICKLE_WARNING = (
    "These weights are a **pickled** PyTorch file. Unpickling can run code hidden in the file. "
    "RMT Lens reads it with `torch.load(weights_only=True)`, which admits tensors and plain values "
    "only, but tick the box only if you trust where the file came from."
)
# CheckpointArgumentError.argument -> the box that gives it
BOX_OF_ARGUMENT = {"backbone": "the backbone box", "segment_size": "the segment size box",
                   "trust_pickle": "the pickle tick box"}


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
        st.error(literal(f"Could not load this model: {message(exc)}"))
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
    _memory_option_boxes(info, folder)
    if info.needs_pickle_opt_in and not settings.allow_pickle():
        st.error("These weights are a pickled PyTorch file, and this server does not read pickled files "
                 "(unpickling can run code hidden in the file). Convert them to safetensors, or ask the person "
                 f"who started the server to allow it ({settings.ALLOW_PICKLE}=1, `make app ALLOW_PICKLE=1`).")
        return None
    if info.needs_pickle_opt_in:
        st.warning(PICKLE_WARNING)
        st.checkbox("I trust this file: read the pickled weights", key=state.LOCAL_TRUST_PICKLE)
    try:
        options = load_options(folder)
        rmt_config = {"memory_options": dict(options["memory_options"])}
        info.check_options(rmt_config)  # as the loader checks them, before anything is read
    except RMTLensError as exc:
        st.error(literal(f"Could not load this model: {message(exc)}"))
        return None
    if options["segment_size"]:
        rmt_config["segment_size"] = options["segment_size"]
    needs = info.needs(options["trust_pickle"], rmt_config, options["backbone"])
    if needs:
        st.caption(literal("Still needed: " + "; ".join(f"{need.what} ({need.box})" for need in needs) + "."))
        return None
    return folder


def _option_key(name: str, folder: str) -> str:
    """The session-state key of a memory option's box for this checkpoint (each checkpoint its own boxes,
    so a default prefilled for one never carries over to another)."""
    return f"{state.LOCAL_MEMORY_OPTION}{name}:{hashlib.sha256(folder.encode()).hexdigest()[:12]}"


def _memory_option_boxes(info, folder: str) -> None:
    """One box per memory option neither the files nor the weights decide, prefilled with the loader's
    default (none for n_heads hidden by gating), with a caption saying the values are defaults and why."""
    opened = info.open_options()
    if not opened:
        return
    for option in opened:
        key = _option_key(option.name, folder)
        if option.kind is bool:
            st.checkbox(option.name, value=bool(option.default), key=key, help=option.meaning)
        else:
            st.number_input(option.name, min_value=1, value=option.default, step=1, key=key,
                            help=option.meaning, placeholder="needed: the weights do not show it")
    defaults = [o for o in opened if o.default is not None]
    if defaults:
        names = ", ".join(f"{o.name}={'on' if o.default else 'off'}" for o in defaults if o.kind is bool)
        whys = "; ".join(sorted({o.why for o in defaults}))
        st.caption(literal(f"Neither the files nor the weights say how this ARMT computes these: prefilled with the "
                           f"loader's defaults ({names}: {whys}). Change them only if it was trained otherwise."))
    for option in opened:
        if option.default is None:
            st.caption(literal(f"{option.name}: {option.why}; give the number it was trained with."))


def load_options(folder: str | None = None) -> dict[str, Any]:
    """services.load_model keyword arguments from the box's inputs (a backbone path checked by
    services.allowed_checkpoint; pickles only where settings.allow_pickle(); memory_options from the
    boxes of `folder`, the allowed path of the checkpoint, as (name, value) pairs). Raises
    rmt_core.CheckpointError for a backbone outside the allowed folders."""
    segment = st.session_state.get(state.LOCAL_SEGMENT_SIZE)
    backbone = (st.session_state.get(state.LOCAL_BACKBONE) or "").strip() or None
    memory_options: list[tuple[str, Any]] = []
    if folder is not None:
        for option in _open_options(folder):
            value = st.session_state.get(_option_key(option.name, folder), option.default)
            if value is not None:
                memory_options.append((option.name, bool(value) if option.kind is bool else int(value)))
    return {
        "trust_pickle": settings.allow_pickle() and bool(st.session_state.get(state.LOCAL_TRUST_PICKLE, False)),
        "segment_size": int(segment) if segment else None,
        "backbone": services.allowed_checkpoint(backbone) if backbone else None,
        "memory_options": tuple(sorted(memory_options)),
    }


def _open_options(folder: str):
    try:
        return services.inspect_checkpoint(folder).open_options()
    except RMTLensError:
        return []  # the box says what is wrong with the folder


def message(exc: BaseException) -> str:
    """A loading error in the box's terms: what is still needed (each with its box), or the box whose
    value does not fit ("the n_heads box: ..."); other errors as services.app_message words them."""
    if isinstance(exc, CheckpointArgumentError):
        if exc.needs:
            return (f"{exc.problem} Still needed: " + "; ".join(f"{need.what} ({need.box})" for need in exc.needs)
                    + ".")
        if exc.argument == "memory_options" and exc.option:
            return f"the {exc.option} box: {exc.problem}"
        if exc.argument in BOX_OF_ARGUMENT:
            return f"{BOX_OF_ARGUMENT[exc.argument]}: {exc.problem}"
    return services.app_message(exc)
