"""``python -m analysis verify ATLAS``: confirm an atlas from nothing but the file and its recorded inputs.

Three checks, cheapest first. Consistency: every latent's histograms and interval counts sum to its
firing count, its top example holds its max, and the L0 distribution agrees with the firing counts.
Provenance: the recorded model, SAEs and corpus still have the recorded content hashes. Recomputation:
a sample of latents is recomputed over the atlas's windows, in the batches the pass used, and its
running statistics (counts, sum, max, histograms, top windows and their activations, interval samples),
logit effects and neighbours are compared exactly with what the atlas stores. Exactness is possible
because the atlas stores its running state exactly (``store.read_partial`` reads it back) and every
step is deterministic on the device the atlas was built on; ``feature_stats.block_salt`` lets a latent
be recomputed alone and still draw the same interval samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import torch

from analysis.atlas.corpus_source import load_corpus
from analysis.atlas.feature_stats import FeatureStats, block_salt
from analysis.atlas.merge import stored_weight_tables, window_ranges
from analysis.atlas.partial import read_partial
from analysis.atlas.reader import open_atlas, read_meta
from analysis.atlas.run_config import PrecomputeConfig
from analysis.paths import REPO_ROOT


def _true_cosines(directions: list[torch.Tensor | None], sae: int, latent: int, near: dict) -> bool:
    """Whether an approximate (faiss) atlas's neighbours of one latent are real: other latents, best
    first, with the decoder cosine each row states. Which latents an approximate index finds depends
    on its training; that they are what they say does not (their recall is in ``meta.neighbours``)."""
    row = torch.nn.functional.normalize(directions[sae][latent].float(), dim=0)  # pyright: ignore[reportOptionalSubscript]
    for scope, (owners, latents, cosines) in near.items():
        others = torch.stack(
            [directions[o][j].float() for o, j in zip(owners[latent], latents[latent])]  # pyright: ignore[reportOptionalSubscript]
        )
        true = torch.nn.functional.normalize(others, dim=1) @ row
        itself = scope == "same" and bool((np.asarray(latents[latent]) == latent).any())
        if (
            itself
            or not np.allclose(true.cpu().numpy(), cosines[latent], atol=1e-5)
            or (np.diff(cosines[latent]) > 0).any()
        ):
            return False
    return True


DEFAULT_BATCH = PrecomputeConfig.batch_windows
MAX_LISTED = 5  # differences named per check; the rest are counted
_STAT_FIELDS = (
    "fire_count",
    "act_sum",
    "max_act",
    "range_exp",
    "hist",
    "log_hist",
    "interval_count",
    "top_value",
    "top_window",
    "top_position",
    "top_acts",
    "sample_key",
    "sample_token",
    "sample_value",
    "sample_acts",
)
# (what is checked, SQL giving (sae name, latent) of every latent that fails it)
_CONSISTENCY = (
    ("hist sums to fire_count", "list_sum(hist::BIGINT[]) <> fire_count"),
    ("log_hist sums to fire_count", "list_sum(log_hist::BIGINT[]) <> fire_count"),
    ("interval_count sums to fire_count", "list_sum(interval_count::BIGINT[]) <> fire_count"),
    ("max_act is 0 exactly when fire_count is", "(fire_count = 0) <> (max_act = 0)"),
)


@dataclass
class VerifyReport:
    """What ``verify`` prints: one line per check, and whether everything matched."""

    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def fail(self, what: str, differing: list[str]) -> None:
        self.ok = False
        listed = ", ".join(differing[:MAX_LISTED]) + (
            f" and {len(differing) - MAX_LISTED} more" if len(differing) > MAX_LISTED else ""
        )
        self.lines.append(f"DIFFERS {what}: {listed}")


def _consistency(connection: duckdb.DuckDBPyConnection, report: VerifyReport) -> None:
    for what, condition in _CONSISTENCY:
        rows = connection.execute(
            f"SELECT s.name, f.latent FROM features f JOIN saes s USING (sae) WHERE {condition} ORDER BY f.sae, f.latent"
        ).fetchall()
        if rows:
            report.fail(what, [f"{name}:{latent}" for name, latent in rows])
    rows = connection.execute(
        "SELECT s.name, f.latent FROM features f JOIN saes s USING (sae) JOIN examples e USING (sae, latent) "
        "WHERE e.kind = 'top' AND e.rank = 0 AND e.value <> f.max_act ORDER BY f.sae, f.latent"
    ).fetchall()
    if rows:
        report.fail("the top example holds max_act", [f"{name}:{latent}" for name, latent in rows])
    rows = connection.execute(
        "SELECT s.name FROM saes s JOIN (SELECT sae, sum(fire_count) AS fired FROM features GROUP BY sae) f USING (sae) "
        "WHERE list_sum(s.l0_counts) <> s.tokens "
        "OR f.fired <> list_sum(list_transform(s.l0_counts, lambda n, i: n * (i - 1))) ORDER BY s.sae"
    ).fetchall()
    if rows:
        report.fail("l0_counts agree with tokens and fire_count", [name for (name,) in rows])
    if report.ok:
        (latents,) = connection.execute("SELECT count(*) FROM features").fetchall()[0]
        report.lines.append(f"ok consistency of all {latents:,} latents")


def _local(spec: str) -> str:
    """A recorded spec as loadable here: a path relative to the repository (the demo bundle) resolved."""
    path = REPO_ROOT / spec
    return str(path) if not Path(spec).is_absolute() and not Path(spec).exists() and path.exists() else spec


def _sampled(meta: dict, sample: int, seed: int) -> dict[int, list[int]]:
    """``sample`` latents drawn uniformly over all latents of all SAEs: {sae index: sorted latents}."""
    sizes = np.array([info["d_sae"] for info in meta["saes"]])
    chosen = np.random.default_rng(seed).choice(int(sizes.sum()), size=min(sample, int(sizes.sum())), replace=False)
    owners = np.searchsorted(np.cumsum(sizes), chosen, side="right")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    by_sae: dict[int, list[int]] = {}
    for owner, flat in sorted(zip(owners.tolist(), chosen.tolist())):
        by_sae.setdefault(owner, []).append(flat - int(starts[owner]))
    return by_sae


def _batches(meta: dict) -> list[np.ndarray]:
    """The window ids of every batch the pass processed, in the order it processed them."""
    batches = []
    spans = window_ranges(meta)
    plans = meta.get("batches") or [[] for _ in spans]  # an atlas from before batches were recorded: the default
    for (low, high), plan in zip(spans, plans):
        windows = np.arange(low, high)
        plan = plan or [[0, DEFAULT_BATCH]]
        ends = [start for start, _ in plan[1:]] + [len(windows)]
        for (start, size), end in zip(plan, ends):
            batches += [windows[first : min(first + size, end)] for first in range(start, end, size)]
    return batches


def verify_atlas(path: Path, sample: int = 64, seed: int = 0, device: str | None = None) -> VerifyReport:
    """Check ``path`` as the module docstring says; the report's lines name every difference."""
    report = VerifyReport()
    connection = open_atlas(path)
    try:
        meta = read_meta(connection)
        _consistency(connection, report)
    finally:
        connection.close()
    context = _Recomputation(meta, device or meta.get("device"), report)
    if not context.provenance_ok():
        return report
    if sample:
        context.compare(path, _sampled(meta, sample, seed))
    return report


