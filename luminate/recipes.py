"""The classic feature-visualization experiments, each a function that returns its images.

Each recipe is a few lines over :func:`luminate.render.render`, so it doubles as an example:

* :func:`neuron_vs_channel`: one neuron (focused, at the centre) beside its whole channel (fills the frame);
* :func:`channel_pair`: two channels alone and optimized together (a blend of both);
* :func:`interpolate`: weighted interpolation between two channels across a batch whose frames share
  low-resolution components, so they align;
* :func:`negative`: the image that most excites a channel beside the one that most suppresses it;
* :func:`diverse`: several distinct images of one channel in one batch (a diversity penalty);
* :func:`class_visualization`: what the model thinks a class looks like (its logit maximized);
* :func:`deepdream`: a photo amplified toward what a layer sees.

:func:`gallery` runs them all on a model with sensible default units; ``luminate gallery`` writes them
into an HTML page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from luminate import objectives as obj
from luminate import param as P
from luminate.activations import activations
from luminate.analysis.accentuate import Accentuation, accentuate  # noqa: F401  (feature accentuation)
from luminate.dream import dream
from luminate.images import load_image, sample_image_paths
from luminate.models.base import Model, as_model, block_layers
from luminate.render import RenderResult, render


@dataclass
class Experiment:
    """One experiment's images ``[B, C, H, W]`` with a caption for each and for the whole; ``objectives`` holds,
    per image, the objective in the command line's syntax (pasteable into ``luminate render MODEL '...'``), or
    None where the image has none (a photo, a neuron, a dream)."""

    key: str
    title: str
    description: str
    images: torch.Tensor
    captions: list[str]
    result: RenderResult | None = None
    extra: dict = field(default_factory=dict)
    objectives: list[str | None] = field(default_factory=list)


def neuron_vs_channel(model: Model, layer: str, channel: int, size: int = 128, steps: int = 512,
                      seed: int | None = 0, progress: bool = True) -> RenderResult:
    """Batch of 2: item 0 maximizes the centre neuron of ``channel``, item 1 the whole channel."""
    objective = obj.neuron(layer, channel, batch=0) + obj.channel(layer, channel, batch=1)
    return render(model, objective, P.image(size, batch=2), steps=steps, seed=seed, progress=progress)


def channel_pair(model: Model, layer: str, a: int, b: int, size: int = 128, steps: int = 512,
                 seed: int | None = 0, progress: bool = True) -> RenderResult:
    """Batch of 3: channel ``a``, channel ``b``, and ``a + b`` optimized together."""
    objective = (obj.channel(layer, a, batch=0) + obj.channel(layer, b, batch=1)
                 + obj.channel(layer, a, batch=2) + obj.channel(layer, b, batch=2))
    return render(model, objective, P.image(size, batch=3), steps=steps, seed=seed, progress=progress)


def interpolate(model: Model, layer: str, a: int, b: int, frames: int = 6, size: int = 128, steps: int = 512,
                seed: int | None = 0, progress: bool = True) -> RenderResult:
    """``frames`` images from channel ``a`` to channel ``b`` (weights ``i / (frames - 1)``), with shared
    low-resolution components so that neighbouring frames align."""
    objective = obj.channel_interpolate(layer, a, layer, b)
    return render(model, objective, P.aligned_interpolation(size, frames), steps=steps, seed=seed,
                  progress=progress)


def negative(model: Model, layer: str, channel: int, size: int = 128, steps: int = 512, seed: int | None = 0,
             progress: bool = True) -> RenderResult:
    """Batch of 2: item 0 maximizes ``channel``, item 1 minimizes it (the negative image)."""
    objective = obj.channel(layer, channel, batch=0) - obj.channel(layer, channel, batch=1)
    return render(model, objective, P.image(size, batch=2), steps=steps, seed=seed, progress=progress)


def diverse(model: Model, layer: str, channel: int, n: int = 4, weight: float = 1e2, size: int = 128,
            steps: int = 512, seed: int | None = 0, progress: bool = True) -> RenderResult:
    """``n`` images of one channel pushed apart by Lucid's diversity term (weight 1e2, as in its notebook).

    Lucid's weight suits InceptionV1, whose channels reach hundreds; on a layer whose channels reach a few
    units it drowns the channel. :func:`diversity_weight` scales it to the channel's own magnitude."""
    objective = obj.channel(layer, channel) - weight * obj.diversity(layer)
    return render(model, objective, P.image(size, batch=n), steps=steps, seed=seed, progress=progress)


def diversity_weight(channel_value: float, fraction: float = 0.5) -> float:
    """A diversity weight in proportion to how far the channel itself goes: ``fraction x channel_value``,
    where ``channel_value`` is the channel objective an ordinary render of it reaches. At that weight, images
    that are all alike lose about ``fraction`` of their channel score, so the penalty separates them without
    outweighing the feature (Lucid's 1e2 is about half of an InceptionV1 mixed4a channel's optimized value)."""
    return max(float(fraction) * abs(float(channel_value)), 1e-3)


