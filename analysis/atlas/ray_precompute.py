"""``precompute --ray [ADDRESS]``: the shards of one precompute as Ray tasks, merged into one atlas.

Ray is the distributed engine: it places each shard on a GPU (one per task) or on CPUs, reruns a
task whose worker or node was lost, and carries the shards' progress to one bar on the driver. A
shard's work is the ordinary ``run_precompute`` with ``--shard i/n`` (and ``--latent-shard j/m`` with
``--latent-shards m``: each window shard cut into m latent ranges; checkpointing as usual, so a
rerun resumes where the lost attempt last checkpointed) and the atlas is the ordinary
``merge_atlases`` of the partials: a Ray run gives the single-pass atlas exactly.

Partial atlases and checkpoints live in ``<out>.parts/`` beside ``--out``; on a cluster that folder
must be on a file system every node sees. Without an address a local Ray is started, offline: no
dashboard, no usage statistics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from analysis.atlas.memory_estimate import WorkerMemory, check_budget, local_sae_shapes, worker_memory
from analysis.atlas.precompute import run_precompute
from analysis.atlas.run_config import PrecomputeConfig, PrecomputeError, check_config
from analysis.atlas.shard_plan import MAX_SHARD_WINDOWS, ShardPlan, plan_shards

log = logging.getLogger(__name__)
LOCAL = "local"
# Reruns of a shard whose worker died (killed, out of host memory, node lost) or that hit an OSError.
MAX_RETRIES = 3
# What identifies a run: a resumed --ray run must have these equal (batch and device do not change the atlas).
_RUN_FIELDS = ("model", "saes", "corpus", "tokens", "context", "top_k", "seed", "quality_windows")
Task = tuple[int, int]  # (window shard, latent range)


@dataclass(frozen=True)
class RaySettings:
    address: str = LOCAL  # "local" starts a Ray on this machine; else ray.init's address ("auto", "ray://host:10001")
    workers: int | None = None  # local Ray: shards run at once (default: the CPUs / threads)
    threads: int = 1  # on CPUs: the CPUs each shard asks for and the torch threads it uses
    latent_shards: int = 1  # latent ranges each window shard is cut into (--latent-shards)


class ProgressBoard:
    """Windows done per task as last reported (a rerun task reports again from its checkpoint);
    a Ray actor that every task reports to and the driver's bar reads."""

    def __init__(self) -> None:
        self.done: dict[Task, int] = {}

    def report(self, task: Task, done: int) -> None:
        self.done[task] = done

    def total(self) -> int:
        return sum(self.done.values())


def part_path(parts: Path, plan: ShardPlan, task: Task) -> Path:
    shard, latents = task
    name = f"shard-{shard:05d}-of-{plan.shards:05d}"
    if plan.latent_shards > 1:
        name += f"-latents-{latents:03d}-of-{plan.latent_shards:03d}"
    return parts / f"{name}.duckdb"


def run_shard(config: PrecomputeConfig, parts: Path, plan: ShardPlan, task: Task, threads: int, board) -> str:
    """One Ray task: the partial atlas of windows slice ``shard``/``shards`` (and latent range ``j/m``),
    resumed from its checkpoint if an earlier attempt left one; a partial already written
    (atomically) is kept as it is."""
    import torch

    out = part_path(parts, plan, task)
    if not out.exists():
        torch.set_num_threads(threads)
        shard_config = replace(
            config,
            shard=(task[0], plan.shards),
            latent_shard=(task[1], plan.latent_shards),
            out=out,
            resume=True,
            overwrite=False,
        )
        run_precompute(shard_config, on_progress=lambda done: board.report.remote(task, done))
    return str(out)


def _check(config: PrecomputeConfig, settings: RaySettings, parts: Path) -> None:
    """Everything the user typed that can be refused before a cluster starts."""
    if config.shard != (0, 1) or config.latent_shard != (0, 1):
        raise PrecomputeError("--ray plans its own shards; leave out --shard and --latent-shard (use --latent-shards)")
    if settings.threads < 1 or (settings.workers is not None and settings.workers < 1) or settings.latent_shards < 1:
        raise PrecomputeError("--ray-workers, --ray-threads and --latent-shards must be at least 1")
    if settings.workers is not None and settings.address != LOCAL:
        raise PrecomputeError("--ray-workers sizes a local Ray; a cluster's size is its own")
    check_config(config)  # the checks every precompute run passes (run_config.py)
    if parts.exists() and not (config.resume or config.overwrite):
        raise PrecomputeError(f"{parts} holds an unfinished --ray run; pass --resume to continue it or --overwrite")


def _total_windows(config: PrecomputeConfig) -> int:
    """The run's window count, as ``Precompute`` computes it (the tokenizer and corpus only, no model)."""
    from analysis.atlas.corpus_source import load_corpus
    from analysis.model_loading import load_tokenizer

    corpus = load_corpus(
        config.corpus, load_tokenizer(config.model), max_tokens=config.stream_tokens, strict=config.strict
    )
    available = corpus.n_windows(config.context)
    if available == 0:
        raise PrecomputeError(f"corpus {config.corpus!r} has fewer tokens than one window of {config.context}")
    return min(available, math.ceil(config.tokens / config.context))


