"""Where a dictionary reads and writes: its *site*.

A site names the hook a dictionary encodes (input) and the hook it reconstructs (output), per layer:

  mlp         a transcoder: the MLP's own input (the normalized stream it reads, `mlp.hook_in`)
              -> the MLP's output (`hook_mlp_out`); its features are key-value memories
  mlp_out     an SAE on the MLP's output
  resid_pre   an SAE on the residual stream before the block
  resid_post  an SAE on the residual stream after the block

Every site is d_model wide on both sides. Hook names come from interp.hooks only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interp import hooks
from interp.errors import WorkbenchError


@dataclass(frozen=True)
class Site:
    name: str  # "mlp" | "mlp_out" | "resid_pre" | "resid_post"
    kind: str  # "transcoder" (input != output) | "sae" (input == output)
    input: str  # hook kind (interp.hooks.name) the dictionary encodes
    output: str  # hook kind it reconstructs
    description: str

    def input_hook(self, layer: int) -> str:
        return hooks.name(self.input, layer)

    def output_hook(self, layer: int) -> str:
        return hooks.name(self.output, layer)

    @property
    def is_transcoder(self) -> bool:
        return self.kind == "transcoder"


SITES: dict[str, Site] = {}


def register(site: Site) -> None:
    """Add a site; refuses duplicates."""
    if site.name in SITES:
        raise ValueError(f"site {site.name!r} is already registered")
    SITES[site.name] = site


register(Site("mlp", "transcoder", "mlp_normed", "mlp_out", "transcoder: MLP input -> MLP output"))
register(Site("mlp_out", "sae", "mlp_out", "mlp_out", "SAE on the MLP output"))
register(Site("resid_pre", "sae", "resid_pre", "resid_pre", "SAE on the residual stream before the block"))
register(Site("resid_post", "sae", "resid_post", "resid_post", "SAE on the residual stream after the block"))


def get_site(name: str) -> Site:
    if name not in SITES:
        raise WorkbenchError(f"unknown site {name!r}; choose {', '.join(repr(s) for s in SITES)}")
    return SITES[name]


# -- other tools' names for our sites --------------------------------------------------------------

_TL_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_mlp_out|mlp\.hook_in|hook_mlp_in|"
                      r"ln2\.hook_normalized)$")
_TL_SITE = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_mlp_out": "mlp_out",
            "mlp.hook_in": "mlp"}  # fmt: skip


def site_from_tl_hook(hook_name: str, transcoder: bool) -> tuple[str, int]:
    """(site, layer) of a TransformerLens hook name as SAELens writes it; a transcoder's input hook
    must be the MLP's own input (`blocks.L.mlp.hook_in`)."""
    m = _TL_HOOK.match(hook_name or "")
    if not m:
        raise WorkbenchError(f"this dictionary reads hook {hook_name!r}, a site the workbench does not serve; "
                             f"sites: {', '.join(SITES)} (hooks blocks.L.hook_resid_pre/post, hook_mlp_out, mlp.hook_in)")
    layer, kind = int(m.group(1)), m.group(2)
    if kind in ("hook_mlp_in", "ln2.hook_normalized"):
        raise WorkbenchError(f"this dictionary reads {hook_name!r} (the MLP input before or without the norm's weight), "
                             f"not what the MLP reads (blocks.{layer}.mlp.hook_in); it was made for another site")
    site = _TL_SITE[kind]
    if transcoder and site == "mlp_out":
        raise WorkbenchError(f"a transcoder reading {hook_name!r} is not an MLP transcoder; it was made for another site")
    if transcoder:
        site = "mlp"
    return site, layer


def tl_hook_names(site: Site, layer: int) -> tuple[str, str]:
    """(input hook, output hook) as SAELens's metadata spells them."""
    return site.input_hook(layer), site.output_hook(layer)


_SPARSIFY = re.compile(r"^(?:model\.)?layers\.(\d+)(\.mlp)?$")


def site_from_sparsify(hookpoint: str, transcode: bool) -> tuple[str, int]:
    """(site, layer) of a sparsify hookpoint: 'layers.N' is the block's output (resid_post),
    'layers.N.mlp' the MLP (a transcoder when trained with transcode, else its output)."""
    m = _SPARSIFY.match(hookpoint)
    if not m:
        raise WorkbenchError(f"sparsify hookpoint {hookpoint!r} is not a site the workbench serves "
                             "(layers.N or layers.N.mlp)")  # fmt: skip
    layer = int(m.group(1))
    if m.group(2):
        return ("mlp" if transcode else "mlp_out"), layer
    if transcode:
        raise WorkbenchError(f"sparsify hookpoint {hookpoint!r} transcodes a whole block, not a site the workbench serves")
    return "resid_post", layer


def sparsify_hookpoint(site: str, layer: int) -> str:
    return f"layers.{layer}" if site == "resid_post" else f"layers.{layer}.mlp"
