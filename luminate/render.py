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

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from luminate import images as imageio
from luminate import runtime
from luminate.activations import LayerTap
from luminate.fold import channels_last_weights, folded_batchnorm, probe_input, reuse_freed_memory
from luminate.fuse import fused_activations
from luminate.models.base import Model, as_model
from luminate.objectives import Objective, as_objective
from luminate.overrides import RedirectedReLU
from luminate.param import MACO_LR, NATURAL_CHROMA, Parameterization, as_size, image, maco
from luminate.transforms import Transform, compose, default_transforms, end_at_size, maco_transforms

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
        model: a :class:`~luminate.models.Model` or a zoo name (a bare module is refused: wrap it once).
        objective: an :class:`~luminate.objectives.Objective`, or a shorthand/expression string
            (``"blocks.9:7"``, ``"class:daisy"``, ``"-blocks.10:7 + 0.5*blocks.10:11"``).
        param: the image parameterization; default ``param.image(size, batch=batch, chroma=NATURAL_CHROMA)``
            (Fourier + decorrelated colour at twice Lucid's colour contrast, so class images have the photos'
            saturation and colourfulness, sd 0.01) with the model's input channels.
        transforms: a list of transforms (or one); ``None`` gives :func:`~luminate.transforms.default_transforms`
            (a random 50-100% box and a mirror, shown at 71-100% of the size; Lucid's set is
            ``standard_transforms()``), ``[]`` none. For a model with a fixed input size (``contract.fixed_size``)
            ``fit_to(size)`` (crop or resize) is appended.
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
    plateau = steps is None and not thresholds   # the default length may stop on a plateau
    steps, thresholds = _schedule(steps, thresholds)
    if runtime.interrupted():  # Ctrl-C in the command line stopped an earlier render: stop the whole job
        raise KeyboardInterrupt
    seed = secrets.randbits(31) if seed is None else int(seed)
    reuse_freed_memory()   # the steps reuse their activation buffers instead of mapping them afresh (luminate.fold)
    generator = torch.Generator().manual_seed(seed)
    param = _parameterization(model, param, size, batch).to(device)
    if reset:
        param.reset_parameters(generator)
    transform = _transform(model, transforms)
    params = [p for p in param.parameters() if p.requires_grad]
    opt = optimizer(params) if optimizer is not None else _adam(params, lr)

    settings = {"model": model.name, "objective": objective.name, "param": repr(param), "transforms": repr(transform),
                "steps": steps, "lr": lr if optimizer is None else None, "optimizer": type(opt).__name__,
                "seed": seed, "redirect_relu_steps": redirect_relu_steps, "device": str(device)}
    layers = sorted(objective.layers - {"input", "step"})
    record = _Record(param, thresholds, frames_every, torch.zeros(steps, param.batch, device=device))
    redirect = RedirectedReLU() if redirect_relu_steps > 0 else None
    bar = _progress(steps, progress)
    interrupted = False
    start = time.perf_counter()
    step_tensor = torch.zeros((), dtype=torch.long, device=device)
    try:
        with torch.enable_grad(), model.frozen(), _folded(model, layers) as (fold_info, fusion), \
                LayerTap(model, layers, check_inputs=False) as tap:  # works under a caller's torch.no_grad() too
            settings["batchnorm"] = fold_info.summary()
            settings["fused"] = fusion.summary()
            channels_last = fold_info.channels_last
            # the function mode only when some ReLU-like call is not fused (it costs ~2 ms a step)
            redirect_mode = redirect if not fusion.complete else contextlib.nullcontext()
            for step in range(steps):
                images = param()
                transformed = transform(images, generator)
                if channels_last:
                    transformed = transformed.contiguous(memory_format=torch.channels_last)
                if redirect is not None and step < redirect_relu_steps:
                    # scoped to the network's forward pass (the graph keeps the redirect), fused ReLUs included
                    with redirect_mode, fusion.redirecting(redirect):
                        acts = tap(transformed)
                else:
                    acts = tap(transformed)
                acts["input"] = images
                acts["step"] = step_tensor.fill_(step)
                scores = objective(acts)
                opt.zero_grad(set_to_none=True)
                (-scores.sum()).backward()
                opt.step()
                record.step(step, scores.detach())
                _show(bar, record.done, steps, scores)
                if callback is not None and callback(record.done, images.detach(), scores.detach()):
                    interrupted = True
                    break
                if plateau and _plateaued(record.history, record.done):
                    settings["stopped_early"] = (f"after {record.done} of {steps} steps: the objective rose by less "
                                                 f"than {PLATEAU_GAIN:.0%} over the last {PLATEAU_WINDOW} steps")
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    if redirect is not None and record.done:
        settings["redirect_relu"] = _redirect_note(redirect, min(record.done, redirect_relu_steps))
    snapshots, recorded = record.finish()
    return RenderResult(images=snapshots, thresholds=recorded, history=record.history[:record.done].cpu(),
                        settings=settings, frames=record.frames, interrupted=interrupted,
                        seconds=time.perf_counter() - start)


