"""Supernodes: features (and error nodes) grouped by hand under a name, drawn as one node.

A grouping is a mapping name -> list of node ids, the ids `Graph.describe` gives ("F3.17@4" a feature,
"err3@4" an error node). On disk it is a JSON object of that shape (`interp graph --supernodes FILE`);
graph.json records it under "supernodes". A node belongs to one supernode at most; tokens and logits,
the graph's two ends, are never grouped. A supernode's edges are the sums of its members' edges
(interp.graphs.view); an edge between two members of the same supernode is inside it and not drawn.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from interp.errors import WorkbenchError

GROUPABLE = ("feature", "error")  # the kinds of node a supernode may hold


def check_supernodes(groups: object, kinds: Mapping[str, str] | None, where: str = "supernodes") -> dict[str, list[str]]:
    """`groups` checked against the graph's nodes (`kinds`: node id -> kind; None: its shape only, before
    the graph exists) and returned as a plain dict name -> member ids (order kept, a repeated id once).
    One-line WorkbenchError for anything else: not a mapping of names to lists of ids, an unknown id,
    a token or logit, a node in two supernodes, a name that is also a node's id."""
    if not isinstance(groups, Mapping):
        raise WorkbenchError(f"{where} must be a JSON object of name -> list of node ids, got {type(groups).__name__}")
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for name, members in groups.items():
        if not isinstance(name, str) or not name.strip():
            raise WorkbenchError(f"{where}: a supernode's name must be a non-empty string, got {name!r}")
        if kinds is not None and name in kinds:
            raise WorkbenchError(f"{where}: the supernode name {name!r} is a node's id; pick another name")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise WorkbenchError(f"{where}: supernode {name!r} must list one or more node ids (strings)")
        for m in dict.fromkeys(members):
            if kinds is not None and m not in kinds:
                raise WorkbenchError(f"{where}: supernode {name!r} names {m!r}, which is no node of this graph; name a "
                                     "feature as F<layer>.<feature>@<pos>, an error node as err<layer>@<pos>")  # fmt: skip
            if kinds is not None and kinds[m] not in GROUPABLE:
                raise WorkbenchError(f"{where}: supernode {name!r} names {m!r}, a {kinds[m]}; only features and "
                                     "error nodes are grouped")  # fmt: skip
            if m in owner:
                raise WorkbenchError(f"{where}: {m!r} is in two supernodes ({owner[m]!r} and {name!r})")
            owner[m] = name
        out[name] = list(dict.fromkeys(members))
    return out


def read_supernodes(path: str | Path) -> object:
    """The JSON a supernodes file holds (checked by `check_supernodes` against a graph)."""
    path = Path(path).expanduser()
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise WorkbenchError(f"cannot read the supernodes file {str(path)!r} ({type(e).__name__})") from None
    except json.JSONDecodeError as e:
        raise WorkbenchError(f"the supernodes file {str(path)!r} is not JSON ({e.msg}, line {e.lineno})") from None


def owners(groups: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """member id -> its supernode's name."""
    return {m: name for name, members in groups.items() for m in members}
