#!/usr/bin/env python3
"""Builds docs/demo/corpus.jsonl: the first paragraphs of CPython standard-library docstrings.

Origin: the docstrings of Python 3.11's standard library modules and their public functions and
classes. Licence: Python Software Foundation License (see docs/demo/README.md).
Run: python3 scripts/make_demo_corpus.py > docs/demo/corpus.jsonl
"""
import importlib
import inspect
import json
import sys
import warnings

warnings.filterwarnings("ignore")
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "__main__", "pydoc_data", "lib2to3",
        "ensurepip", "venv", "test", "idle", "msvcrt", "winreg", "winsound", "_winapi", "nt"}


def first_paragraph(doc, limit=600):
    if not doc:
        return None
    para = inspect.cleandoc(doc).split("\n\n")[0].strip()
    para = " ".join(para.split())
    if len(para) < 20 or para.startswith(("Return ", "Initialize self")) and len(para) < 60:
        return None
    return para[:limit]


docs, seen = [], set()
for name in sorted(sys.stdlib_module_names):
    if name.startswith("_") or name in SKIP:
        continue
    try:
        mod = importlib.import_module(name)
    except Exception:
        continue
    text = first_paragraph(mod.__doc__)
    if text and text not in seen:
        seen.add(text)
        docs.append({"id": f"mod:{name}", "text": f"{name}: {text}", "metadata": {"module": name, "kind": "module"}})
    members = 0
    for attr in sorted(dir(mod)):
        if attr.startswith("_") or members >= 3:
            continue
        obj = getattr(mod, attr, None)
        if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", name) != name:
            continue
        text = first_paragraph(getattr(obj, "__doc__", None), 400)
        if text and text not in seen:
            seen.add(text)
            kind = "class" if inspect.isclass(obj) else "function"
            docs.append({"id": f"{name}.{attr}", "text": f"{name}.{attr}: {text}", "metadata": {"module": name, "kind": kind}})
            members += 1
# Every module first, then functions and classes spread evenly over the alphabet: 300 in all.
modules = [d for d in docs if d["metadata"]["kind"] == "module"][:300]
members = [d for d in docs if d["metadata"]["kind"] != "module"]
extra = 300 - len(modules)
step = max(1.0, len(members) / max(extra, 1))
chosen = modules + [members[int(i * step)] for i in range(min(extra, len(members)))]
for d in sorted(chosen, key=lambda d: d["id"]):
    print(json.dumps(d, ensure_ascii=False))
