"""The render loop: optimize an image parameterization to maximize an objective.

Defaults follow Lucid's ``render_vis``: a 128 px Fourier-space, colour-decorrelated image, Adam with
learning rate 0.05, and ReLU gradients redirected for the first 16 steps; the transforms are Luminate's
(:func:`~luminate.transforms.default_transforms`: a random 50-100% box and a mirror), which transfer far better to
other models than Lucid's standard set (``docs/quality.md``). BatchNorm is folded into the convolutions of the
frozen network for the duration of the call (:mod:`luminate.fold`).
Deliberate differences, each a fix of a known quirk:

* ``steps=512`` means 512 optimizer updates, and a threshold ``t`` records the image after ``t``
  updates (Lucid ran ``max(thresholds) + 1`` updates and recorded after ``t + 1``).
* ``seed`` really makes a run repeatable on the CPU: every random draw (initial image, transforms)
  comes from one ``torch.Generator``; no global RNG state is read or changed. The default is ``seed=0``
  (as for every entry point); ``seed=None`` draws a seed and records it in ``result.settings``.
* One set of defaults for every entry point (Lucid's ``make_vis_T`` did not redirect ReLUs). The redirect
  reaches every ReLU-like call (modules, functional and in-place forms, ReLU6 / hardtanh(0, 6)); a network
  without one says so in ``result.settings["redirect_relu"]``.
* ``thresholds`` without ``steps`` runs ``max(thresholds)`` steps, and ``result.image`` is always the final state.
* The forward pass stops at the deepest layer the objective reads. The network runs in eval mode with frozen
  weights during the render only; its training mode and ``requires_grad`` flags are put back afterwards.
* The default image has the model's input channels (1 for grayscale, 4+ for multispectral), and a model with a
  fixed input size gets its transforms followed by a crop (or resize) back to that size.
* No host-device sync per step: scores stay on the device (the progress bar reads them every 16 steps).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from luminate import images as imageio
from luminate import runtime
from luminate.activations import LayerTap
from luminate.fold import folded_batchnorm
from luminate.models.base import Model, as_model
from luminate.objectives import Objective, as_objective
from luminate.overrides import RedirectedReLU
from luminate.param import Parameterization, as_size, image
from luminate.runtime import TINY_STEPS, budget_steps, tiny
from luminate.transforms import Transform, compose, default_transforms, end_at_size

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


@dataclass
class RenderResult:
    """What :func:`render` made.

    Attributes:
        images: one ``[B, C, H, W]`` CPU tensor in [0, 1] per threshold, in order.
        thresholds: the step counts at which ``images`` were taken.
        history: ``[steps_done, B]`` objective contribution of each batch item at each step
            (their sum over items is the objective that was maximized).
        settings: everything needed to repeat the run (model, objective, seed, steps, lr, ...).
        frames: images taken every ``frames_every`` steps (for :meth:`save_gif`), if requested.
        interrupted: the run was stopped early (Ctrl-C or the callback); ``images[-1]`` is the last state.
    """

    images: list[torch.Tensor]
    thresholds: list[int]
    history: torch.Tensor
    settings: dict[str, Any]
    frames: list[torch.Tensor] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def image(self) -> torch.Tensor:
        """The final images ``[B, C, H, W]``."""
        return self.images[-1]

    @property
    def objective_values(self) -> torch.Tensor:
        """``[B]`` each item's objective contribution at the last step."""
        return self.history[-1]

    def save(self, path: str | Path, ncol: int | None = None) -> Path:
        """Save the final images (a batch is tiled into a grid)."""
        return imageio.save_image(self.image, path, ncol=ncol)

    def save_gif(self, path: str | Path, duration_ms: int = 80) -> Path:
        """An animated GIF of the optimization (frames if recorded, else the thresholds)."""
        return imageio.save_gif(self.frames or self.images, path, duration_ms)

    def _repr_png_(self) -> bytes:
        return imageio.png_bytes(self.image)

    def __repr__(self) -> str:
        b, c, h, w = self.image.shape
        state = ", interrupted" if self.interrupted else ""
        return (f"RenderResult({self.settings.get('objective')}, {b}x{c}x{h}x{w}, "
                f"{len(self.history)} steps in {self.seconds:.1f}s{state})")


