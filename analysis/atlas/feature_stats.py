"""Per-latent running statistics of one SAE over token batches, combinable exactly and in any order.

A ``FeatureStats`` holds, for every latent: firing count, sum and max of its activations, a linear
and a log-spaced histogram, the top-K windows (with the latent's activation at every token of each),
and a few random tokens per activation interval (with their windows). Two of them built over
disjoint windows combine into the one built over the union (``combine``), bit for bit, whatever
the order: a single pass, a sharded run merged later, and a resumed run all give the same atlas.

The linear histogram and the intervals cover ``[0, 2**e]`` where ``2**e`` is the smallest power of
two above the latent's max. The max is only known at the end, so bins cannot sit on
``[0, max]`` in one pass; on a power-of-two range, a raised max merges bins pairwise, which loses
nothing. ``HIST_BINS`` and ``N_INTERVALS`` are twice the displayed 50 and 10, so that at least
that many bins and intervals lie under the max.

Random samples are the tokens with the smallest hash of (global token id, latent, SAE salt): the
same token is picked whatever the batch, shard or device, which is what makes combining exact.
Every update is a few tensor operations over all latents at once; nothing loops over latents.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar

import torch

# the widths the atlas stores are the file's contract, declared there
from analysis.atlas import contract
from analysis.atlas.contract import HIST_BINS, LOG_BINS, LOG_BINS_PER_OCTAVE, LOG_MIN_EXP, N_INTERVALS

INTERVAL_SAMPLES = 5
NO_RANGE = -1000  # range exponent of a latent that has never fired
EMPTY_KEY = 2**62
_MIX = [v - 2**64 if v >= 2**63 else v for v in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)]


def sample_keys(global_tokens: torch.Tensor, latents: torch.Tensor, salt: int) -> torch.Tensor:
    """A reproducible pseudo-random key in [0, 2**62) for each (token, latent) pair (splitmix64 finaliser)."""
    x = global_tokens * _MIX[0] + latents * _MIX[1] + salt
    x = (x ^ ((x >> 30) & ((1 << 34) - 1))) * _MIX[1]
    x = (x ^ ((x >> 27) & ((1 << 37) - 1))) * _MIX[2]
    x = x ^ ((x >> 31) & ((1 << 33) - 1))
    return (x >> 2) & (EMPTY_KEY - 1)


def block_salt(salt: int, first_latent: int) -> int:
    """The salt under which statistics of latents ``first_latent, first_latent + 1, ...`` of an SAE
    (numbered from 0 there) draw the same samples as the SAE's full statistics: a key depends on
    ``latent * _MIX[1] + salt`` in wrapping int64 arithmetic. ``verify`` recomputes single latents so."""
    x = (salt + first_latent * _MIX[1]) % 2**64
    return x - 2**64 if x >= 2**63 else x


def range_exponent(values: torch.Tensor) -> torch.Tensor:
    """Smallest ``e`` with ``values < 2**e`` (NO_RANGE where the value is 0).

    Strictly below, so no value ever sits on a range's top edge: a bin index computed at one
    range then halved equals the index computed at twice the range, which keeps merging exact.
    """
    _, exponent = torch.frexp(values)
    return torch.where(values > 0, exponent, NO_RANGE).int()


def linear_bin(values: torch.Tensor, exponent: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin of each value among ``bins`` equal bins of ``[0, 2**exponent)``: ``floor(v / 2**e * bins)``
    exactly. In float64 a float32 value times ``bins`` (at most 7 bits) is exact and the power-of-two
    scaling is exact, so a value on a bin edge lands in that bin; float32 rounded some a bin up."""
    scaled = torch.ldexp(values.double(), -exponent.double()) * bins
    return scaled.floor().long().clamp(0, bins - 1)


def log_bin(values: torch.Tensor) -> torch.Tensor:
    position = torch.floor(torch.log2(values) * LOG_BINS_PER_OCTAVE).long() - LOG_MIN_EXP * LOG_BINS_PER_OCTAVE
    return position.clamp(0, LOG_BINS - 1)


