"""What the loaded SAEs see in one text: every latent on every token. Behind the feature page's
"test your text" (one latent's values per token) and search via inference (which latents a text
excites most), as Neuronpedia offers both.

One forward pass stops after the last block any chosen SAE reads. Each SAE is encoded in chunks of
tokens and only its non-zero entries are kept: for a 131k-latent SAE a full 256-token context is
134 MB as a dense [tokens, latents] array (and an encode makes several temporaries that size) but a
few hundred kB as entries, since an SAE fires few latents per token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch

from analysis.hooked_forward import run_to_hooks
from analysis.live_model import LiveInputError, LiveModel
from analysis.sae_loading import LoadedSAE

# Floats per encode chunk: each of an encode's ~5 temporaries is then 32 MB, glibc's largest mmap
# threshold, so it returns to the OS when freed. Smaller chunks land in malloc arenas that keep them
# (peak RSS for a 131k-latent SAE on 256 tokens then varied 96-377 MB run to run; this gives 160 MB).
ENCODE_FLOATS = 2**23
MAX_TOP_N = 1000


@dataclass(frozen=True)
class SparseActivations:
    """One SAE's activations on a text as its non-zero entries, in row-major order."""

    rows: np.ndarray  # int64 token positions, ascending
    cols: np.ndarray  # int64 latents, ascending within a row
    values: np.ndarray  # float32
    shape: tuple[int, int]  # (tokens, latents)

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.cols.nbytes + self.values.nbytes

    def dense(self) -> np.ndarray:
        """The full [tokens, latents] array (for small SAEs and tests)."""
        out = np.zeros(self.shape, dtype=np.float32)
        out[self.rows, self.cols] = self.values
        return out

    def columns(self, latents: Sequence[int]) -> np.ndarray:
        """The [tokens, len(latents)] values of the given latents."""
        slot = np.full(self.shape[1], -1)
        slot[np.asarray(latents, dtype=np.int64)] = np.arange(len(latents))
        picked = slot[self.cols] >= 0
        out = np.zeros((self.shape[0], len(latents)), dtype=np.float32)
        out[self.rows[picked], slot[self.cols[picked]]] = self.values[picked]
        return out


@dataclass(frozen=True)
class TextActivations:
    """A text as the model saw it (after cutting ``cut`` tokens from the left to fit its context)
    and each chosen SAE's activations on every token, BOS included at position 0 when ``has_bos``."""

    token_ids: list[int]
    tokens: list[str]
    cut: int
    has_bos: bool
    acts: dict[str, SparseActivations]


@dataclass(frozen=True)
class LatentActivations:
    """One latent's value on every token of a text: what "test your text" highlights. ``peak`` is
    the position of its largest value outside BOS (None when it is zero there)."""

    tokens: list[str]
    values: list[float]
    cut: int
    has_bos: bool
    peak: int | None


@dataclass(frozen=True)
class TextHit:
    """A latent a text excites: ``score`` (its activation summed over the searched positions, or
    at ``position`` in per-token search), its largest value over those positions and where
    (``peak``), and its value on every token of the text (BOS included)."""

    sae: str
    latent: int
    score: float
    max_act: float
    peak: int
    values: list[float]
    position: int | None = None


def _chosen_saes(live: LiveModel, names: Sequence[str] | None) -> list[LoadedSAE]:
    if names is None:
        if not live.saes:
            raise LiveInputError("no SAEs are loaded: there is nothing to encode the text with")
        return list(live.saes.values())
    if isinstance(names, str) or not names:
        raise LiveInputError("choose SAEs as a non-empty list of names")
    return [live.sae(name) for name in dict.fromkeys(names)]


