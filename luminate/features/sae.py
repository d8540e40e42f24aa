"""Sparse autoencoders over activation vectors: TopK and BatchTopK, trained resumably.

Both share one shape (Gao et al. 2024, "Scaling and evaluating sparse autoencoders")::

    pre  = W_enc (x - b_dec) + b_enc                 [B, N]
    z    = TopK(ReLU(pre))                           k largest per row (TopK) / k*B largest per batch (BatchTopK)
    x̂    = W_dec z + b_dec                           decoder columns of unit norm

* **tied initialization**: ``W_enc = W_decᵀ`` at step 0, decoder columns random unit vectors, ``b_dec`` the mean
  of the data (so the first codes already explain something);
* **unit-norm decoder**: the columns are renormalized after every step, and the gradient's component along each
  column is removed before the step (it would only change the norm);
* **auxiliary loss** (AuxK): codes that have not fired for ``dead_steps`` steps are *dead*; the ``k_aux`` largest
  pre-activations among them reconstruct the main reconstruction's residual, and that error, scaled by
  ``aux_weight``, is added to the loss. It gives dead codes a gradient towards what the live ones miss, so they come
  back instead of staying dead.
* **BatchTopK** (Bussmann et al. 2024) keeps the ``k * B`` largest activations of the whole batch (so rows get a
  variable number of codes), and learns a threshold ``theta`` (a running mean of the smallest kept activation) used
  at inference instead: ``z = pre * (pre > theta)``.

Training is a pure function of the data, the settings and the seed: the batch of step ``s`` is drawn from a
generator seeded by ``(seed, epoch)``, and the whole state (weights, Adam moments, dead-code counters, threshold)
goes into the checkpoint. A run killed at any step resumes from its last checkpoint to the very dictionary an
uninterrupted run makes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from luminate.cache import atomic_write

METHODS = ("topk", "batchtopk", "nmf")


@dataclass(frozen=True)
class TrainSettings:
    """What a dictionary depends on (besides its activations): its size, the training run and the held-out split.

    Attributes:
        n_features, k, method: dictionary size, active codes per position, ``"topk"`` / ``"batchtopk"`` / ``"nmf"``.
        steps, batch_size, lr, aux_weight, k_aux, dead_steps: SAE training (Adam; ``k_aux`` default ``2 k``).
        seed: seeds the initialization and the batches.
        checkpoint_every: steps between checkpoints (a killed run resumes from the last one).
        holdout_every: every ``holdout_every``-th image is held out for the metrics.
        positions_per_image: positions collected per image (default: all, at most 256).
        stability_seed: also train with this seed and report the two dictionaries' stability.
        memory_rows: read the training rows into memory when there are at most this many, else stream them.
    """

    n_features: int = 256
    k: int = 16
    method: str = "topk"
    steps: int = 3000
    batch_size: int = 512
    lr: float = 8e-3
    seed: int = 0
    aux_weight: float = 1 / 32
    k_aux: int | None = None
    dead_steps: int = 100
    checkpoint_every: int = 250
    holdout_every: int = 5
    positions_per_image: int | None = None
    stability_seed: int | None = None
    memory_rows: int = 4_000_000

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.n_features < 1:
            raise ValueError(f"n_features = {self.n_features}: give at least 1")

    def replace(self, **changes) -> "TrainSettings":
        """A copy with ``changes``; an unknown name is refused with the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown training setting {unknown[0]!r}: the settings are {', '.join(sorted(names))}")
        return dataclasses.replace(self, **changes)


def _generator(seed: int, *parts) -> torch.Generator:
    key = hashlib.blake2b(":".join(map(str, ("luminate.features", seed, *parts))).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(key, "little") & ((1 << 63) - 1))