def keep_best(groups: torch.Tensor, primary: torch.Tensor, secondary: torch.Tensor, limit: int):
    """Indices of the ``limit`` entries of each group smallest by (primary, secondary), and their ranks."""
    order = torch.argsort(secondary, stable=True)
    order = order[torch.argsort(primary[order], stable=True)]
    order = order[torch.argsort(groups[order], stable=True)]
    sorted_groups = groups[order]
    position = torch.arange(len(order), device=groups.device)
    starts = torch.ones_like(sorted_groups, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    first = torch.cummax(torch.where(starts, position, 0), dim=0).values
    rank = position - first
    keep = rank < limit
    return order[keep], rank[keep]


def _coarsen(counts: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Merge bins of ``counts`` [n, bins] 2**shift at a time (per row), keeping the bin count."""
    bins = counts.shape[1]
    index = torch.arange(bins, device=counts.device)[None, :] >> shift[:, None].long()
    return torch.zeros_like(counts).scatter_add_(1, index, counts)


def _replacements(
    groups: torch.Tensor,
    primary: torch.Tensor,
    secondary: torch.Tensor,
    incoming_group: torch.Tensor,
    incoming_primary: torch.Tensor,
    incoming_secondary: torch.Tensor,
):
    """Which stored slots lose to which incoming entries, keeping the best (smallest) per group.

    ``primary``/``secondary`` are [len(groups), slots] for the stored entries of ``groups`` (sorted,
    empty slots holding the worst possible primary). Returns the flat indices of the evicted slots
    and the indices of the incoming entries that take them, paired in order: only winners move,
    so a batch costs what it changes, not what is stored.
    """
    slots = primary.shape[1]
    n_stored = primary.numel()
    stored_group = groups.repeat_interleave(slots)
    kept, _ = keep_best(
        torch.cat([stored_group, incoming_group]),
        torch.cat([primary.reshape(-1), incoming_primary]),
        torch.cat([secondary.reshape(-1), incoming_secondary]),
        slots,
    )
    evicted = torch.ones(n_stored, dtype=torch.bool, device=groups.device)
    evicted[kept[kept < n_stored]] = False
    return evicted.nonzero(as_tuple=True)[0], kept[kept >= n_stored] - n_stored


class _Entries:
    """Columns of equal length (one row per candidate example) that concatenate and index together."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # set on each subclass by @dataclass

    def cat(self, other):
        return type(self)(*(torch.cat([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)))

    def take(self, index: torch.Tensor):
        return type(self)(*(getattr(self, f.name)[index] for f in fields(self)))


@dataclass
class TopEntries(_Entries):
    """Candidate top windows: the window's max for ``latent``, where it is, and the whole window."""

    latent: torch.Tensor
    value: torch.Tensor
    window: torch.Tensor
    position: torch.Tensor
    acts: torch.Tensor  # [n, context]


@dataclass
class SampleEntries(_Entries):
    """Candidate interval samples: a firing token of ``latent`` in ``interval``, its key and window."""

    latent: torch.Tensor
    interval: torch.Tensor
    key: torch.Tensor
    token: torch.Tensor  # global token id: window * context + position
    value: torch.Tensor
    acts: torch.Tensor  # [n, context]


@dataclass
class FeatureStats:
    """Running statistics of every latent of one SAE (see the module docstring)."""

    fire_count: torch.Tensor  # [d] int64
    act_sum: torch.Tensor  # [d] float64
    max_act: torch.Tensor  # [d] float32
    range_exp: torch.Tensor  # [d] int32, NO_RANGE until the latent fires
    hist: torch.Tensor  # [d, HIST_BINS] int64 over [0, 2**range_exp]
    log_hist: torch.Tensor  # [d, LOG_BINS] int64
    interval_count: torch.Tensor  # [d, N_INTERVALS] int64
    l0_counts: torch.Tensor  # [d + 1] int64: tokens by number of latents firing
    top_value: torch.Tensor  # [d, K] float32, -inf where empty
    top_window: torch.Tensor  # [d, K] int64, -1 where empty
    top_position: torch.Tensor  # [d, K] int64
    top_acts: torch.Tensor  # [d, K, context] float32
    sample_key: torch.Tensor  # [d, N_INTERVALS, S] int64, EMPTY_KEY where empty
    sample_token: torch.Tensor  # [d, N_INTERVALS, S] int64
    sample_value: torch.Tensor  # [d, N_INTERVALS, S] float32
    sample_acts: torch.Tensor  # [d, N_INTERVALS, S, context] float16
    salt: int

    @classmethod
    def empty(cls, d_sae: int, top_k: int, context: int, salt: int, device: str | torch.device = "cpu") -> FeatureStats:
        def zeros(*shape, dtype=torch.int64):
            return torch.zeros(shape, dtype=dtype, device=device)

        shape = (d_sae, N_INTERVALS, INTERVAL_SAMPLES)
        return cls(
            fire_count=zeros(d_sae),
            act_sum=zeros(d_sae, dtype=torch.float64),
            max_act=zeros(d_sae, dtype=torch.float32),
            range_exp=torch.full((d_sae,), NO_RANGE, dtype=torch.int32, device=device),
            hist=zeros(d_sae, HIST_BINS),
            log_hist=zeros(d_sae, LOG_BINS),
            interval_count=zeros(d_sae, N_INTERVALS),
            l0_counts=zeros(d_sae + 1),
            top_value=torch.full((d_sae, top_k), -torch.inf, device=device),
            top_window=torch.full((d_sae, top_k), -1, dtype=torch.int64, device=device),
            top_position=torch.full((d_sae, top_k), -1, dtype=torch.int64, device=device),
            top_acts=zeros(d_sae, top_k, context, dtype=torch.float32),
            sample_key=torch.full(shape, EMPTY_KEY, dtype=torch.int64, device=device),
            sample_token=torch.full(shape, -1, dtype=torch.int64, device=device),
            sample_value=zeros(*shape, dtype=torch.float32),
            sample_acts=zeros(*shape, context, dtype=torch.float16),
            salt=salt,
        )

    @property
    def d_sae(self) -> int:
        return len(self.fire_count)

    @property
    def top_k(self) -> int:
        return self.top_value.shape[1]

    @property
    def context(self) -> int:
        return self.top_acts.shape[2]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "salt"}

    def to(self, device: str | torch.device) -> FeatureStats:
        return FeatureStats(**{k: v.to(device) for k, v in self.tensors().items()}, salt=self.salt)

    def canonical(self) -> FeatureStats:
        """Put each latent's top windows best first and each interval's samples by key; returns self.

        While running, slots are filled wherever a loser leaves room (cheaper than keeping them
        sorted); this order is the one the atlas stores as ``rank``.
        """

        def by(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
            order = torch.argsort(secondary, dim=-1, stable=True)
            return order.gather(-1, torch.argsort(primary.gather(-1, order), dim=-1, stable=True))

        def reorder(names: tuple[str, ...], order: torch.Tensor) -> None:
            for name in names:
                tensor = getattr(self, name)
                index = order if tensor.dim() == order.dim() else order[..., None].expand(*order.shape, self.context)
                setattr(self, name, tensor.gather(order.dim() - 1, index))

        reorder(("top_value", "top_window", "top_position", "top_acts"), by(-self.top_value, self.top_window))
        reorder(("sample_key", "sample_token", "sample_value", "sample_acts"), by(self.sample_key, self.sample_token))
        return self

    # -- updating ---------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, acts: torch.Tensor, window_ids: torch.Tensor, counted: torch.Tensor) -> None:
        """Add one batch: ``acts`` [windows, context, d_sae] with special tokens already zeroed,
        ``window_ids`` [windows] the global ids of those windows, ``counted`` [windows, context]
        False at special tokens (left out of the L0 distribution)."""
        n_windows, context, d_sae = acts.shape
        flat = acts.reshape(-1, d_sae)
        token_index, latent = flat.nonzero(as_tuple=True)
        value = flat[token_index, latent]

        batch_max = torch.zeros(d_sae, device=acts.device).scatter_reduce_(0, latent, value, "amax")
        self._raise_range(torch.maximum(self.range_exp, range_exponent(batch_max)))
        self.max_act = torch.maximum(self.max_act, batch_max)
        per_token = torch.bincount(token_index, minlength=flat.shape[0])[counted.reshape(-1)]
        self.l0_counts += torch.bincount(per_token, minlength=d_sae + 1)
        self.fire_count += torch.bincount(latent, minlength=d_sae)
        self.act_sum += torch.bincount(latent, weights=value.double(), minlength=d_sae)

        exponent = self.range_exp[latent]
        self.hist += torch.bincount(
            latent * HIST_BINS + linear_bin(value, exponent, HIST_BINS), minlength=d_sae * HIST_BINS
        ).view(d_sae, HIST_BINS)
        self.log_hist += torch.bincount(latent * LOG_BINS + log_bin(value), minlength=d_sae * LOG_BINS).view(
            d_sae, LOG_BINS
        )
        interval = linear_bin(value, exponent, N_INTERVALS)
        self.interval_count += torch.bincount(latent * N_INTERVALS + interval, minlength=d_sae * N_INTERVALS).view(
            d_sae, N_INTERVALS
        )

        window_row = token_index // context
        global_token = window_ids[window_row] * context + token_index % context
        self._merge_samples(self._sample_candidates(acts, latent, interval, value, window_row, global_token))
        window_max = (
            torch.zeros(n_windows * d_sae, device=acts.device)
            .scatter_reduce_(0, window_row * d_sae + latent, value, "amax")
            .view(n_windows, d_sae)
        )
        self._merge_top(self._top_candidates(acts, window_max, window_ids))

    def _sample_candidates(self, acts, latent, interval, value, window_row, global_token) -> SampleEntries:
        """The batch's firing tokens that can still enter their interval's sample, at most S per interval."""
        key = sample_keys(global_token, latent, self.salt)
        threshold = self.sample_key.amax(dim=2)[latent, interval]
        chance = (key < threshold).nonzero(as_tuple=True)[0]
        latent, interval, key, global_token, value, window_row = (
            t[chance] for t in (latent, interval, key, global_token, value, window_row)
        )
        kept, _ = keep_best(latent * N_INTERVALS + interval, key, global_token, INTERVAL_SAMPLES)
        window_acts = acts[window_row[kept], :, latent[kept]].to(torch.float16)
        return SampleEntries(latent[kept], interval[kept], key[kept], global_token[kept], value[kept], window_acts)

    def _top_candidates(self, acts: torch.Tensor, window_max: torch.Tensor, window_ids: torch.Tensor) -> TopEntries:
        """The batch's windows that can still enter each latent's top K, at most K per latent."""
        floor = self.top_value.amin(dim=1)
        rows, latent = ((window_max > 0) & (window_max >= floor[None, :])).nonzero(as_tuple=True)
        value, window = window_max[rows, latent], window_ids[rows]
        kept, _ = keep_best(latent, -value, window, self.top_k)
        rows, latent, value, window = rows[kept], latent[kept], value[kept], window[kept]
        window_acts = acts[rows, :, latent]
        position = (window_acts == value[:, None]).int().argmax(dim=1)
        return TopEntries(latent, value, window, position, window_acts)

    # -- combining --------------------------------------------------------------------------------

    @torch.no_grad()
    def combine(self, other: FeatureStats) -> None:
        """Absorb ``other`` (statistics over other windows); ``other`` is left unusable."""
        target = torch.maximum(self.range_exp, other.range_exp)
        self._raise_range(target)
        other._raise_range(target)
        for name in ("fire_count", "act_sum", "hist", "log_hist", "interval_count", "l0_counts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_act = torch.maximum(self.max_act, other.max_act)
        self._merge_top(other._top_entries(torch.arange(other.d_sae, device=other.fire_count.device)))
        self._merge_samples(other._sample_entries(torch.arange(other.d_sae, device=other.fire_count.device)))

    @classmethod
    def concat(cls, parts: list[FeatureStats], l0_counts: torch.Tensor, salt: int) -> FeatureStats:
        """The statistics of an SAE from those of its consecutive latent ranges (over the same
        windows); ``l0_counts`` counts tokens by firing latents of the whole SAE, which the ranges'
        own histograms cannot give."""
        tensors = {
            name: torch.cat([part.tensors()[name] for part in parts])
            for name in parts[0].tensors()
            if name != "l0_counts"
        }
        return cls(**tensors, l0_counts=l0_counts, salt=salt)

    def _top_entries(self, latents: torch.Tensor) -> TopEntries:
        rows, slots = (self.top_window[latents] >= 0).nonzero(as_tuple=True)
        latent = latents[rows]
        return TopEntries(
            latent,
            self.top_value[latent, slots],
            self.top_window[latent, slots],
            self.top_position[latent, slots],
            self.top_acts[latent, slots],
        )

    def _sample_entries(self, latents: torch.Tensor) -> SampleEntries:
        rows, interval, slot = (self.sample_key[latents] < EMPTY_KEY).nonzero(as_tuple=True)
        latent = latents[rows]
        index = (latent, interval, slot)
        return SampleEntries(
            latent,
            interval,
            self.sample_key[index],
            self.sample_token[index],
            self.sample_value[index],
            self.sample_acts[index],
        )

    def _merge_top(self, incoming: TopEntries) -> None:
        """Write the incoming windows that beat a latent's current top K over the ones they beat."""
        if len(incoming.latent) == 0:
            return
        latents = torch.unique(incoming.latent)
        evicted, taken = _replacements(
            latents,
            -self.top_value[latents],
            self.top_window[latents],
            incoming.latent,
            -incoming.value,
            incoming.window,
        )
        slot = (latents[evicted // self.top_k], evicted % self.top_k)
        self.top_value[slot] = incoming.value[taken]
        self.top_window[slot] = incoming.window[taken]
        self.top_position[slot] = incoming.position[taken]
        self.top_acts[slot] = incoming.acts[taken].to(self.top_acts.dtype)

    def _merge_samples(self, incoming: SampleEntries) -> None:
        """Write the incoming tokens with smaller keys than an interval's current samples over the largest."""
        if len(incoming.latent) == 0:
            return
        incoming_group = incoming.latent * N_INTERVALS + incoming.interval
        groups = torch.unique(incoming_group)
        keys = self.sample_key.view(-1, INTERVAL_SAMPLES)
        evicted, taken = _replacements(
            groups,
            keys[groups],
            self.sample_token.view(-1, INTERVAL_SAMPLES)[groups],
            incoming_group,
            incoming.key,
            incoming.token,
        )
        slot = (groups[evicted // INTERVAL_SAMPLES], evicted % INTERVAL_SAMPLES)
        keys[slot] = incoming.key[taken]
        self.sample_token.view(-1, INTERVAL_SAMPLES)[slot] = incoming.token[taken]
        self.sample_value.view(-1, INTERVAL_SAMPLES)[slot] = incoming.value[taken]
        self.sample_acts.view(-1, INTERVAL_SAMPLES, self.context)[slot] = incoming.acts[taken].to(
            self.sample_acts.dtype
        )

    def _reselect_samples(self, latents: torch.Tensor, entries: SampleEntries) -> None:
        """Keep the S smallest-key entries per (latent, interval) as the samples of ``latents``."""
        kept, rank = keep_best(
            entries.latent * N_INTERVALS + entries.interval, entries.key, entries.token, INTERVAL_SAMPLES
        )
        entries = entries.take(kept)
        self.sample_key[latents] = EMPTY_KEY
        self.sample_token[latents] = -1
        self.sample_value[latents] = 0
        self.sample_acts[latents] = 0
        slot = (entries.latent, entries.interval, rank)
        self.sample_key[slot] = entries.key
        self.sample_token[slot] = entries.token
        self.sample_value[slot] = entries.value
        self.sample_acts[slot] = entries.acts.to(self.sample_acts.dtype)

    def _raise_range(self, target: torch.Tensor) -> None:
        """Widen each latent's range to ``2**target``, merging bins and intervals of latents that have fired."""
        grow = (self.fire_count > 0) & (target > self.range_exp)
        rows = grow.nonzero(as_tuple=True)[0]
        if len(rows):
            shift = (target - self.range_exp)[rows].clamp(max=62)
            self.hist[rows] = _coarsen(self.hist[rows], shift)
            self.interval_count[rows] = _coarsen(self.interval_count[rows], shift)
            entries = self._sample_entries(rows)
            shift_of = torch.zeros(self.d_sae, dtype=torch.int64, device=shift.device)
            shift_of[rows] = shift.long()
            entries.interval = entries.interval >> shift_of[entries.latent]
            self._reselect_samples(rows, entries)
        self.range_exp = torch.maximum(self.range_exp, target.int())


# The running statistics an atlas keeps as they are, one ``features`` column each: every field of
# FeatureStats that names a column of the contract's ``features`` table. The writer stores these and
# the partial reader reads them back by name, so a new per-latent statistic needs no code in either.
STORED_IN_FEATURES = tuple(
    column.name for column in contract.FEATURES.columns if column.name in {f.name for f in fields(FeatureStats)}
)