def _schedule(steps: int | None, thresholds: Sequence[int] | None) -> tuple[int, list[int]]:
    """``(steps, sorted thresholds)``: steps default to ``max(thresholds)``, else 512; checked."""
    if steps is None:
        steps = max(thresholds) if thresholds else 512
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    thresholds = sorted(set(thresholds or (steps,)))
    if thresholds[-1] > steps or thresholds[0] < 0:
        raise ValueError(f"thresholds must lie in 0..steps ({steps}), got {thresholds}")
    return int(steps), thresholds


def _parameterization(model: Model, param: Parameterization | None, size, batch: int) -> Parameterization:
    """``param``, or the default image: ``size`` (128, or the model's fixed size) with the model's channels."""
    if param is not None:
        return param
    if size is None:
        size = model.size if model.contract.fixed_size else 128
    channels = model.contract.channels
    h, w = as_size(size)
    return image(w, h, batch=batch, channels=None if channels == 3 else channels, chroma=NATURAL_CHROMA)


def _transform(model: Model, transforms: Sequence[Transform] | Transform | None) -> Transform:
    """One transform: the given ones composed (default: :func:`default_transforms`), ending at the model's size
    when it is fixed."""
    if transforms is None:
        transforms = default_transforms()
    transform = compose(transforms) if isinstance(transforms, (list, tuple)) else transforms
    return end_at_size(transform, model.size) if model.contract.fixed_size else transform


@dataclass
class _Record:
    """What a render keeps as it goes: per-step scores, the images at thresholds and every ``frames_every``."""

    param: Parameterization
    thresholds: list[int]
    frames_every: int | None
    history: torch.Tensor
    snapshots: list[torch.Tensor] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)
    done: int = 0

    def __post_init__(self) -> None:
        if 0 in self.thresholds:
            self.snapshots.append(self._current())

    def _current(self) -> torch.Tensor:
        with torch.no_grad():
            return self.param().detach().cpu()

    def step(self, step: int, scores: torch.Tensor) -> None:
        self.history[step] = scores
        self.done = done = step + 1
        framed = bool(self.frames_every) and done % self.frames_every == 0
        if done in self.thresholds or framed:
            current = self._current()
            if done in self.thresholds:
                self.snapshots.append(current)
            if framed:
                self.frames.append(current)

    def finish(self) -> tuple[list[torch.Tensor], list[int]]:
        """The snapshots and their step counts; the final state is always the last (``result.image``)."""
        recorded = [t for t in self.thresholds if t <= self.done]
        if not recorded or recorded[-1] != self.done:
            self.snapshots.append(self._current())
            recorded.append(self.done)
        return self.snapshots, recorded


def _show(bar, done: int, steps: int, scores: torch.Tensor) -> None:
    """Advance the progress bar; the objective is read from the device every 16 steps only."""
    if bar is not None:
        bar.update(1)
        if done % 16 == 0 or done == steps:
            bar.set_postfix(objective=f"{scores.detach().sum().item():.4g}")