class SparseAutoencoder(nn.Module):
    """A TopK or BatchTopK autoencoder of ``channels``-wide vectors with ``n_features`` codes, ``k`` active.

    Shapes: :meth:`encode` ``[B, C] -> [B, N]``, :meth:`decode` ``[B, N] -> [B, C]``.
    """

    def __init__(self, channels: int, n_features: int, k: int, method: str = "topk", seed: int = 0,
                 mean: Tensor | None = None):
        super().__init__()
        if method not in ("topk", "batchtopk"):
            raise ValueError(f"method {method!r}: a sparse autoencoder is 'topk' or 'batchtopk'")
        if not 1 <= k <= n_features:
            raise ValueError(f"k = {k} active codes: give 1 <= k <= n_features ({n_features})")
        self.method, self.k = method, int(k)
        w = torch.randn(channels, n_features, generator=_generator(seed, "init"))
        w = w / w.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(w)                                       # [C, N], unit columns
        self.W_enc = nn.Parameter(w.t().clone())                           # [N, C], tied at init
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(torch.zeros(channels) if mean is None else mean.clone().float())
        self.register_buffer("theta", torch.zeros(()))                     # BatchTopK inference threshold

    def pre(self, x: Tensor) -> Tensor:
        """ReLU'd pre-activations ``[B, N]``."""
        return torch.relu((x - self.b_dec) @ self.W_enc.t() + self.b_enc)

    def sparsify(self, pre: Tensor, training: bool = False) -> Tensor:
        """The codes from pre-activations: top-k per row (TopK), top ``k * B`` of the batch (BatchTopK while
        training) or above the learned threshold (BatchTopK at inference)."""
        if self.method == "topk":
            values, index = pre.topk(self.k, dim=1)
            return torch.zeros_like(pre).scatter(1, index, values)
        if training:
            flat = pre.flatten()
            values, index = flat.topk(min(self.k * pre.shape[0], flat.numel()))
            return torch.zeros_like(flat).scatter(0, index, values).reshape(pre.shape)
        return pre * (pre > self.theta)

    def encode(self, x: Tensor) -> Tensor:
        return self.sparsify(self.pre(x))

    def decode(self, z: Tensor) -> Tensor:
        return z @ self.W_dec.t() + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pre = self.pre(x)
        z = self.sparsify(pre, training=True)
        return self.decode(z), z, pre

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient's component along each decoder column (it would only change the column's norm)."""
        if self.W_dec.grad is not None:
            w, g = self.W_dec, self.W_dec.grad
            g.sub_(w * (w * g).sum(0, keepdim=True))


class Trainer:
    """Everything a training run changes, for checkpoints: the model, Adam, dead-code counters, the step."""

    def __init__(self, sae: SparseAutoencoder, lr: float):
        self.sae = sae
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
        self.since_fired = torch.zeros(sae.W_dec.shape[1], dtype=torch.long)
        self.step = 0

    def state_dict(self) -> dict:
        return {"sae": self.sae.state_dict(), "optimizer": self.optimizer.state_dict(),
                "since_fired": self.since_fired, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.since_fired = state["since_fired"]
        self.step = int(state["step"])


def train_step(trainer: Trainer, x: Tensor, lr: float, steps: int, aux_weight: float, k_aux: int,
               dead_steps: int) -> dict[str, float]:
    """One Adam step on the batch ``x`` ``[B, C]`` (inputs already scaled). Returns the step's losses."""
    sae = trainer.sae
    # linear decay of the learning rate over the last fifth of the run
    tail = max(1, steps // 5)
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr * min(1.0, (steps - trainer.step) / tail)
    x_hat, z, pre = sae(x)
    residual = x - x_hat
    variance = (x - x.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12)
    mse = residual.pow(2).sum(1).mean()
    loss = mse / variance
    dead = trainer.since_fired >= dead_steps
    aux = torch.zeros(())
    if aux_weight > 0 and bool(dead.any()):
        kk = min(k_aux, int(dead.sum()))
        dead_pre = pre.masked_fill(~dead, 0.0)
        values, index = dead_pre.topk(kk, dim=1)
        z_aux = torch.zeros_like(pre).scatter(1, index, values)
        aux_hat = z_aux @ sae.W_dec.t()
        target = residual.detach()
        aux = (target - aux_hat).pow(2).sum(1).mean() / target.pow(2).sum(1).mean().clamp_min(1e-12)
        loss = loss + aux_weight * aux
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sae.project_decoder_grad()
    trainer.optimizer.step()
    sae.normalize_decoder()
    with torch.no_grad():
        fired = (z > 0).any(0)
        trainer.since_fired = torch.where(fired, torch.zeros_like(trainer.since_fired), trainer.since_fired + 1)
        if sae.method == "batchtopk":
            kept = z[z > 0]
            if kept.numel():
                smallest = kept.min()
                sae.theta.copy_(smallest if trainer.step == 0 else 0.99 * sae.theta + 0.01 * smallest)
    trainer.step += 1
    return {"loss": float(loss.detach()), "fvu": float((mse / variance).detach()), "aux": float(aux.detach()),
            "dead": float(dead.float().mean())}


def batch_rows(seed: int, step: int, n_rows: int, batch_size: int) -> np.ndarray:
    """The row indices of step ``step``: epoch ``step // (n_rows // batch_size)`` is a permutation of the rows
    seeded by ``(seed, epoch)``, cut into consecutive batches. Depends on nothing else (resume-safe)."""
    per_epoch = max(1, n_rows // batch_size)
    epoch, slot = divmod(step, per_epoch)
    perm = torch.randperm(n_rows, generator=_generator(seed, "epoch", epoch)).numpy()
    return np.sort(perm[slot * batch_size:(slot + 1) * batch_size]) if batch_size < n_rows else perm


def save_checkpoint(path: Path, trainer: Trainer, key: str) -> None:
    """The trainer's whole state under ``key`` (the run's settings hash), written atomically."""
    buffer = io.BytesIO()
    state = trainer.state_dict()   # its SHA-256 beside it: a checkpoint changed in place is found on read
    torch.save({"key": key, "state": state, "sha256": state_digest(state)}, buffer)
    atomic_write(path, buffer.getvalue())


def state_digest(state) -> str:
    """SHA-256 of a (nested) state: every key, tensor byte and number, in a fixed order."""
    digest = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, dict):
            for name in sorted(value, key=str):
                digest.update(f"<{name}>".encode())
                feed(value[name])
        elif isinstance(value, (list, tuple)):
            for item in value:
                feed(item)
        elif isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{tuple(t.shape)}:{t.dtype}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    feed(state)
    return digest.hexdigest()


def load_checkpoint(path: Path, trainer: Trainer, key: str) -> bool:
    """Restore a checkpoint made by a run with the same settings; False (and nothing changed) otherwise."""
    if not path.is_file():
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key and "sha256" in saved and state_digest(saved["state"]) != saved["sha256"]:
            raise ValueError("its values differ from the ones written (SHA-256 mismatch)")
    except Exception as exc:   # truncated by a crash, or changed in place: never resumed from
        logging.getLogger("luminate.features").warning("the training checkpoint %s is damaged (%s); training "
                                                       "from the start", path, exc)
        return False
    if saved.get("key") != key:
        return False
    trainer.load_state_dict(saved["state"])
    return True


def train_sae(rows: Callable[[np.ndarray], Tensor], n_rows: int, channels: int,
              settings: TrainSettings = TrainSettings(), *, mean: Tensor | None = None, scale: float = 1.0,
              checkpoint: str | os.PathLike | None = None, key: str = "", progress: bool = True, desc: str = "train",
              **fields) -> SparseAutoencoder:
    """Train a :class:`SparseAutoencoder` on ``n_rows`` vectors read by ``rows(indices) -> [R, C]``.

    ``settings``: :class:`TrainSettings` (``n_features``, ``k``, ``method``, ``steps``, ``batch_size``, ``lr``,
    ``seed``, ``aux_weight``, ``k_aux``, ``dead_steps``, ``checkpoint_every``); ``fields`` override its fields.
    Inputs are divided by ``scale`` inside (the returned model works on raw activations: its weights are scaled
    back). ``checkpoint``: a file to resume from (when it was written under the same ``key``) and to write every
    ``checkpoint_every`` steps (atomically).
    """
    from luminate import progress as progress_module

    settings = settings.replace(**fields) if fields else settings
    n_features, k, steps, seed = settings.n_features, settings.k, settings.steps, settings.seed
    sae = SparseAutoencoder(channels, n_features, k, settings.method, seed, None if mean is None else mean / scale)
    trainer = Trainer(sae, settings.lr)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None:
        load_checkpoint(checkpoint, trainer, key)
    k_aux = settings.k_aux or min(n_features, 2 * k)
    bar = progress_module.bar(steps, desc, unit="step", initial=trainer.step, enabled=progress)
    try:
        while trainer.step < steps:
            x = rows(batch_rows(seed, trainer.step, n_rows, settings.batch_size)) / scale
            stats = train_step(trainer, x, settings.lr, steps, settings.aux_weight, k_aux, settings.dead_steps)
            if bar is not None:
                bar.update(1)
                if trainer.step % 25 == 0:
                    bar.set_postfix(r2=f"{1 - stats['fvu']:.3f}", dead=f"{100 * stats['dead']:.0f}%", refresh=False)
            if checkpoint is not None and (trainer.step % settings.checkpoint_every == 0 or trainer.step == steps):
                save_checkpoint(checkpoint, trainer, key)
    finally:
        if bar is not None:
            bar.close()
    with torch.no_grad():   # back to raw activation units: x̂ = scale * (W_dec z' + b_dec'), z' = z / scale
        sae.b_dec.mul_(scale)
        sae.b_enc.mul_(scale)
        sae.theta.mul_(scale)
    return sae


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]


def fit_nmf(x: np.ndarray, n_features: int, seed: int = 0, max_iter: int = 400) -> np.ndarray:
    """NMF of the activations' positive and negative parts ``[R, 2C]`` (scikit-learn); returns the components
    ``[N, 2C]`` (``H``)."""
    from sklearn.decomposition import NMF

    data = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], 1)
    # NNDSVD needs n_features <= min(rows, 2C); a wider (overcomplete) factorization starts from random factors
    init = "nndsvda" if n_features <= min(data.shape) else "random"
    model = NMF(n_components=n_features, init=init, random_state=seed, max_iter=max_iter)
    model.fit(data)
    return model.components_.astype(np.float32)


def nmf_codes(x: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Codes ``[R, N]`` of ``x`` ``[R, C]`` under fixed NMF components ``[N, 2C]`` (scikit-learn's solver)."""
    from sklearn.decomposition import non_negative_factorization

    data = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], 1).astype(np.float64)
    w, _, _ = non_negative_factorization(data, H=components.astype(np.float64), n_components=components.shape[0],
                                         update_H=False, max_iter=400)
    return w.astype(np.float32)