def render(model: Model | str,
           objective: Objective | str,
           param: Parameterization | None = None,
           transforms: Sequence[Transform] | Transform | None = None,
           steps: int | None = None,
           thresholds: Sequence[int] | None = None,
           optimizer: OptimizerFactory | None = None,
           lr: float = 0.05,
           seed: int | None = 0,
           progress: bool = True,
           callback: Callable[[int, torch.Tensor, torch.Tensor], bool | None] | None = None,
           redirect_relu_steps: int = 16,
           size: int | tuple[int, int] | None = None,
           batch: int = 1,
           frames_every: int | None = None,
           reset: bool = True) -> RenderResult:
    """Optimize an image to maximize ``objective`` on ``model``.

    Args:
        model: a :class:`~luminate.models.Model`, a zoo name, or a module taking [0, 1] images.
        objective: an :class:`~luminate.objectives.Objective`, or a shorthand/expression string
            (``"blocks.9:7"``, ``"class:daisy"``, ``"-blocks.10:7 + 0.5*blocks.10:11"``).
        param: the image parameterization; default ``param.image(size, batch=batch)``
            (Fourier + decorrelated colour, sd 0.01) with the model's input channels.
        transforms: a list of transforms (or one); ``None`` gives :func:`~luminate.transforms.default_transforms`
            (a random 50-100% box resized back, and a mirror; Lucid's set is ``standard_transforms()``), ``[]``
            none. For a model with a fixed input size (``contract.fixed_size``) ``fit_to(size)`` (crop or resize)
            is appended.
        steps: optimizer updates; default ``max(thresholds)``, or at most 512 without thresholds: a render of
            the default length stops once the objective has plateaued (checked every 64 steps from step 192: it
            rose by less than 10% over the last 64; ``result.settings["stopped_early"]`` says when). Class images
            of lite0 stop at 256 steps and keep every one of 64 random crops in Lite2's top 5, as at 512
            (``docs/quality.md``). Pass ``steps=512`` for exactly 512.
        thresholds: steps after which to record the images; default ``(steps,)``. ``result.image`` is the
            final state in any case.
        optimizer: a factory ``params -> torch.optim.Optimizer``; default Adam(lr).
        lr: learning rate of the default optimizer (Lucid: 0.05).
        seed: seeds the initial image and every transform (default 0, as every entry point); ``None`` picks one
            (kept in settings).
        progress: show a tqdm progress bar with the objective.
        callback: ``callback(step, images [B,C,H,W], scores [B])`` after each update; return True to stop.
        redirect_relu_steps: steps during which ReLU-like gradients are redirected (0 disables).
        size, batch: shape of the default parameterization (size: 128, or the model's size when it is fixed).
        frames_every: also keep the images every N steps, for :meth:`RenderResult.save_gif`.
        reset: re-draw the parameterization's initial values from the seed (False continues from its state).

    Returns:
        A :class:`RenderResult`. Ctrl-C stops the loop and returns what was made so far.
    """
    model = as_model(model)
    device = model.device
    objective = as_objective(objective).bind(model)
    plateau = steps is None and not thresholds and not tiny()   # the default length may stop on a plateau
    if steps is None:
        steps = max(thresholds) if thresholds else 512
    if runtime.interrupted():  # Ctrl-C in the command line stopped an earlier render: stop the whole job
        raise KeyboardInterrupt
    if tiny():  # smoke runs and README tests (LUMINATE_TINY): a few steps, thresholds kept in range
        steps, thresholds = budget_steps(steps), thresholds and [min(t, TINY_STEPS) for t in thresholds]
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    thresholds = sorted(set(thresholds or (steps,)))
    if thresholds[-1] > steps or thresholds[0] < 0:
        raise ValueError(f"thresholds must lie in 0..steps ({steps}), got {thresholds}")
    seed = secrets.randbits(31) if seed is None else int(seed)
    generator = torch.Generator().manual_seed(seed)

    if param is None:
        if size is None:
            size = model.size if model.contract.fixed_size else 128
        channels = model.contract.channels
        h, w = as_size(size)
        param = image(w, h, batch=batch, channels=None if channels == 3 else channels)
    param = param.to(device)
    if reset:
        param.reset_parameters(generator)
    if transforms is None:
        transforms = default_transforms()
    transform = compose(transforms) if isinstance(transforms, (list, tuple)) else transforms
    if model.contract.fixed_size:
        transform = end_at_size(transform, model.size)
    params = [p for p in param.parameters() if p.requires_grad]
    opt = optimizer(params) if optimizer is not None else torch.optim.Adam(params, lr=lr)

    settings = {"model": model.name, "objective": objective.name, "param": repr(param), "transforms": repr(transform),
                "steps": steps, "lr": lr if optimizer is None else None, "optimizer": type(opt).__name__,
                "seed": seed, "redirect_relu_steps": redirect_relu_steps, "device": str(device)}
    layers = sorted(objective.layers - {"input", "step"})
    history = torch.zeros(steps, param.batch, device=device)
    snapshots: list[torch.Tensor] = []
    frames: list[torch.Tensor] = []
    if 0 in thresholds:
        with torch.no_grad():
            snapshots.append(param().detach().cpu())
    redirect = RedirectedReLU() if redirect_relu_steps > 0 else None
    bar = _progress(steps, progress)
    done = 0
    interrupted = False
    start = time.perf_counter()
    step_tensor = torch.zeros((), dtype=torch.long, device=device)
    try:
        with model.frozen(), _folded(model, layers) as fold_info, LayerTap(model, layers, check_inputs=False) as tap:
            settings["batchnorm"] = fold_info.summary()
            for step in range(steps):
                images = param()
                transformed = transform(images, generator)
                if fold_info.pairs and device.type == "cpu":
                    transformed = transformed.contiguous(memory_format=torch.channels_last)
                if redirect is not None and step < redirect_relu_steps:
                    with redirect:  # scoped to the network's forward pass; the graph keeps the redirect
                        acts = tap(transformed)
                else:
                    acts = tap(transformed)
                acts["input"] = images
                acts["step"] = step_tensor.fill_(step)
                scores = objective(acts)
                opt.zero_grad(set_to_none=True)
                (-scores.sum()).backward()
                opt.step()
                history[step] = scores.detach()
                done = step + 1
                if done in thresholds or (frames_every and done % frames_every == 0):
                    with torch.no_grad():
                        current = param().detach().cpu()
                    if done in thresholds:
                        snapshots.append(current)
                    if frames_every and done % frames_every == 0:
                        frames.append(current)
                if bar is not None:
                    bar.update(1)
                    if done % 16 == 0 or done == steps:
                        bar.set_postfix(objective=f"{scores.detach().sum().item():.4g}")
                if callback is not None and callback(done, images.detach(), scores.detach()):
                    interrupted = True
                    break
                if plateau and _plateaued(history, done):
                    settings["stopped_early"] = (f"after {done} of {steps} steps: the objective rose by less than "
                                                 f"{PLATEAU_GAIN:.0%} over the last {PLATEAU_WINDOW} steps")
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    if redirect is not None and done:
        n = min(done, redirect_relu_steps)
        settings["redirect_relu"] = (f"{redirect.count // n} ReLU-like calls per step redirected for {n} steps"
                                     if redirect.count else
                                     "nothing to redirect: the network has no ReLU-like unit (nn.ReLU, F.relu, "
                                     "relu6, hardtanh(0, x)) on the objective's path")
    recorded = [t for t in thresholds if t <= done]
    if not recorded or recorded[-1] != done:  # result.image is always the final state
        with torch.no_grad():
            snapshots.append(param().detach().cpu())
        recorded.append(done)
    return RenderResult(images=snapshots, thresholds=recorded, history=history[:done].cpu(),
                        settings=settings, frames=frames, interrupted=interrupted,
                        seconds=time.perf_counter() - start)


