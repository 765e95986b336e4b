"""What users type to name parts of a model, parsed once for every front end (CLI flags,
dashboard text boxes): layer lists such as 'all', '3', '0,5,7' or '10-15'."""

from __future__ import annotations

from interp.errors import WorkbenchError

LAYERS_HELP = "'all', '3', '0,5,7' or '10-15'"


def parse_layers(text: str | None, n_layers: int | None = None) -> list[int] | None:
    """None for 'all' (or nothing typed), else the sorted distinct layers; with `n_layers`, every
    layer must exist. Bad text is a one-line WorkbenchError naming the accepted forms."""
    if text is None or not text.strip() or text.strip().lower() == "all":
        return None
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise WorkbenchError(f"bad layers {text!r}: use {LAYERS_HELP}") from None
        if first < 0 or last < first:
            raise WorkbenchError(f"bad layers {text!r}: ranges go from a smaller to a larger layer, e.g. {LAYERS_HELP}")
        out.update(range(first, last + 1))
    layers = sorted(out)
    if n_layers is not None and layers[-1] >= n_layers:
        raise WorkbenchError(f"layer {layers[-1]} is out of range: the model has layers 0..{n_layers - 1}")
    return layers