def cli_objective(layer: str, channel: int, weight: float = 1.0) -> str:
    """``blocks.9:7`` (or ``0.25*blocks.9:7``): a channel in the command line's objective syntax."""
    unit = f"{layer}:{channel}"
    return unit if weight == 1 else f"{weight:g}*{unit}"


def cli_class(label: str | int) -> str:
    """``class:daisy`` / ``class:"sea anemone"``: a class logit in the command line's syntax."""
    label = str(label)
    return f'class:"{label}"' if not label.replace("_", "").isalnum() else f"class:{label}"


def class_visualization(model: Model, label: str | int, size: int | None = None, steps: int = 256,
                        seed: int | None = 0, progress: bool = True) -> RenderResult:
    """Maximize one class logit at the model's input size (default): what the model thinks the class looks like."""
    model = as_model(model)
    size = size or model.size
    return render(model, obj.class_logit(label), P.image(*_wh(size)), steps=steps, seed=seed, progress=progress)


def deepdream(model: Model | str, photo: torch.Tensor, layer: str, steps: int = 16, size: int | None = None,
              lr: float = 0.01, octaves: int = 2, octave_scale: float = 1.4, seed: int | None = 0,
              progress: bool = True) -> RenderResult:
    """Amplify what ``layer`` sees in ``photo`` ``[1, 3, H, W]`` in [0, 1] (DeepDream).

    The photo is centre-cropped to the model's size (or resized to ``size``, the longer side) and dreamed by
    :func:`luminate.dream.dream`: ``octaves`` scales, ``steps`` normalized gradient steps per octave on the
    pixels, tiled gradients with random shifts. ``result.image`` has the cropped photo's size.
    """
    model = as_model(model)
    if size is None:
        photo = model.contract.preprocess(load_image(photo))
    return dream(model, photo, layer, octaves=octaves, octave_scale=octave_scale, steps=steps, lr=lr,
                 size=size, seed=seed, progress=progress)


