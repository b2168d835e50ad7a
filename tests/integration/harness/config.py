"""Configurations for ficus as Python dicts, written out as block-style YAML.
Strings are always double-quoted so YAML 1.1 never reads "off" or "1s" as
anything but a string; tests that need hand-written YAML pass text instead."""

import json
import re

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _key(k):
    k = str(k)
    return k if _PLAIN_KEY.match(k) else json.dumps(k)


def _scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{}"  # only reached for empty mappings
    if isinstance(v, (list, tuple)):
        return "[]"
    return json.dumps(str(v))


def _emit(obj, indent, out):
    pad = " " * indent
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list, tuple)) and v:
                out.append(f"{pad}{_key(k)}:")
                _emit(v, indent + 2, out)
            else:
                out.append(f"{pad}{_key(k)}: {_scalar(v)}")
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            if isinstance(item, dict) and item:
                sub = []
                _emit(item, indent + 2, sub)
                sub[0] = pad + "- " + sub[0][indent + 2 :]
                out.extend(sub)
            elif isinstance(item, (list, tuple)) and item:
                out.append(pad + "-")
                _emit(item, indent + 2, out)
            else:
                out.append(f"{pad}- {_scalar(item)}")
    else:
        out.append(pad + _scalar(obj))


def to_yaml(obj):
    """Block-style YAML for a tree of dicts, lists and scalars."""
    out = []
    _emit(obj, 0, out)
    return "\n".join(out) + "\n"


def route(name, match, backends, **extra):
    """A route entry. backends: a group name, or a list of (group, weight)
    pairs or ready-made backend dicts."""
    if isinstance(match, str):
        match = {"path_prefix": match}
    if isinstance(backends, str):
        backends = [{"target_group": backends, "weight": 1}]
    else:
        backends = [b if isinstance(b, dict) else {"target_group": b[0], "weight": b[1]}
                    for b in backends]
    return {"name": name, "match": match, "backends": backends, **extra}


def config(groups, routes, server=None, **top):
    """A whole config: groups maps a name to an address (or list of them, or
    a ready group dict); routes is a list of route entries."""
    tgs = {}
    for name, g in groups.items():
        if isinstance(g, dict):
            tgs[name] = g
        elif isinstance(g, (list, tuple)):
            tgs[name] = {"targets": list(g)}
        else:
            tgs[name] = {"targets": [g]}
    out = {"server": dict(server or {})}
    out.update(top)
    out["target_groups"] = tgs
    out["routes"] = routes
    return out