def _encode_sparse(loaded: LoadedSAE, inputs: torch.Tensor) -> SparseActivations:
    """``loaded`` encoded on ``inputs`` [tokens, d_in], a chunk of tokens at a time."""
    step = max(1, ENCODE_FLOATS // loaded.d_sae)
    rows, cols, values = [], [], []
    for start in range(0, len(inputs), step):
        acts = loaded.sae.encode(inputs[start : start + step]).float()
        row, col = acts.nonzero(as_tuple=True)
        rows.append((row + start).cpu())
        cols.append(col.cpu())
        values.append(acts[row, col].cpu())
    return SparseActivations(
        rows=torch.cat(rows).numpy(),
        cols=torch.cat(cols).numpy(),
        values=torch.cat(values).numpy(),
        shape=(len(inputs), loaded.d_sae),
    )


def encode_text(live: LiveModel, text: str, saes: Sequence[str] | None = None) -> TextActivations:
    """Every latent of the named SAEs (default: all loaded) on every token of ``text``."""
    chosen = _chosen_saes(live, saes)
    ids, cut = live.tokenize(text)
    with live.exclusive(), torch.no_grad():
        cache = run_to_hooks(live.model, ids, sorted({s.hook_name for s in chosen}))
        acts = {s.name: _encode_sparse(s, cache[s.hook_name][0]) for s in chosen}
    token_ids = ids[0].tolist()
    return TextActivations(
        token_ids=token_ids,
        tokens=live.token_strings(token_ids),
        cut=cut,
        has_bos=live.tokenizer.bos_token_id is not None,
        acts=acts,
    )


def latent_activations(live: LiveModel, text: str, sae: str, latent: int) -> LatentActivations:
    """One latent's value on every token of ``text``, for the feature page's "test your text"."""
    live.check_latent(sae, latent)
    encoded = encode_text(live, text, [sae])
    values = encoded.acts[sae].columns([latent])[:, 0]
    first = int(encoded.has_bos)
    peak = first + int(values[first:].argmax()) if len(values) > first and values[first:].max() > 0 else None
    return LatentActivations(
        tokens=encoded.tokens, values=values.tolist(), cut=encoded.cut, has_bos=encoded.has_bos, peak=peak
    )


def _positions(encoded: TextActivations, chosen: Sequence[int] | None, ignore_bos: bool) -> np.ndarray:
    """The token positions to search, ascending; BOS dropped when ignored."""
    count = len(encoded.token_ids)
    if chosen is None:
        positions = set(range(count))
    else:
        for position in chosen:
            if isinstance(position, bool) or not isinstance(position, Integral) or not 0 <= position < count:
                raise LiveInputError(
                    f"token position {position!r} is out of range: the text has {count} tokens, "
                    f"numbered 0 to {count - 1}" + (" (0 is BOS)" if encoded.has_bos else "")
                )
        positions = {int(p) for p in chosen}
    if ignore_bos and encoded.has_bos:
        positions.discard(0)
    if not positions:
        raise LiveInputError("no token positions to search: position 0 is BOS, which is ignored unless asked for")
    return np.array(sorted(positions))


def _allowed_latents(
    live: LiveModel, names: list[str], max_density: float | None, densities: Mapping[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """Per SAE, which latents may be hits (density at most ``max_density``); empty when unfiltered."""
    if max_density is None:
        return {}
    if isinstance(max_density, bool) or not isinstance(max_density, Real) or not 0 <= max_density <= 1:
        raise LiveInputError(f"max density must be a fraction between 0 and 1, not {max_density!r}")
    if densities is None:
        raise LiveInputError("a max density needs the latents' densities (from the atlas)")
    allowed = {}
    for name in names:
        if name not in densities:
            raise LiveInputError(
                f"no densities for {name}: the atlas does not have this SAE, so it cannot be filtered by density"
            )
        density = np.asarray(densities[name], dtype=np.float64)
        if density.shape != (live.saes[name].d_sae,):
            raise LiveInputError(
                f"the densities given for {name} have shape {density.shape}, but it has "
                f"{live.saes[name].d_sae} latents: they belong to another SAE"
            )
        allowed[name] = density <= max_density
    return allowed


def _best(scores: np.ndarray, count: int) -> list[tuple[float, int]]:
    """The ``count`` largest positive scores with their latents, largest first (ties: lower latent first)."""
    latents = np.flatnonzero(scores > 0)
    if len(latents) > count:
        latents = latents[np.argpartition(-scores[latents], count - 1)[:count]]
    return [(float(scores[latent]), int(latent)) for latent in latents[np.lexsort((latents, -scores[latents]))]]


Ranked = tuple[float, int, int, int | None]  # score, SAE index in the search, latent, position (per-token search)


def _searched(encoded: TextActivations, positions: np.ndarray) -> np.ndarray:
    """A mask over the text's tokens: True at the positions searched."""
    mask = np.zeros(len(encoded.token_ids), dtype=bool)
    mask[positions] = True
    return mask


def _ranked_summed(
    encoded: TextActivations, names: list[str], positions: np.ndarray, allowed: dict[str, np.ndarray], top_n: int
) -> list[Ranked]:
    searched = _searched(encoded, positions)
    ranked: list[Ranked] = []
    for index, name in enumerate(names):
        acts = encoded.acts[name]
        kept = searched[acts.rows]
        scores = np.bincount(acts.cols[kept], weights=acts.values[kept], minlength=acts.shape[1])
        if name in allowed:
            scores[~allowed[name]] = 0
        ranked += [(score, index, latent, None) for score, latent in _best(scores, top_n)]
    return sorted(ranked, key=lambda hit: (-hit[0], hit[1], hit[2]))[:top_n]


def _ranked_per_token(
    encoded: TextActivations, names: list[str], positions: np.ndarray, allowed: dict[str, np.ndarray], top_n: int
) -> list[Ranked]:
    """Every SAE's entries at the searched positions in one sort (by position, then score down, SAE,
    latent), each position's first ``top_n`` kept: no Python loop over positions."""
    searched = _searched(encoded, positions)
    parts = []
    for index, name in enumerate(names):
        acts = encoded.acts[name]
        kept = searched[acts.rows] & (acts.values > 0)
        if name in allowed:
            kept &= allowed[name][acts.cols]
        parts.append((acts.rows[kept], np.full(kept.sum(), index), acts.cols[kept], acts.values[kept]))
    rows, saes, latents, values = (np.concatenate(column) for column in zip(*parts))
    order = np.lexsort((latents, saes, -values, rows))
    rows, saes, latents, values = rows[order], saes[order], latents[order], values[order]
    best = np.arange(len(rows)) - np.searchsorted(rows, rows) < top_n  # rank within the position
    return [
        (float(value), int(sae), int(latent), int(row))
        for row, sae, latent, value in zip(rows[best], saes[best], latents[best], values[best])
    ]


def _hits(encoded: TextActivations, names: list[str], positions: np.ndarray, ranked: list[Ranked]) -> list[TextHit]:
    """TextHits for ranked (score, SAE, latent, position), each with its values on every token."""
    values: dict[tuple[int, int], np.ndarray] = {}
    for index, name in enumerate(names):
        latents = sorted({latent for _, sae, latent, _ in ranked if sae == index})
        if latents:
            columns = encoded.acts[name].columns(latents)
            values |= {(index, latent): columns[:, column] for column, latent in enumerate(latents)}
    hits = []
    for score, sae, latent, position in ranked:
        column = values[(sae, latent)]
        peak = int(positions[column[positions].argmax()])
        hits.append(
            TextHit(
                sae=names[sae],
                latent=latent,
                score=score,
                max_act=float(column[peak]),
                peak=peak,
                values=column.tolist(),
                position=position,
            )
        )
    return hits


def search_text(
    live: LiveModel,
    text: str,
    *,
    token_positions: list[int] | None = None,
    ignore_bos: bool = True,
    per_token: bool = False,
    top_n: int = 20,
    max_density: float | None = None,
    densities: Mapping[str, np.ndarray] | None = None,
    saes: list[str] | None = None,
) -> list[TextHit]:
    """The latents of the named SAEs (default: all loaded) most active on ``text``.

    Summed over ``token_positions`` (default: every token but BOS), best ``top_n`` across the
    SAEs; or with ``per_token``, the best ``top_n`` at each position, position by position.
    ``densities`` (per SAE name, indexed by latent: the atlas's density column) with
    ``max_density`` leave out latents that fire on more than that fraction of tokens: dense
    latents top every sum without saying anything about this text.
    """
    if isinstance(top_n, bool) or not isinstance(top_n, Integral) or not 1 <= top_n <= MAX_TOP_N:
        raise LiveInputError(f"the number of results must be a whole number from 1 to {MAX_TOP_N}, not {top_n!r}")
    top_n = int(top_n)
    names = [s.name for s in _chosen_saes(live, saes)]
    allowed = _allowed_latents(live, names, max_density, densities)
    encoded = encode_text(live, text, names)
    positions = _positions(encoded, token_positions, ignore_bos)
    rank = _ranked_per_token if per_token else _ranked_summed
    return _hits(encoded, names, positions, rank(encoded, names, positions, allowed, top_n))