def _wh(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return w, h


def strongest_channels(model: Model, layer: str, k: int = 2, photos: list | None = None) -> list[int]:
    """The ``k`` channels of ``layer`` with the highest mean activation on real photos (the sample photos
    by default). Dead channels, whose output never changes, never come first."""
    model = as_model(model)
    paths = photos if photos is not None else sample_image_paths()
    images = torch.cat([model.preprocess(p) for p in paths]) if paths else torch.rand(4, 3, *model.size)
    acts = activations(model, images.to(model.device), layer, grid=True)
    score = acts.mean(dim=tuple(d for d in range(acts.ndim) if d != 1))
    spread = acts.transpose(0, 1).flatten(1).std(1)
    score = torch.where(spread > 1e-4, score, torch.full_like(score, -float("inf")))
    return score.topk(k).indices.tolist()


def default_layer(model: Model) -> str:
    """A middle layer for feature visualization: :meth:`Model.default_layer` ``("visualization")``, the top-level
    block about 60% of the way through the network."""
    return as_model(model).default_layer("visualization")


def gallery(model: Model, steps: int = 256, size: int = 128, seed: int = 0, progress: bool = True,
            layer: str | None = None, label: str | None = None,
            log: Callable[[str], None] | None = None) -> list[Experiment]:
    """Run every experiment on ``model`` with default units; return them in presentation order."""
    model = as_model(model)
    say = log or (lambda message: None)
    layer = layer or default_layer(model)
    a, b = strongest_channels(model, layer, 2)
    photos = sample_image_paths()
    if label is None:
        label = "daisy" if model.labels is not None and "daisy" in model.labels.names else 0
    kw = dict(size=size, steps=steps, seed=seed, progress=progress)
    experiments = []

    say(f"neuron vs channel: {layer}:{a}")
    r = neuron_vs_channel(model, layer, a, **kw)
    experiments.append(Experiment("neuron_vs_channel", "A neuron and its channel",
                                  f"Left: the centre neuron of {layer}:{a} alone, a focused pattern in the middle. "
                                  f"Right: the whole channel, the same feature repeated to fill the frame.",
                                  r.image, [f"neuron {layer}:{a} (centre)", f"channel {layer}:{a}"], r,
                                  objectives=[None, cli_objective(layer, a)]))
    channel_value = float(r.history[-1, 1]) if r.history.numel() else 1.0  # how far channel a goes alone
    say(f"two channels: {layer}:{a} + {layer}:{b}")
    r = channel_pair(model, layer, a, b, **kw)
    experiments.append(Experiment("channel_pair", "Two channels together",
                                  f"Channels {a} and {b} of {layer} alone, then optimized together: "
                                  "the joint image blends both features.",
                                  r.image, [f"{layer}:{a}", f"{layer}:{b}", f"{layer}:{a} + {layer}:{b}"], r,
                                  objectives=[cli_objective(layer, a), cli_objective(layer, b),
                                              f"{cli_objective(layer, a)} + {cli_objective(layer, b)}"]))
    say("interpolation")
    r = interpolate(model, layer, a, b, **kw)
    frames = r.image.shape[0]
    experiments.append(Experiment("interpolate", "Interpolation between two channels",
                                  f"Frames weighted from {layer}:{a} (left) to {layer}:{b} (right). The frames share "
                                  "low-resolution components of their parameterization, so they stay aligned.",
                                  r.image, [f"{1 - i / (frames - 1):.1f}·{a} + {i / (frames - 1):.1f}·{b}"
                                            for i in range(frames)], r,
                                  objectives=[" + ".join(cli_objective(layer, c, round(w, 2)) for c, w in
                                                         ((a, 1 - i / (frames - 1)), (b, i / (frames - 1))) if w > 0)
                                              for i in range(frames)]))
    say("negative")
    r = negative(model, layer, a, **kw)
    experiments.append(Experiment("negative", "Positive and negative",
                                  f"What most excites {layer}:{a} (left) and what most suppresses it (right).",
                                  r.image, ["positive", "negative"], r,
                                  objectives=[cli_objective(layer, a), "-" + cli_objective(layer, a)]))
    say("diversity")
    weight = diversity_weight(channel_value)
    r = diverse(model, layer, a, weight=weight, **kw)
    experiments.append(Experiment("diverse", "Diversity",
                                  f"Four images of {layer}:{a} optimized together with a penalty on their "
                                  f"similarity (Gram-matrix overlap), weighted {weight:.3g}: half of what the channel "
                                  f"reaches alone ({channel_value:.3g}), so each image keeps the feature and shows a "
                                  "different facet of it.",
                                  r.image, [f"{layer}:{a} #{i + 1}" for i in range(r.image.shape[0])], r,
                                  {"weight": weight}, [cli_objective(layer, a)] * r.image.shape[0]))
    say(f"class: {label}")
    experiments.append(_class_experiment(model, label, steps, seed, progress))
    if photos:
        experiments.append(_deepdream_experiment(model, layer, photos[-1], steps, seed, progress, say))
    return experiments


def _class_experiment(model: Model, label, steps: int, seed: int, progress: bool) -> Experiment:
    """The class logit maximized at the model's input size, with what the model itself calls the result."""
    r = class_visualization(model, label, steps=steps, seed=seed, progress=progress)
    with torch.no_grad():
        top = model(r.image.to(model.device)).softmax(-1)[0].topk(3)
    names = [model.labels[i] if model.labels is not None else str(i) for i in top.indices.tolist()]
    return Experiment("class", f"What the model thinks a {label} looks like",
                      f"The logit of class {label!r} maximized at the model's input size. The model "
                      f"itself classifies the result as: "
                      + ", ".join(f"{n} ({p:.2f})" for n, p in zip(names, top.values.tolist())) + ".",
                      r.image, [f"class {label}"], r, {"top": list(zip(names, top.values.tolist()))},
                      [cli_class(label)])


def _deepdream_experiment(model: Model, layer: str, path, steps: int, seed: int, progress: bool,
                          say: Callable[[str], None]) -> Experiment:
    """The photo at ``path`` amplified toward a shallow and a deep layer around ``layer``."""
    photo = load_image(path)
    shallow, deep = _dream_layers(model, layer)
    say(f"DeepDream: {shallow}, {deep}")
    # three octaves of 16 steps (at 256 steps): enough for the deep layer to paint object parts over the photo
    dreams = [deepdream(model, photo, lay, steps=max(1, steps // 16), octaves=3, seed=seed, progress=progress)
              for lay in (shallow, deep)]
    original = model.contract.preprocess(photo)
    return Experiment("deepdream", "DeepDream",
                      f"{path.name} (left) amplified toward what a shallow layer ({shallow}: "
                      f"textures, edges) and a deep layer ({deep}: parts, objects) see.",
                      torch.cat([original.cpu()] + [d.image for d in dreams]),
                      ["photo", f"DeepDream {shallow}", f"DeepDream {deep}"], dreams[-1],
                      objectives=[None, None, None],
                      extra={"commands": [f"luminate dream {model.name} {path.name} --layer {lay}"
                                          for lay in (shallow, deep)]})


def _dream_layers(model: Model, middle: str) -> tuple[str, str]:
    blocks = block_layers(model)
    if len(blocks) < 3:
        return middle, middle
    return blocks[len(blocks) // 4], blocks[(3 * len(blocks)) // 4]