def _redirect_note(redirect: RedirectedReLU, steps: int) -> str:
    if redirect.count:
        return f"{redirect.count // steps} ReLU-like calls per step redirected for {steps} steps"
    return ("nothing to redirect: the network has no ReLU-like unit (nn.ReLU, F.relu, relu6, hardtanh(0, x)) on the "
            "objective's path")


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


@contextlib.contextmanager
def _folded(model: Model, layers: Sequence[str]):
    """BatchNorm folded into the convolutions of the frozen network for the render (restored after it); channels-last
    weights on the CPU, where they measured faster (``benchmarks/render_speed.py``), also for a network with nothing
    to fold (``info.channels_last``); then each ReLU-like module computed with the convolution before it (CPU,
    :mod:`luminate.fuse`). Tapped modules stay unfolded and unfused. Yields ``(fold info, fusion info)``."""
    keep = {model.resolve(name)[0] for name in layers if name not in LayerTap.SPECIAL}
    size = tuple(model.size) if model.contract.fixed_size else (64, 64)
    cpu = model.device.type == "cpu"
    with contextlib.ExitStack() as stack:
        info = stack.enter_context(folded_batchnorm(model.network, keep=keep, size=size,
                                                    channels=model.contract.channels, forward=model,
                                                    channels_last=cpu))
        if info.pairs or not cpu:
            info.channels_last = bool(info.pairs) and cpu
        else:
            info.channels_last = stack.enter_context(channels_last_weights(model.network)) > 0
        probe = probe_input(model.network, size, model.contract.channels)
        fusion = stack.enter_context(fused_activations(model.network, probe, keep, forward=model))
        yield info, fusion


def _adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam(lr), with the fused kernel on a CPU or CUDA device (one pass over the image's parameters: 73 us against
    266 us per step for a 224 px Fourier image on the CPU; the same update up to rounding)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def _progress(total: int, enabled: bool):
    from luminate.progress import bar

    return bar(total, "render", enabled=enabled)


#: The parameterizations ``luminate render --param`` offers.
PARAMETERIZATIONS = ("fourier", "maco", "pixel")


def parameterization(name: str, size: int | tuple[int, int], batch: int = 1,
                     channels: int = 3) -> tuple[Parameterization, list[Transform] | None, float]:
    """``(param, transforms, lr)`` for a parameterization by name: ``"fourier"`` (Lucid's ``param.image``, render's
    default transforms, Adam 0.05), ``"maco"`` (:func:`~luminate.param.maco`,
    :func:`~luminate.transforms.maco_transforms`, :data:`~luminate.param.MACO_LR`) or ``"pixel"``
    (``param.image(fft=False, decorrelate=True)``, render's default transforms, 0.05).

    It lives here, above ``param`` and ``transforms``, because it pairs one of each. ``transforms`` is ``None`` where
    ``render``'s default applies. ``channels``: the
    model's input channels (``fourier`` and ``pixel`` make that many, each through a sigmoid; MACO is RGB only).
    """
    rgb = channels if channels and channels != 3 else None  # 0: a text model, refused by render itself
    if name == "maco" and rgb is not None:
        raise ValueError(f"--param maco makes RGB images, and this model takes {channels} channels: use --param "
                         "fourier or pixel")
    if name == "maco":
        return maco(size, batch=batch), maco_transforms(), MACO_LR
    if name == "fourier":
        return image(*_width_height(size), batch=batch, channels=rgb, chroma=NATURAL_CHROMA), None, 0.05
    if name == "pixel":
        return image(*_width_height(size), batch=batch, fft=False, channels=rgb, chroma=NATURAL_CHROMA), None, 0.05
    raise ValueError(f"unknown parameterization {name!r}; choose one of {', '.join(PARAMETERIZATIONS)}")


def _width_height(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = as_size(size)
    return w, h
