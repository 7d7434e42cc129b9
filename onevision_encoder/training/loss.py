"""Multi-label cluster discrimination with Partial FC: class centres sharded across processes.

Every sample carries up to ``L`` cluster labels (``-1`` pads). Each step draws ``num_labels`` of them per
sample; each drawn label is its own single-positive CosFace softmax over the class centres kept this step.

Sharding: with ``W`` processes in the group and ``C`` classes, rank ``r`` owns the contiguous block
``[r * (C // W) + min(r, C % W), ...)`` of ``C // W`` classes, plus one more for the first ``C % W`` ranks
(:func:`class_shard_range`). Each rank scores the *global* batch (embeddings gathered with gradient)
against its own kept centres; the softmax max and denominator are reduced across ranks, so every rank
computes the same loss value.

Gradients: the loss is replicated, not summed, across ranks. Rank ``r`` ends up holding exactly
``dL/d(its embeddings)`` and ``dL/d(its centre shard)`` for the one value ``L`` it returns, so the
gradient of a backbone replicated with DDP is the *sum* over ranks of its per-rank gradients (average
them and it is ``1 / W`` of the loss's gradient). The centres must not be wrapped in DDP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .seeds import mix_seed

__all__ = ["ClusterDiscriminationLoss", "class_shard_range"]

CENTRE_BLOCK = 4096  # classes drawn from one seed at initialisation


def class_shard_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """The classes ``[start, end)`` that ``rank`` owns out of ``num_classes`` split over ``world_size``.

    Contiguous blocks of ``num_classes // world_size``; the first ``num_classes % world_size`` ranks hold
    one class more, so the blocks differ in size by at most one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class _GatherWithGrad(torch.autograd.Function):
    """Concatenates every rank's rows; the backward hands each rank the full gradient of its own rows.

    Each rank's graph only sees the paths through its own centres, so its gradient for the gathered
    rows is partial; summing those partials over ranks gives the loss's gradient, of which a rank keeps
    its slice.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any, sizes: list[int], rank: int) -> torch.Tensor:
        longest = max(sizes)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        ctx.group, ctx.sizes, ctx.rank = group, sizes, rank
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        grad = grad.contiguous().clone()  # all_reduce works in place; the incoming buffer may be shared
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


class _SumReplicated(torch.autograd.Function):
    """All-reduce (sum) whose result feeds a loss that every rank computes identically.

    The backward is the identity: every rank receives the same upstream gradient ``dL/dS`` for the sum
    ``S = sum_r x_r``, and ``dS/dx_r = 1``. An all-reduce in the backward would count the one loss once per
    rank (the release's gradient was ``world_size`` times too large).
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class ClusterDiscriminationLoss(nn.Module):
    """Multi-label cluster discrimination (CosFace margin) over Partial-FC-sampled, rank-sharded centres.

    Args:
        num_classes: Number of clusters ``C`` (at least the number of processes).
        embed_dim: Embedding width ``D``.
        margin: CosFace margin ``m`` subtracted from the positive's cosine.
        scale: Logit scale ``s``.
        sample_rate: Fraction of each rank's centres kept per step (positives always kept; ``1.0`` keeps all).
        num_labels: Labels drawn per sample per step (at random, without replacement, among its valid labels);
            ``None`` or equal to the stored count ``L`` uses every stored label in order.
        filter_threshold: Negatives whose cosine to the sample exceeds this are left out of that softmax
            (likely unlabelled positives); positives never are. ``None`` disables the filter.
        process_group: Group the centres are sharded over; ``None`` means the default group when
            ``torch.distributed`` is initialised (at construction), else one process.
        seed: Seed of the label draw and centre sampling; see :meth:`reseed`.

    Attributes:
        weight: This rank's centres ``[end - start, D]`` (all ``[C, D]`` with one process).
        local_range: ``(start, end)``, the classes this rank owns.
        last_drawn_labels: The global ``[N, num_labels]`` labels drawn by the last forward (``-1`` = none).
        last_kept: Indices (into ``weight``) of the centres the last forward kept, ascending.

    ``state_dict()`` holds this rank's shard (``weight``) and, as extra state, the shard's layout and the
    seed; loading it on a rank that owns a different block raises. To move between numbers of processes use
    :meth:`full_state` / :meth:`load_full_state`.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        margin: float = 0.3,
        scale: float = 64.0,
        sample_rate: float = 0.1,
        num_labels: int | None = 8,
        filter_threshold: float | None = 0.75,
        process_group: Any = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1 or embed_dim < 1:
            raise ValueError(f"num_classes ({num_classes}) and embed_dim ({embed_dim}) must be positive")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if num_labels is not None and num_labels < 1:
            raise ValueError(f"num_labels must be positive or None, got {num_labels}")
        if process_group is None and dist.is_available() and dist.is_initialized():
            process_group = dist.group.WORLD
        if process_group is None:
            world_size, rank = 1, 0
        else:
            world_size, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
            if rank < 0:
                raise ValueError("this process is not a member of process_group")
        if num_classes < world_size:
            raise ValueError(f"{num_classes} classes cannot be sharded over {world_size} processes")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.margin = float(margin)
        self.scale = float(scale)
        self.sample_rate = float(sample_rate)
        self.num_labels = num_labels
        self.filter_threshold = None if filter_threshold is None else float(filter_threshold)
        self.process_group = process_group
        self.world_size = world_size
        self.rank = rank
        self.local_range: tuple[int, int] = class_shard_range(num_classes, world_size, rank)
        self.weight = nn.Parameter(torch.empty(self.local_range[1] - self.local_range[0], embed_dim))
        self._seed = int(seed)
        self._calls = 0
        self.last_drawn_labels: torch.Tensor | None = None
        self.last_kept: torch.Tensor | None = None
        self.reset_parameters()

    @property
    def num_local_classes(self) -> int:
        return self.local_range[1] - self.local_range[0]

    def reset_parameters(self) -> None:
        """N(0, 0.01) centres, reproducible under ``torch.manual_seed`` and the same whatever the number
        of processes: centres are drawn in fixed blocks of classes, each block from its own seed, and
        every rank draws only the blocks its slice overlaps."""
        # One draw from the global generator, equal on all ranks when they are seeded alike.
        base = int(torch.randint(0, 2**62, (1,)).item())
        start, end = self.local_range
        pieces = []
        for block in range(start // CENTRE_BLOCK, -(-end // CENTRE_BLOCK)):
            first = block * CENTRE_BLOCK
            rows = min(CENTRE_BLOCK, self.num_classes - first)
            generator = torch.Generator().manual_seed(mix_seed(base, block))
            values = torch.empty(rows, self.embed_dim).normal_(0.0, 0.01, generator=generator)
            pieces.append(values[max(start - first, 0) : min(end - first, rows)])
        with torch.no_grad():
            self.weight.copy_(torch.cat(pieces))

    def reseed(self, seed: int) -> None:
        """Seed the next forward's draws. Later forwards without a reseed advance from it deterministically.

        Every rank must use the same seed: the label draw has to agree across ranks.
        """
        self._seed = int(seed)
        self._calls = 0

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, local_range={self.local_range}, "
            f"margin={self.margin}, scale={self.scale}, sample_rate={self.sample_rate}, "
            f"num_labels={self.num_labels}, filter_threshold={self.filter_threshold}"
        )

    # ----------------------------------------------------------------- sampling

    def num_kept(self, num_positives: int) -> int:
        """Centres kept on this rank when ``num_positives`` of its classes are drawn positives."""
        local = self.num_local_classes
        # ceil of the product, forgiving float error such as 0.1 * 30 == 3.0000000000000004
        wanted = math.ceil(self.sample_rate * local - 1e-9 * max(local, 1))
        return min(local, max(num_positives, wanted, 1))

    def draw_labels(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[N, num_labels]`` labels drawn at random from each row's valid (``>= 0``) ones, without
        replacement: a row with at least ``num_labels`` valid labels gives that many different ones, a row
        with fewer gives each of them equally often (``num_labels // count`` or one more times).

        Rows without a valid label draw ``-1``. With ``num_labels`` None or equal to ``L`` returns ``labels``.
        """
        if self.num_labels is None or self.num_labels == labels.shape[1]:
            return labels
        valid = labels >= 0
        counts = valid.sum(dim=1, keepdim=True).clamp(min=1)
        # A random order of each row with its valid labels first; the draws walk it, cycling when short.
        keys = torch.rand(labels.shape, generator=generator, device=labels.device).masked_fill(~valid, 2.0)
        order = keys.argsort(dim=1)
        steps = torch.arange(self.num_labels, device=labels.device)[None, :] % counts
        # A row without valid labels takes its first column in that order, which is -1 like the rest of the row.
        return labels.gather(1, order.gather(1, steps))

    def select_centres(self, drawn: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ascending indices into ``weight``: every local positive in ``drawn`` plus random negatives.

        ``drawn`` holds global class ids (``-1`` ignored); the count kept is :meth:`num_kept`.
        """
        start, end = self.local_range
        local = self.num_local_classes
        device = drawn.device
        flat = drawn.reshape(-1)
        is_positive = torch.zeros(local, dtype=torch.bool, device=device)
        is_positive[flat[(flat >= start) & (flat < end)] - start] = True
        keep = self.num_kept(int(is_positive.sum()))
        if keep >= local:
            return torch.arange(local, device=device)
        scores = torch.rand(local, generator=generator, device=device).masked_fill(is_positive, 2.0)
        return scores.topk(keep).indices.sort().values

    # ----------------------------------------------------------------- forward

    def _generator(self, device: torch.device, *stream: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(mix_seed(self._seed, self._calls, *stream))

    def _gather(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.world_size == 1:
            return embeddings, labels
        count = torch.tensor([embeddings.shape[0]], device=embeddings.device, dtype=torch.long)
        counts = [torch.empty_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count, group=self.process_group)
        sizes = [int(c) for c in counts]
        all_embeddings = _GatherWithGrad.apply(embeddings, self.process_group, sizes, self.rank)
        with torch.no_grad():
            all_labels = _GatherWithGrad.apply(labels, self.process_group, sizes, self.rank)
        return all_embeddings, all_labels

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over (global samples x drawn labels, padding excluded) of ``-log p(positive)``.

        Args:
            embeddings: ``[B, D]`` this rank's embeddings (any float dtype; scored in float32, or float64
                when the inputs are float64). Local batch sizes may differ between ranks.
            labels: ``[B, L]`` (or ``[B]``) integer class ids in ``[0, num_classes)``, ``-1`` for padding.

        Returns:
            The scalar loss, identical on every rank.
        """
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be [B, {self.embed_dim}], got {tuple(embeddings.shape)}")
        if labels.dim() == 1:
            labels = labels[:, None]
        if labels.dim() != 2 or labels.shape[0] != embeddings.shape[0] or labels.shape[1] < 1:
            raise ValueError(f"labels must be [B, L] with B={embeddings.shape[0]}, got {tuple(labels.shape)}")
        device = embeddings.device
        all_embeddings, all_labels = self._gather(embeddings, labels.to(device=device, dtype=torch.long))
        if all_labels.numel() and (int(all_labels.min()) < -1 or int(all_labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}) or be -1")

        drawn = self.draw_labels(all_labels, self._generator(device, 0))
        # The negatives may differ per rank (each samples its own block): the stream includes the rank.
        kept = self.select_centres(drawn, self._generator(device, 1, self.rank))
        self._calls += 1
        self.last_drawn_labels, self.last_kept = drawn, kept

        with torch.autocast(device_type=device.type, enabled=False):
            # bf16 logits scaled by 64 would be off by whole units; score in float32 (float64 if given).
            dtype = torch.float64 if torch.float64 in (all_embeddings.dtype, self.weight.dtype) else torch.float32
            centres = self.weight if kept.numel() == self.num_local_classes else self.weight.index_select(0, kept)
            cos = F.normalize(all_embeddings.to(dtype), dim=1) @ F.normalize(centres.to(dtype), dim=1).T
            return self._loss_from_cosines(cos, drawn, kept)

    def _loss_from_cosines(self, cos: torch.Tensor, drawn: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The loss from ``cos`` ``[N, K]`` (global samples x this rank's kept centres).

        Row ``(n, j)`` is the softmax of sample ``n`` whose positive is ``drawn[n, j]``. Its terms split into
        (a) kept centres that are no drawn label of sample ``n`` (the same for all of ``n``'s rows, summed once),
        (b) the sample's other drawn labels, negatives in this row ([N, k, k], so no [N, k, K] tensor), and
        (c) the positive with its margin.
        """
        k = drawn.shape[1]
        start, end = self.local_range
        valid = drawn >= 0
        rows_n, rows_j = valid.nonzero(as_tuple=True)
        n_rows = rows_n.numel()  # identical on every rank: drawn is global
        if n_rows == 0:
            return cos.sum() * 0.0  # keeps the graph (and the gather's backward) on every rank
        device, dtype = cos.device, cos.dtype
        neg_inf = torch.tensor(float("-inf"), device=device, dtype=dtype)
        s, m = self.scale, self.margin

        position = torch.full((self.num_local_classes,), -1, dtype=torch.long, device=device)
        position[kept] = torch.arange(kept.numel(), device=device)
        own = valid & (drawn >= start) & (drawn < end)
        column = torch.where(own, position[(drawn - start).clamp(0, self.num_local_classes - 1)], 0)
        cos_label = cos.gather(1, column)  # [N, k]; meaningful where own

        logits = cos * s
        if self.filter_threshold is None:
            unfiltered = torch.ones_like(cos, dtype=torch.bool)
            label_unfiltered = torch.ones_like(own)
        else:
            unfiltered = cos <= self.filter_threshold
            label_unfiltered = cos_label <= self.filter_threshold
        is_label = torch.zeros_like(unfiltered)
        owned = own.nonzero(as_tuple=True)
        is_label[owned[0], column[owned]] = True

        # (a), shifted by its own max; rescaled to each row's max below.
        others = unfiltered & ~is_label
        others_max = torch.where(others, logits, neg_inf).amax(dim=1).detach()  # -inf when empty
        safe_max = torch.where(others_max.isfinite(), others_max, 0.0)
        others_sum = torch.exp(torch.where(others, logits - safe_max[:, None], neg_inf)).sum(dim=1)

        # (b): a drawn label j' is a negative of row j when it differs from row j's label; repeats count once.
        same = drawn[:, :, None] == drawn[:, None, :]
        earlier = torch.ones(k, k, dtype=torch.bool, device=device).tril(-1)
        first = ~(same & earlier).any(dim=2)
        label_negative = (own & first & label_unfiltered)[:, None, :] & ~same  # [N, row j, label j']
        label_negative = label_negative[rows_n, rows_j]  # [R, k]
        label_logits = (cos_label * s)[rows_n]  # [R, k]

        # (c)
        row_own = own[rows_n, rows_j]
        positive = (cos_label[rows_n, rows_j] - m) * s

        # A per-row max over the terms actually in the row, so each denominator is >= 1 (no underflow to 0).
        row_max = torch.maximum(
            torch.maximum(others_max[rows_n], torch.where(label_negative, label_logits, neg_inf).amax(dim=1)),
            torch.where(row_own, positive, neg_inf),
        ).detach()
        if self.world_size > 1:
            row_max = row_max.clone()
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=self.process_group)

        denominator = (
            others_sum[rows_n] * torch.exp(others_max[rows_n] - row_max)
            + torch.exp(torch.where(label_negative, label_logits - row_max[:, None], neg_inf)).sum(dim=1)
            + torch.exp(torch.where(row_own, positive - row_max, neg_inf))
        )
        positive_logit = torch.where(row_own, positive, 0.0)
        if self.world_size > 1:
            denominator, positive_logit = _SumReplicated.apply(
                torch.stack([denominator, positive_logit]), self.process_group
            ).unbind(0)
        return (denominator.log() + row_max - positive_logit).sum() / n_rows

    # ----------------------------------------------------------------- whole-centre state

    @torch.no_grad()
    def full_state(self) -> dict[str, Any]:
        """``{"weight": [num_classes, D] CPU tensor, "seed": int}``, returned on every rank.

        A collective: every rank of the group must call it. Shards travel one at a time, so device memory
        holds one shard beyond the weight; the whole tensor is assembled on the CPU.
        """
        weight = self.weight.detach()
        if self.world_size == 1:
            return {"weight": weight.cpu().clone(), "seed": self._seed}
        whole = torch.empty(self.num_classes, self.embed_dim, dtype=weight.dtype)
        ranges = [class_shard_range(self.num_classes, self.world_size, r) for r in range(self.world_size)]
        buffer = weight.new_empty((max(end - start for start, end in ranges), self.embed_dim))
        for owner, (start, end) in enumerate(ranges):
            if owner == self.rank:
                buffer[: end - start].copy_(weight)
            source = dist.get_global_rank(self.process_group, owner)
            dist.broadcast(buffer, src=source, group=self.process_group)
            whole[start:end].copy_(buffer[: end - start])
        return {"weight": whole, "seed": self._seed}

    @torch.no_grad()
    def load_full_state(self, state: Mapping[str, Any] | torch.Tensor) -> None:
        """Keep this rank's rows of a whole ``[num_classes, D]`` weight (a tensor or :meth:`full_state`'s dict).

        No communication: every rank reads the same whole tensor, whatever number of processes wrote it.
        """
        weight = state["weight"] if isinstance(state, Mapping) else state
        if tuple(weight.shape) != (self.num_classes, self.embed_dim):
            raise ValueError(f"expected a [{self.num_classes}, {self.embed_dim}] weight, got {tuple(weight.shape)}")
        start, end = self.local_range
        self.weight.copy_(weight[start:end])
        if isinstance(state, Mapping) and "seed" in state:
            self.reseed(int(state["seed"]))

    # ----------------------------------------------------------------- state_dict

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "local_range": list(self.local_range),
            "world_size": self.world_size,
            "seed": self._seed,
            "calls": self._calls,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = (int(state["num_classes"]), tuple(int(v) for v in state["local_range"]))
        if saved != (self.num_classes, self.local_range):
            raise ValueError(
                f"this state_dict holds classes {list(saved[1])} of {saved[0]} (one shard of "
                f"{state.get('world_size')} processes) but this rank owns {list(self.local_range)} of "
                f"{self.num_classes}; use full_state() / load_full_state() to change the number of processes"
            )
        self._seed = int(state.get("seed", self._seed))
        self._calls = int(state.get("calls", 0))
