"""`fexbench list`: tasks with their metrics, explainers, presets and broken plugins, without importing torch."""
from __future__ import annotations

import argparse


def cmd_list(args: argparse.Namespace) -> int:
    """Tasks with their metrics, explainers, and every plugin that fails to load (without failing).
    Read from a cache kept by fexbench.harness.listing, so that listing does not import torch."""
    from fexbench.harness.listing import listing

    shown = listing()
    print("tasks:")
    for task in shown["tasks"]:
        print(f"  {task['name']:24s} {task['description']}")
        for m in task["metrics"]:
            arrow = "higher is better" if m["higher_is_better"] else "lower is better"
            print(f"    - {m['name']:28s} {m['description']} ({arrow}; range {tuple(m['value_range'])}; "
                  f"chance {m['chance']})")
    print("explainers:")
    for cls in shown["explainers"]:
        seeds = f" [stochastic: {cls['seeds']} seed{'s' if cls['seeds'] != 1 else ''}]" if cls["stochastic"] else ""
        print(f"  {cls['name']:24s} {cls['description']}{' [oracle]' if cls['oracle'] else ''}{seeds}")
    if shown["broken"]:
        print("broken plugins (not loaded; fix or uninstall them):")
        for entry in shown["broken"]:
            print(f"  {entry['group']}: {entry['name']}: {entry['error']}")
    from fexbench import presets
    print("presets (fexbench run --preset NAME):")
    for name in presets.names():
        print(f"  {name:24s} {presets.description(name)}")
    return 0


def add_parser(sub) -> None:
    p_list = sub.add_parser("list", help="list tasks (with metrics) and explainers")
    p_list.set_defaults(func=cmd_list)