class _Recomputation:
    """The recorded model, SAEs and corpus, loaded to recompute latents."""

    def __init__(self, meta: dict, device: str | None, report: VerifyReport) -> None:
        from analysis.content_hash import model_hash, sae_hash
        from analysis.model_loading import load_model, load_tokenizer
        from analysis.sae_loading import load_saes

        self.meta, self.report = meta, report
        self.loaded = load_model(_local(meta["model"]["spec"]), device=device)
        self.model = self.loaded.model
        by_name = {}
        for spec in dict.fromkeys(info["spec"] for info in meta["saes"]):
            by_name |= {s.name: s for s in load_saes(_local(spec), device=self.loaded.device)}
        missing = [info["name"] for info in meta["saes"] if info["name"] not in by_name]
        if missing:
            raise ValueError(f"the recorded SAE specs no longer hold SAEs named {missing}")
        self.saes = [by_name[info["name"]] for info in meta["saes"]]
        corpus = meta["corpus"]
        self.corpus = load_corpus(
            _local(corpus["spec"]),
            load_tokenizer(_local(meta["model"]["spec"])),
            max_tokens=meta["total_windows"] * (meta["context"] - 1),
        )
        self.hashes = {
            f"model {meta['model']['spec']}": (meta["model"]["content_hash"], model_hash(self.model)),
            f"corpus {corpus['spec']}": (corpus["content_hash"], self.corpus.content_hash),
        } | {f"SAE {info['name']}": (info["content_hash"], sae_hash(s)) for info, s in zip(meta["saes"], self.saes)}

    def provenance_ok(self) -> bool:
        differing = [what for what, (recorded, now) in self.hashes.items() if recorded != now]
        if differing:
            self.report.fail("content hashes (the inputs changed since the atlas was built)", differing)
            return False
        self.report.lines.append(f"ok provenance: {', '.join(self.hashes)} have the recorded content")
        return True

    @torch.no_grad()
    def compare(self, path: Path, sampled: dict[int, list[int]]) -> None:
        from analysis.atlas.precompute import sae_activations
        from analysis.atlas.weight_stats import logit_effects, nearest_latents, residual_directions

        meta, device = self.meta, self.loaded.device
        fresh = {
            (sae, latent): FeatureStats.empty(
                1, meta["top_k"], meta["context"], block_salt(meta["seed"] * 1000 + sae, latent), device
            )
            for sae, latents in sampled.items()
            for latent in latents
        }
        tokenizer = self.model.tokenizer
        assert tokenizer is not None  # the loader always gives the model its tokenizer
        bos_id = int(tokenizer.bos_token_id)  # pyright: ignore[reportArgumentType]
        special = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=device)
        hooks = sorted({s.hook_name for s in self.saes})  # the pass's forward, so activations are the same
        used = [self.saes[sae] for sae in sampled]
        batches = _batches(meta)
        for ids in batches:
            tokens = self.corpus.windows(ids, meta["context"], bos_id).to(device)
            counted, per_sae = sae_activations(self.model, used, hooks, tokens, special)
            window_ids = torch.from_numpy(ids).to(device)
            for sae, acts in zip(sampled, per_sae):
                for latent in sampled[sae]:
                    fresh[sae, latent].update(acts[:, :, latent : latent + 1].contiguous(), window_ids, counted)
        _, _, stored, _, _ = read_partial(path)
        stored = [stats.canonical() for stats in stored]
        differing = []
        for (sae, latent), stats in fresh.items():
            stats = stats.to("cpu").canonical()
            atlas = stored[sae]
            name = f"{meta['saes'][sae]['name']}:{latent}"
            differing += [
                f"{name} {field}"
                for field in _STAT_FIELDS
                if not torch.equal(getattr(stats, field)[0], getattr(atlas, field)[latent])
            ]
        differing += self._weights(path, sampled, residual_directions, logit_effects, nearest_latents)
        windows = sum(len(ids) for ids in batches)
        what = f"{len(fresh)} sampled latents recomputed over {windows:,} windows"
        if differing:
            self.report.fail(what, differing)
        else:
            self.report.lines.append(f"ok {what}: statistics, examples, logit effects and neighbours equal")

    def _weights(self, path, sampled, residual_directions, logit_effects, nearest_latents) -> list[str]:
        """Differences in the logit effects and neighbours of the sampled latents."""
        directions = [residual_directions(self.model, s) for s in self.saes]
        exact = self.meta.get("neighbours", {"method": "exact"})["method"] == "exact"  # older atlases: exact
        neighbours = (
            nearest_latents(directions) if exact and any(d is not None for d in directions) else [{} for _ in self.saes]
        )
        differing = []
        connection = open_atlas(path)
        try:
            for sae, latents in sampled.items():
                logits, near = stored_weight_tables(connection, sae, self.saes[sae].d_sae)
                fresh_logits = logit_effects(self.model, directions[sae]) if directions[sae] is not None else None
                name = self.meta["saes"][sae]["name"]
                for latent in latents:
                    if (logits is None) != (fresh_logits is None) or (
                        logits is not None
                        and not all(
                            np.array_equal(np.asarray(a)[latent], np.asarray(b)[latent].astype(np.asarray(a).dtype))
                            for a, b in zip(vars(logits).values(), vars(fresh_logits).values())
                        )
                    ):
                        differing.append(f"{name}:{latent} logit effects")
                    if (not exact and not _true_cosines(directions, sae, latent, near)) or (
                        exact
                        and any(
                            not np.array_equal(near[scope][i][latent], neighbours[sae][scope][i][latent])
                            for scope in near
                            for i in range(3)
                        )
                    ):
                        differing.append(f"{name}:{latent} neighbours")
        finally:
            connection.close()
        return differing
