"""How long an attribution graph takes: EfficientNet-Lite0 at 224 px, its 4 default layers, no icons.

Times :func:`luminate.circuits.trace` (forward pass, node scores, the batched edge backward passes, pruning, and the
faithfulness / per-node interventions it computes) on scikit-learn's flower photo, best and median of ``--repeat``
runs after one warm-up, and the edges alone two ways: batched (one ``is_grads_batched`` backward pass per layer
pair) and one backward pass per kept node, to show what the batching buys.

    python benchmarks/circuits.py                 # CPU, threads as torch chooses (2 on the project machine)
    python benchmarks/circuits.py --device cuda   # a GPU when one is lent
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def _photo() -> str:
    import sklearn

    return os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "flower.jpg")


def _edges_time(graph, batched: bool) -> float:
    """Seconds for the edges of ``graph``'s kept nodes, batched or one node at a time."""
    import importlib

    trace_module = importlib.import_module("luminate.circuits.trace")   # the module, not the function

    model, x = graph.model, graph.image
    with model.frozen(), torch.enable_grad():
        acts, x_leaf, logits, _ = trace_module._capture(model, x, graph.layers)
        score = graph.target.score(logits)[0]
        grads = dict(zip(graph.layers, torch.autograd.grad(score, [acts[n] for n in graph.layers], retain_graph=True)))
        start = time.perf_counter()
        lowers = [x_leaf] + [acts[n] for n in graph.layers[:-1]]
        for lower, nodes in zip(lowers, graph.nodes):
            if batched:
                trace_module._pull_back(acts[nodes.layer], lower, grads[nodes.layer], graph.bases[nodes.layer], nodes)
            else:
                for unit in nodes.kept:
                    cot = torch.zeros_like(acts[nodes.layer])
                    cot[:, unit] = grads[nodes.layer][:, unit]
                    torch.autograd.grad(acts[nodes.layer], lower, cot, retain_graph=True)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import luminate
    from luminate.circuits import trace

    model = luminate.models.load("efficientnet_lite0", device=args.device)
    photo = _photo()
    trace(model, photo, "daisy")   # warm-up: layer tracing, allocator, first-call costs
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        graph = trace(model, photo, "daisy")
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    f = graph.faithfulness[graph.layers[-1]]
    print(json.dumps({
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(), "layers": graph.layers,
        "nodes": sum(len(n.kept) for n in graph.nodes), "edges": len(graph.edges),
        "trace_seconds_best": round(min(times), 2), "trace_seconds_median": round(statistics.median(times), 2),
        "edges_seconds_batched": round(_edges_time(graph, True), 2),
        "edges_seconds_one_by_one": round(_edges_time(graph, False), 2),
        "deepest_layer_drop": {"kept": round(f["kept_drop"], 2), "random": round(f["random_drop"], 2),
                               "score": round(graph.score, 2)},
    }, indent=1))


if __name__ == "__main__":
    main()