#: Early stopping of default-length renders: every ``PLATEAU_WINDOW`` steps from ``PLATEAU_MIN`` on, stop when the
#: mean objective of the last window rose by less than ``PLATEAU_GAIN`` of the window before's.
PLATEAU_WINDOW, PLATEAU_MIN, PLATEAU_GAIN = 64, 192, 0.1


def _plateaued(history: torch.Tensor, done: int) -> bool:
    """Whether the objective (``history`` ``[steps, B]``, summed over items) has plateaued after ``done`` steps; reads
    the device once per window."""
    if done < PLATEAU_MIN or done % PLATEAU_WINDOW:
        return False
    w = PLATEAU_WINDOW
    now, before = history[done - w:done].sum(1).mean(), history[done - 2 * w:done - w].sum(1).mean()
    return bool(now - before < PLATEAU_GAIN * before.abs())


def _folded(model: Model, layers: Sequence[str]):
    """BatchNorm folded into the convolutions of the frozen network for the render (restored after it); channels-last
    weights on the CPU, where they measured faster (``benchmarks/render_speed.py``). Tapped modules stay unfolded."""
    keep = {model.resolve(name)[0] for name in layers if name not in LayerTap.SPECIAL}
    size = tuple(model.size) if model.contract.fixed_size else (64, 64)
    return folded_batchnorm(model.network, keep=keep, size=size, channels=model.contract.channels,
                            forward=model, channels_last=model.device.type == "cpu")


def _progress(total: int, enabled: bool):
    from luminate.progress import bar

    return bar(total, "render", enabled=enabled)
