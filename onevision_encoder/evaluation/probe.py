"""The attentive probe's training on frozen features, with the release's probe recipe.

The probe (:class:`~onevision_encoder.model.classification.AttentiveProbe`, the head of
``OneVisionEncoderForVideoClassification``, so a trained probe exports as that model): one learned
query attends over all tokens of a clip (``D / 64`` heads), then a residual RMSNorm + MLP(4D),
LayerNorm and a linear classifier whose weights and bias start scaled by 1e-3.
Trained with AdamW (lr 1e-4, no weight decay), linear decay to 1e-7, label smoothing 0.1 and
gradient clipping 5. Under torchrun the probe trains data-parallel: every process draws the same
batch order, takes the loss of its share of each batch, and the gradients are summed, so the
updates are those of one process seeing the whole batch. The validation clips are split so that
each is scored exactly once. Features may be tensors or :class:`~.store.FeatureStore` (read batch by batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..common.distributed import gather_in_order, rank_world
from ..jobs.feature_store import FeatureStore
from ..model.classification import AttentiveProbe

Features = torch.Tensor | FeatureStore  # [S, N, D], indexed by a tensor of rows


@dataclass
class ProbeSettings:
    epochs: int = 10
    lr: float = 1e-4
    min_lr: float = 1e-7
    weight_decay: float = 0.0
    batch_size: int = 32
    label_smoothing: float = 0.1
    grad_clip: float = 5.0
    bf16: bool = False
    seed: int = 0


@dataclass
class ProbeResult:
    curves: list[dict[str, float]] = field(default_factory=list)
    predictions: torch.Tensor | None = None  # final epoch, one per validation clip
    top5: torch.Tensor | None = None
    probe: AttentiveProbe | None = None  # as trained (after the final epoch)

    @property
    def final(self) -> dict[str, float]:
        return self.curves[-1]

    @property
    def best(self) -> dict[str, float]:
        return max(self.curves, key=lambda row: (row["top1"], -row["epoch"]))


@torch.no_grad()
def predict(probe: AttentiveProbe, features: Features, batch_size: int, bf16: bool, device: torch.device):
    """Top-5 class indices of every clip; each process scores the clips ``rank::world``, then all gather."""
    rank, world = rank_world()
    probe.eval()
    mine = torch.arange(rank, len(features), world)
    results = []
    for start in range(0, len(mine), batch_size):
        batch = features[mine[start : start + batch_size]].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = probe(batch.float() if not bf16 else batch)
        results.append(logits.float().topk(min(5, logits.shape[-1]), dim=-1).indices.cpu())
    top = torch.cat(results) if results else torch.zeros(0, 5, dtype=torch.long)
    return torch.stack(gather_in_order(dict(zip(mine.tolist(), top, strict=True))))


def train_probe(
    train_features: Features | Sequence[Features],
    train_labels: torch.Tensor,
    val_features: Features,
    val_labels: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings,
    device: str | torch.device = "cpu",
) -> ProbeResult:
    """Train for ``settings.epochs`` epochs; top-1 / top-5 on the validation clips after each.

    ``train_features`` may be a list of views of the training clips (augmented extractions): epoch
    ``e`` trains on view ``(e - 1) % len(views)``.
    """
    device = torch.device(device)
    views = list(train_features) if isinstance(train_features, Sequence) else [train_features]
    if any(len(view) != len(train_labels) for view in views):
        raise ValueError(f"every training view needs {len(train_labels)} clips, got {[len(v) for v in views]}")
    rank, world = rank_world()
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    probe = AttentiveProbe(views[0].shape[-1], num_classes).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, -(-len(train_labels) // settings.batch_size))
    total = settings.epochs * steps_per_epoch
    end_ratio = settings.min_lr / settings.lr
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1 - (1 - end_ratio) * min(step, total) / max(1, total)
    )
    for parameter in probe.parameters():  # present from the start: a process may sit out a batch
        parameter.grad = torch.zeros_like(parameter)
    result = ProbeResult()
    for epoch in range(1, settings.epochs + 1):
        features = views[(epoch - 1) % len(views)]
        probe.train()
        order = torch.randperm(len(train_labels), generator=generator)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, len(order), settings.batch_size):
            batch_rows = order[start : start + settings.batch_size]
            optimizer.zero_grad(set_to_none=False)
            mine = batch_rows[rank::world]
            if len(mine):
                batch, labels = features[mine].to(device), train_labels[mine].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16):
                    logits = probe(batch if settings.bf16 else batch.float())
                loss = F.cross_entropy(
                    logits.float(), labels, label_smoothing=settings.label_smoothing, reduction="sum"
                )
                (loss / len(batch_rows)).backward()
                loss_sum += loss.detach()
            if world > 1:
                _sum_gradients(probe)
            torch.nn.utils.clip_grad_norm_(probe.parameters(), settings.grad_clip)
            optimizer.step()
            schedule.step()
        if world > 1:
            dist.all_reduce(loss_sum)
        top = predict(probe, val_features, settings.batch_size, settings.bf16, device)
        labels = val_labels[:, None]
        result.curves.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum.item() / len(train_labels),
                "top1": (top[:, :1] == labels).any(1).float().mean().item(),
                "top5": (top == labels).any(1).float().mean().item(),
            }
        )
        result.predictions, result.top5 = top[:, 0], top
    result.probe = probe
    return result


def _sum_gradients(module: nn.Module) -> None:
    """All-reduce the gradients as one flat buffer (a process with no sample in the batch adds zeros)."""
    grads = [parameter.grad for parameter in module.parameters()]
    flat = torch.cat([grad.flatten() for grad in grads])
    dist.all_reduce(flat)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()