def _memory(config: PrecomputeConfig, settings: RaySettings, total_windows: int) -> WorkerMemory | None:
    """A worker's estimate (the largest shard: one slot's share of the windows at most), printed and
    held to ``--max-worker-memory`` before a cluster starts; None where an SAE is a release (each
    worker then checks once it has loaded it)."""
    shapes = local_sae_shapes(config.saes, (0, settings.latent_shards))
    if shapes is None:
        return None
    small = [shape for shape in shapes if shape.held == 0]
    if small:
        raise PrecomputeError(
            f"--latent-shards {settings.latent_shards}: an SAE has only {small[0].d_sae} latents, fewer than the "
            "latent ranges"
        )
    memory = worker_memory(
        shapes,
        config.top_k,
        config.context,
        config.batch_windows,
        min(total_windows, MAX_SHARD_WINDOWS),
        settings.latent_shards,
    )
    check_budget(memory, config.max_worker_bytes)
    log.info("%s", memory.line())
    return memory


def _start_ray(settings: RaySettings):
    try:
        import ray
    except ImportError:
        raise PrecomputeError("--ray needs Ray: pip install 'saescope[scale]' (or -r requirements.txt)") from None
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # offline: nothing is reported home
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}
    if settings.address == LOCAL:
        # Ray starts workers at nice 15 to keep its own daemons responsive; here the workers are the
        # job, and at 15 they lose the CPU to anything else on the machine (a plain run would not).
        os.environ.setdefault("RAY_worker_niceness", "0")
        cpus = settings.workers * settings.threads if settings.workers else os.cpu_count() or 1
        ray.init(num_cpus=cpus, num_gpus=None, **common)
    else:
        try:
            ray.init(address=settings.address, **common)
        except ConnectionError as error:
            raise PrecomputeError(f"no Ray cluster at {settings.address!r}: {error}") from None
    return ray


def _plan(config: PrecomputeConfig, parts: Path, total_windows: int, slots: int, latent_shards: int) -> ShardPlan:
    """The shard plan, kept in ``parts/plan.json``: a resumed run keeps its shards whatever the cluster."""
    run = {k: v for k, v in asdict(config).items() if k in _RUN_FIELDS}
    plan_file = parts / "plan.json"
    if config.resume and plan_file.exists():
        saved = json.loads(plan_file.read_text())
        if saved["run"] != json.loads(json.dumps(run)):
            raise PrecomputeError(f"{parts} belongs to a run with other inputs; pass --overwrite to start over")
        return ShardPlan(total_windows, saved["shards"], slots, saved.get("latent_shards", 1))
    if parts.exists():
        shutil.rmtree(parts)
    parts.mkdir()
    plan = plan_shards(total_windows, slots, latent_shards)
    plan_file.write_text(json.dumps({"run": run, "shards": plan.shards, "latent_shards": plan.latent_shards}))
    return plan


def _wait(ray, refs: dict, board, plan: ShardPlan, context: int, slots: int, gpus: int) -> None:
    """Wait for every shard with one progress bar (tokens, rate, ETA) over the whole cluster."""
    where = f"{gpus} GPUs" if gpus else f"{slots} CPU workers"
    ranges = f" × {plan.latent_shards} latent ranges" if plan.latent_shards > 1 else ""
    pending = list(refs)
    with tqdm(  # tokens of every latent range: each range's pass reads every token
        total=plan.total_windows * context * plan.latent_shards,
        unit="tok",
        unit_scale=True,
        desc=f"precompute on Ray ({where}, {plan.shards} shards{ranges})",
        smoothing=0.1,
    ) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5, fetch_local=False)
            for ref in done:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as error:
                    cause = getattr(error, "cause", None) or error
                    shard, latents = refs[ref]
                    which = f" latent range {latents}/{plan.latent_shards}" if plan.latent_shards > 1 else ""
                    raise PrecomputeError(f"shard {shard}/{plan.shards}{which} failed: {cause}") from None
            tokens = ray.get(board.total.remote()) * context
            if tokens >= bar.n:
                bar.update(tokens - bar.n)
            else:  # a rerun shard starts again from its checkpoint
                bar.n = tokens
                bar.refresh()


def run_on_ray(config: PrecomputeConfig, settings: RaySettings) -> dict:
    """Plan the shards, run them on Ray, merge the partials into ``config.out``; returns the summary."""
    from analysis.atlas.merge import merge_atlases

    started = time.monotonic()
    parts = config.out.with_name(config.out.name + ".parts")
    _check(config, settings, parts)
    total_windows = _total_windows(config)
    memory = _memory(config, settings, total_windows)
    ray = _start_ray(settings)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        slots = gpus or max(1, int(ray.cluster_resources().get("CPU", 1)) // settings.threads)
        plan = _plan(config, parts, total_windows, slots, settings.latent_shards)
        board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
        task = ray.remote(run_shard).options(
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else settings.threads,
            max_retries=MAX_RETRIES,
            retry_exceptions=[OSError],
        )
        refs = {task.remote(config, parts, plan, t, settings.threads, board): t for t in plan.tasks()}
        _wait(ray, refs, board, plan, config.context, slots, gpus)
    finally:
        ray.shutdown()
    partials = [part_path(parts, plan, t) for t in plan.tasks()]
    if len(partials) == 1:  # shard 0/1 is the whole run: its partial is the atlas
        os.replace(partials[0], config.out)
    else:
        merge_atlases(partials, config.out, overwrite=config.overwrite)
    shutil.rmtree(parts)
    meta = _meta(config.out)
    return {
        "atlas": str(config.out),
        "tokens": meta["tokens"],
        "seconds": round(time.monotonic() - started, 1),
        "workers": slots,
        "gpus": gpus,
        "shards": plan.shards,
        "latent_shards": plan.latent_shards,
        "worker_mb": None if memory is None else round(memory.total / 2**20, 1),
    }


def _meta(path: Path) -> dict:
    from analysis.atlas.reader import open_atlas, read_meta

    connection = open_atlas(path)
    try:
        return read_meta(connection)
    finally:
        connection.close()
