"""``python -m analysis <subcommand>``: the one command-line entry point of SAEscope."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports torch only for the subcommand that needs it
    import duckdb

    from analysis.live_model import LiveModel

from analysis import preflight
from analysis.errors import SAEscopeError, UsageError
from analysis.paths import DEMO_ATLAS, DEMO_DIR, DEMO_MODEL, DEMO_SAES
from analysis.steering_methods import DEFAULT_METHOD, METHODS

VERBOSE_HELP = "log debug lines, and print tracebacks for errors in the input too"


def _run_demo(args: argparse.Namespace) -> int:
    from analysis.demo.build import STAGES, BundlePaths

    stages = args.stages.split(",")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    paths = BundlePaths(Path(args.out))
    with paths.build_lock():
        _run_stages(paths, stages, args.minutes, set(args.only.split(",")) if args.only else None)
    print(f"demo bundle stages {', '.join(stages)} written to {paths.root}")
    return 0


def _run_stages(paths, stages: list[str], minutes: float, only: set[str] | None) -> None:
    from analysis.demo.build import build_model, build_saes, build_tokenizer_and_streams, evaluate_bundle
    from analysis.demo.report import write_readme, write_sources

    if "tokenizer" in stages:
        build_tokenizer_and_streams(paths)
    if "model" in stages:
        build_model(paths, minutes=minutes)
    if "saes" in stages:
        build_saes(paths, only=only)
    if "report" in stages:
        evaluate_bundle(paths)
        metrics = paths.read_metrics()
        write_sources(metrics, paths.root / "SOURCES.md")
        write_readme(metrics, paths.root / "README.md")


def describe(model_spec: str, sae_specs: list[str], device: str | None, dtype: str = "float32") -> dict:
    """What a model spec and SAE specs resolve to, after checking that the SAEs fit the model."""
    from analysis.graphs import transcoder_sets
    from analysis.model_loading import load_model
    from analysis.sae_loading import check_fits, load_saes

    loaded = load_model(model_spec, device=device, dtype=dtype)
    cfg = loaded.model.cfg
    configs = {spec: transcoder_sets.config_folder(spec) for spec in sae_specs}
    saes = [sae for spec in sae_specs if configs[spec] is None for sae in load_saes(spec, device=loaded.device)]
    check_fits(loaded.model, saes)
    circuit = []
    for spec, folder in configs.items():
        if folder is not None:  # circuit-tracer's own transcoder set or CLT: described whole
            transcoders = transcoder_sets.load_transcoders(folder, loaded.device)
            transcoder_sets.check_transcoders_fit(transcoders, loaded.model)
            circuit.append(transcoder_sets.describe(transcoders, spec))
    return {
        "model": {
            "spec": model_spec,
            "path": str(loaded.path),
            "architecture": loaded.architecture,
            "n_layers": cfg.n_layers,
            "d_model": cfg.d_model,
            "n_heads": cfg.n_heads,
            "d_vocab": cfg.d_vocab,
            "n_ctx": cfg.n_ctx,
            "device": loaded.device,
            "dtype": str(cfg.dtype).removeprefix("torch."),
        },
        "saes": [
            {
                "name": sae.name,
                "spec": sae.spec,
                "architecture": sae.architecture,
                "kind": "transcoder" if sae.is_transcoder else "sae",
                "hook": sae.hook_name,
                "hook_out": sae.hook_name_out,
                "d_in": sae.sae.cfg.d_in,
                "d_sae": sae.d_sae,
            }
            for sae in saes
        ]
        + circuit,
    }


def _sae_specs(args: argparse.Namespace) -> list[str]:
    """The SAEs asked for; without --sae, the demo's SAEs when the model is the demo model, else none."""
    return args.sae if args.sae is not None else ([str(DEMO_SAES)] if args.model == str(DEMO_MODEL) else [])


def _check_model_and_saes(args: argparse.Namespace) -> dict[str, int | None]:
    """--model and --sae checked without torch (the folders exist, cfg.json reads); the SAEs' latent counts."""
    preflight.model_folder(args.model)
    return preflight.sae_latents(_sae_specs(args))


def _announce_load(args: argparse.Namespace) -> None:
    """On a terminal, one line at once before the imports and the load (tens of seconds on a small
    CPU machine) so the command is not silent; not when stderr is a pipe or a file, where the only
    line on stderr stays the error, if any."""
    if sys.stderr.isatty():
        saes = _sae_specs(args)
        print(f"loading {args.model} with {len(saes)} SAE spec(s): torch, the weights…", file=sys.stderr, flush=True)


def _run_info(args: argparse.Namespace) -> int:
    _check_model_and_saes(args)
    _announce_load(args)
    info = describe(args.model, _sae_specs(args), args.device, args.dtype)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    model = info["model"]
    print(f"model   {model['spec']}")
    print(
        f"        {model['architecture']}, {model['n_layers']} layers, d_model {model['d_model']}, "
        f"{model['n_heads']} heads, vocab {model['d_vocab']}, context {model['n_ctx']}, device {model['device']}, {model['dtype']}"
    )
    for sae in info["saes"]:
        hook = f"{sae['hook']} -> {sae['hook_out']}" if sae["hook_out"] else sae["hook"]
        print(
            f"{sae['kind']:<11} {sae['name']}: {sae['architecture']}, hook {hook}, d_in {sae['d_in']}, d_sae {sae['d_sae']}"
        )
    return 0


def _run_precompute(args: argparse.Namespace) -> int:
    from analysis.atlas.run_config import PrecomputeConfig, PrecomputeError, check_config, parse_bytes, parse_shard

    config = PrecomputeConfig(
        model=args.model,
        saes=tuple(args.sae or [str(DEMO_SAES)]),
        corpus=args.corpus,
        tokens=args.tokens,
        out=Path(args.out),
        context=args.context,
        top_k=args.top_k,
        seed=args.seed,
        batch_windows=args.batch,
        device=args.device,
        dtype=args.dtype,
        shard=parse_shard(args.shard),
        latent_shard=parse_shard(args.latent_shard, "--latent-shard"),
        max_worker_bytes=None if args.max_worker_memory is None else parse_bytes(args.max_worker_memory),
        checkpoint_seconds=args.checkpoint_minutes * 60,
        overwrite=args.overwrite,
        resume=args.resume,
        strict=args.strict,
        exact_neighbours_up_to=args.exact_neighbours_up_to,
    )
    check_config(config)  # before torch is imported: a typo costs a second
    if args.latent_shards != 1 and args.ray is None:
        raise PrecomputeError("--latent-shards plans latent ranges for --ray; without it give --latent-shard j/m")
    preflight.model_folder(config.model)
    preflight.sae_latents(list(config.saes))
    if args.ray is not None:
        return _run_precompute_on_ray(config, args)
    from analysis.atlas.precompute import run_precompute

    summary = run_precompute(config)
    print(
        f"atlas {summary['atlas']}: {summary['tokens']:,} tokens, {summary['saes']} SAEs, "
        f"{summary['features']:,} features, {summary['size_mb']} MB, {summary['seconds']} s "
        f"(streaming pass {summary['pass_seconds']} s)"
    )
    return 0


def _run_precompute_on_ray(config, args: argparse.Namespace) -> int:
    from analysis.atlas.ray_precompute import RaySettings, run_on_ray

    settings = RaySettings(
        address=args.ray, workers=args.ray_workers, threads=args.ray_threads, latent_shards=args.latent_shards
    )
    summary = run_on_ray(config, settings)
    where = f"{summary['gpus']} GPUs" if summary["gpus"] else f"{summary['workers']} CPU workers"
    ranges = f" × {summary['latent_shards']} latent ranges" if summary["latent_shards"] > 1 else ""
    memory = f" (worker memory ≈ {summary['worker_mb']} MiB)" if summary["worker_mb"] is not None else ""
    print(
        f"atlas {summary['atlas']}: {summary['tokens']:,} tokens in {summary['shards']} shards{ranges} on {where}, "
        f"{summary['seconds']} s{memory}"
    )
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    preflight.output_file(Path(args.out), overwrite=args.overwrite)
    preflight.duckdb_files(args.partials)
    from analysis.atlas.merge import merge_atlases

    summary = merge_atlases(
        [Path(p) for p in args.partials], Path(args.out), overwrite=args.overwrite, allow_partial=args.allow_partial
    )
    print(
        f"merged {summary['partials']} partial atlases (shards {summary['shards']}) into {summary['atlas']}: "
        f"{summary['tokens']:,} tokens, {summary['seconds']} s"
    )
    if summary["missing"]:
        print(f"windows missing (--allow-partial): {summary['missing']}")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    preflight.atlas_file(args.atlas)
    from analysis.atlas.verify import verify_atlas

    report = verify_atlas(Path(args.atlas), sample=args.sample, seed=args.seed, device=args.device)
    for line in report.lines:
        print(line)
    return 0 if report.ok else 1


def _run_steer(args: argparse.Namespace) -> int:
    from analysis.generation_settings import GenerationSettings
    from analysis.steering_target import SteeringTarget

    # Everything the user typed is checked before torch is imported, so a typo costs no waiting.
    preflight.text(args.prompt, "--prompt")
    latents = _check_model_and_saes(args)
    targets = [SteeringTarget.parse(text, require_coefficient=True) for text in args.feature]
    for target in targets:
        preflight.latent_in(target.sae, target.latent, latents)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        frequency_penalty=args.freq_penalty,
        seed=args.seed,
        use_kv_cache=not args.no_kv_cache,
    )
    context = preflight.model_context(args.model)
    if context is not None and args.max_new_tokens > context - 2:
        raise preflight.ArgumentError(
            f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in the model's {context}-token "
            f"context; at most {context - 2}"
        )
    _announce_load(args)
    from analysis.divergence import generated_token
    from analysis.live_model import LiveSpecs, load_live
    from analysis.steering import steer

    live = load_live(LiveSpecs(model=args.model, saes=tuple(_sae_specs(args))), device=args.device, dtype=args.dtype)
    result = steer(live, args.prompt, targets, args.method, settings)
    if args.json:
        print(json.dumps(result.to_record(), indent=2))
        return 0
    if result.prompt_cut:
        print(f"(prompt cut: its first {result.prompt_cut} tokens did not fit the context)")
    cut = len(result.default_ids) if result.divergence is None else result.divergence
    same = "".join(result.default_tokens[:cut])
    print(f"default  {same}{'|' if result.divergence is not None else ''}{''.join(result.default_tokens[cut:])}")
    print(f"steered  {same}{'|' if result.divergence is not None else ''}{''.join(result.steered_tokens[cut:])}")
    if result.divergence is None:
        print("the completions are identical")
        return 0
    print(
        f"first difference at {generated_token(result.divergence)} of {len(result.default_ids)} "
        "(counting from 1; marked |); next-token probabilities there:"
    )
    for option in result.next_tokens:
        print(f"  {option.text!r:<16} default {option.p_default:6.3f}  steered {option.p_steered:6.3f}")
    return 0


def _parse_positions(text: str) -> list[int]:
    """``--positions 3,4`` as a list of token positions."""
    try:
        positions = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--positions must be token positions separated by commas, like 3,4; not {text!r}") from None
    if min(positions) < 0:
        raise UsageError(f"--positions are counted from 0 (BOS); not {text!r}")
    return positions


def _search_report(
    live: LiveModel,
    atlas: duckdb.DuckDBPyConnection,
    text: str,
    positions: list[int] | None,
    per_token: bool,
    top: int,
    max_density: float | None,
    include_bos: bool,
) -> dict:
    """What ``search-text`` shows: the text's tokens as the model saw them and each hit with the
    atlas's automatic label (None for an SAE the atlas does not have)."""
    from analysis.atlas.reader import feature_labels, latent_densities
    from analysis.text_activations import search_text

    densities = latent_densities(atlas, live.saes)
    if max_density is None:  # the dashboard's limit, where the atlas knows every SAE's densities
        lacking = [name for name in live.saes if name not in densities]
        max_density = None if lacking else preflight.DEFAULT_MAX_DENSITY
        if lacking:
            logging.getLogger(__name__).warning(
                "not filtered by density: the atlas has no densities for %s", ", ".join(lacking)
            )
    hits = search_text(
        live,
        text,
        token_positions=positions,
        ignore_bos=not include_bos,
        per_token=per_token,
        top_n=top,
        max_density=max_density,
        densities=densities,
    )
    labels = feature_labels(atlas, [(hit.sae, hit.latent) for hit in hits])
    ids, cut = live.tokenize(text)
    return {
        "tokens": live.token_strings(ids[0]),
        "cut": cut,
        "max_density": max_density,
        "hits": [asdict(hit) | {"label": labels.get((hit.sae, hit.latent))} for hit in hits],
    }


def _print_search(report: dict) -> None:
    tokens = report["tokens"]
    if report["cut"]:
        print(f"(the first {report['cut']} tokens were cut to fit the model's context)")
    if report["max_density"] is not None and report["max_density"] < 1:
        print(f"(latents firing on more than {report['max_density']:g} of the atlas's tokens left out)")
    if not report["hits"]:
        print("no latent fires on the searched tokens")
        return
    per_token = report["hits"][0]["position"] is not None
    print(
        ("at token             " if per_token else "")
        + f"{'sae':<16} {'latent':>7} {'score':>9} {'max':>8}  {'peak token':<20} label"
    )
    for hit in report["hits"]:
        at = f"{hit['position']} {tokens[hit['position']]!r}" if per_token else ""
        peak = f"{hit['peak']} {tokens[hit['peak']]!r}"
        print(
            (f"{at:<20} " if per_token else "")
            + f"{hit['sae']:<16} {hit['latent']:>7} {hit['score']:>9.3f} {hit['max_act']:>8.3f}  {peak:<20} "
            + (hit["label"] or "")
        )


def _run_search_text(args: argparse.Namespace) -> int:
    preflight.text(args.text, "--text")
    positions = _parse_positions(args.positions) if args.positions else None
    _check_model_and_saes(args)
    _announce_load(args)
    from analysis.atlas.reader import open_atlas

    atlas = open_atlas(args.atlas)
    try:
        from analysis.live_model import LiveSpecs, load_live

        live = load_live(
            LiveSpecs(model=args.model, saes=tuple(_sae_specs(args))), device=args.device, dtype=args.dtype
        )
        report = _search_report(
            live, atlas, args.text, positions, args.per_token, args.top, args.max_density, args.include_bos
        )
    finally:
        atlas.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_search(report)
    return 0


def _run_graph(args: argparse.Namespace) -> int:
    preflight.output_file(Path(args.out), overwrite=True)  # before the graph is computed, not after
    preflight.text(args.prompt, "--prompt")
    for flag, value in (("--target", args.target), ("--versus", args.versus)):
        if value is not None and not value:
            raise preflight.ArgumentError(f"{flag} is empty: give a token")
    if args.versus is not None and args.target is None:
        raise preflight.ArgumentError("--versus needs --target: it explains logit(target) - logit(versus)")
    _check_model_and_saes(args)
    if args.atlas:
        preflight.atlas_file(args.atlas)
    _announce_load(args)
    import networkx as nx

    from analysis.graphs import GraphSettings, GraphTarget, compute_graph, to_networkx
    from analysis.live_model import LiveSpecs, load_live

    is_demo = args.model == str(DEMO_MODEL)
    live = load_live(LiveSpecs(model=args.model, saes=tuple(_sae_specs(args))), device=args.device, dtype=args.dtype)
    given = {"max_feature_nodes": args.max_feature_nodes, "batch_size": args.batch_size, "max_tokens": args.max_tokens}
    settings = GraphSettings(**{name: value for name, value in given.items() if value is not None})
    if settings.max_feature_nodes == 0:
        settings = replace(settings, max_feature_nodes=None)
    result = compute_graph(live, args.prompt, GraphTarget(token=args.target, versus=args.versus), settings)
    atlas = args.atlas or (DEMO_ATLAS if is_demo else None)
    network = to_networkx(result, args.node_threshold, args.edge_threshold, atlas=atlas)
    if args.neuronpedia:
        from analysis.graphs.neuronpedia import to_neuronpedia

        data = to_neuronpedia(
            result, live.tokenizer, Path(args.out).stem, args.node_threshold, args.edge_threshold, atlas=atlas
        )
        Path(args.out).write_text(json.dumps(data))
        print(
            f"Neuronpedia graph of {len(result.tokens)} tokens: {len(data['nodes'])} nodes, "
            f"{len(data['links'])} links, {result.seconds:.1f} s -> {args.out}"
        )
    else:
        Path(args.out).write_text(json.dumps(nx.node_link_data(network, edges="links")))
        print(
            f"graph of {len(result.tokens)} tokens: {network.number_of_nodes()} nodes, {network.number_of_edges()} "
            f"edges, replacement {network.graph['replacement_score']:.3f}, completeness "
            f"{network.graph['completeness_score']:.3f}, {result.seconds:.1f} s -> {args.out}"
        )
    _print_graph_summary(network, args.top_features)
    return 0


def _print_graph_summary(network, top: int) -> None:
    """The logits the graph explains and its most influential features, as a table to read in a terminal."""
    nodes = [data for _, data in network.nodes(data=True)]
    logits = sorted((n for n in nodes if n["kind"] == "logit"), key=lambda n: -n["probability"])
    print("targets (token, probability):")
    for logit in logits:
        print(f"  {logit['token']!r:<20} {logit['probability']:.3f}")
    features = sorted((n for n in nodes if n["kind"] == "feature"), key=lambda n: n["influence"])[:top]
    if not features:
        print("no feature nodes survived pruning (try a higher --node-threshold)")
        return
    print(f"top {len(features)} features (influence: share of all influence held by nodes at least this influential;")
    print("smaller is more influential)")
    print(f"  {'layer':>5} {'latent':>7} {'at token':<16} {'influence':>9}  label")
    tokens = network.graph["tokens"]
    for node in features:
        at = f"{node['position']} {tokens[node['position']]!r}"
        label = "".join(c if c.isprintable() else repr(c)[1:-1] for c in node.get("label", ""))  # no terminal codes
        print(f"  {node['layer']:>5} {node['latent']:>7} {at:<16} {node['influence']:>9.3f}  {label}")


def _run_dashboard(args: argparse.Namespace) -> int:
    """Streamlit on the dashboard, from the checkout root so ``.streamlit/`` configures it; extra
    arguments go to ``streamlit run`` (``saescope dashboard --server.port 8600``).

    This process becomes Streamlit (exec), not its parent: a SIGTERM from a service manager, a
    container stop or ``kill`` then reaches the server itself. As a child it was left running,
    orphaned and holding its port, when only the parent got the signal."""
    import os

    from analysis.paths import DASHBOARD_HOME, REPO_ROOT, STREAMLIT_DIR
    from dashboard.shell.exposure import refusal_for_command

    if refusal := refusal_for_command(args.streamlit_args, STREAMLIT_DIR, os.environ):
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_HOME), *args.streamlit_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(REPO_ROOT)
    os.execv(sys.executable, command)


def _model_arguments(parser: argparse.ArgumentParser, sae_kind: str = "SAE") -> None:
    """--model, --sae, --device and --dtype, the same for every subcommand that loads a model."""
    parser.add_argument(
        "--model",
        type=preflight.spec,
        default=str(DEMO_MODEL),
        help="Hugging Face hub id or local folder (default: demo)",
    )
    parser.add_argument(
        "--sae", type=preflight.spec, action="append", help=f"{sae_kind} spec; repeat for several (default: the demo's)"
    )
    parser.add_argument(
        "--device", type=preflight.device, default=None, help="cpu, cuda, cuda:N (default: CUDA when available)"
    )
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="model weights (float32)"
    )


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (what was wrong, and where the help is), exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="saescope", description="SAEscope: model-side commands.")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="<subcommand>")

    demo = commands.add_parser(
        "demo",
        help="rebuild the demo bundle (corpus, tokenizer, model, SAEs, report)",
        description="Rebuild the offline demo bundle in data/demo/ stage by stage.",
    )
    demo.add_argument(
        "--stages", default="tokenizer,model,saes,report", help="comma-separated stages to run, in order (default: all)"
    )
    demo.add_argument(
        "--minutes",
        type=preflight.number(0, 1e6, low_open=True),
        default=40.0,
        help="wall-clock budget for training the model",
    )
    demo.add_argument("--only", help="with the saes stage: retrain only these SAEs (comma-separated names)")
    demo.add_argument("--out", default=str(DEMO_DIR), help="bundle folder (default: data/demo)")
    demo.set_defaults(handler=_run_demo)

    info = commands.add_parser(
        "info",
        help="print what a model spec and SAE specs resolve to",
        description="Load a model (hub id or local folder) and SAEs (sae-lens "
        "release/sae_id or local folders) and describe them.",
    )
    _model_arguments(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=_run_info)

    pre = commands.add_parser(
        "precompute",
        help="stream a corpus through a model and its SAEs into a DuckDB feature atlas",
        description="One pass over a corpus: per-latent statistics, top and interval examples, logit effects, "
        "neighbours and automatic labels for every latent of every SAE, written to a DuckDB atlas.",
    )
    _model_arguments(pre)
    pre.add_argument(
        "--corpus",
        default="demo",
        help="'demo', a folder of text files, a .jsonl file with a 'text' field, or a locally cached "
        "Hugging Face dataset name (default: demo)",
    )
    pre.add_argument(
        "--tokens", type=preflight.whole(1), required=True, help="how many tokens to process (whole windows; 1e6 works)"
    )
    pre.add_argument(
        "--context",
        type=preflight.whole(2),
        default=128,
        help="tokens per window, BOS included, at most the model's (default 128)",
    )
    pre.add_argument(
        "--top-k",
        type=preflight.whole(1, preflight.MAX_TOP_K),
        default=20,
        help=f"top examples kept per latent (1 to {preflight.MAX_TOP_K}, default 20)",
    )
    pre.add_argument(
        "--seed", type=preflight.whole(0, 2**31), default=0, help="seed of the interval samples (default 0)"
    )
    pre.add_argument(
        "--batch", type=preflight.whole(1), default=128, help="windows per batch (halved on out-of-memory)"
    )
    pre.add_argument("--shard", default="0/1", help="process slice i of n of the windows (partial atlas)")
    pre.add_argument(
        "--latent-shard", default="0/1", help="keep and encode latent range j of m of every SAE (partial atlas)"
    )
    pre.add_argument(
        "--max-worker-memory",
        metavar="SIZE",
        help="refuse a run whose estimated worker memory (printed at start) is over SIZE (512MiB, 8GiB)",
    )
    pre.add_argument(
        "--checkpoint-minutes", type=preflight.number(0, 1e6), default=5.0, help="minutes between checkpoints"
    )
    pre.add_argument("--strict", action="store_true", help="refuse a corpus with bytes that are not UTF-8")
    pre.add_argument(
        "--exact-neighbours-up-to",
        type=preflight.whole(0),
        default=preflight.EXACT_NEIGHBOURS_UP_TO,
        metavar="LATENTS",
        help="exact nearest neighbours for runs of at most this many latents, faiss's approximate index above "
        f"(default {preflight.EXACT_NEIGHBOURS_UP_TO:,}; docs/PERFORMANCE.md)",
    )
    pre.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this run")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing atlas at --out")
    pre.add_argument("--out", required=True, help="atlas file to write (.duckdb)")
    pre.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the shards as Ray tasks on the cluster at ADDRESS ('auto', 'ray://host:10001'), or on a local "
        "Ray without one; partials go to OUT.parts/ (shared by all nodes), merged into OUT",
    )
    pre.add_argument("--ray-workers", type=int, help="local Ray: shards at once (default: CPUs / --ray-threads)")
    pre.add_argument("--ray-threads", type=int, default=1, help="on CPUs: CPUs and torch threads per shard (1)")
    pre.add_argument(
        "--latent-shards", type=int, default=1, help="--ray: cut each shard into this many latent ranges (memory)"
    )
    pre.set_defaults(handler=_run_precompute)

    search = commands.add_parser(
        "search-text",
        help="the latents a text excites most, across the loaded SAEs (search via inference)",
        description="Run a text through the model and every SAE; list the latents most active on it, summed over "
        "the chosen tokens or token by token, with the atlas's automatic labels.",
    )
    search.add_argument("--text", required=True, help="the text to search with")
    search.add_argument(
        "--positions", help="token positions to sum over, comma-separated (0 is BOS; default: all but BOS)"
    )
    search.add_argument("--per-token", action="store_true", help="the top latents of each position instead of a sum")
    search.add_argument(
        "--include-bos",
        action="store_true",
        help="search BOS too (ignored by default: it excites latents whatever the text)",
    )
    search.add_argument(
        "--top",
        type=preflight.whole(1, 1000),
        default=20,
        help="how many latents (per position with --per-token; 1 to 1000, default 20)",
    )
    search.add_argument(
        "--max-density",
        type=preflight.number(0, 1),
        help="leave out latents firing on more than this fraction of the atlas's tokens (default "
        f"{preflight.DEFAULT_MAX_DENSITY:g}, as the dashboard, where --atlas has every SAE; 1 keeps every latent)",
    )
    search.add_argument(
        "--atlas",
        default=str(DEMO_ATLAS),
        help="atlas for labels and densities, matched by SAE name (default: the demo atlas)",
    )
    _model_arguments(search)
    search.add_argument("--json", action="store_true", help="print JSON (with every hit's value on every token)")
    search.set_defaults(handler=_run_search_text)

    merge = commands.add_parser(
        "merge",
        help="combine partial atlases from --shard runs into one atlas",
        description="Merge partial atlases of one run (same model, SAEs, corpus, settings).",
    )
    merge.add_argument("partials", nargs="+", help="partial atlas files")
    merge.add_argument("--out", required=True, help="merged atlas file to write")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing atlas at --out")
    merge.add_argument(
        "--allow-partial",
        action="store_true",
        help="merge even if windows are missing; the atlas records its coverage (shown on Home)",
    )
    merge.set_defaults(handler=_run_merge)

    verify = commands.add_parser(
        "verify",
        help="re-check an atlas against its recorded model, SAEs and corpus",
        description="Check an atlas's internal consistency, that its recorded model, SAEs and corpus still have "
        "the recorded content, and recompute a sample of latents from them, comparing exactly. "
        "Exit code 0 when everything matches, 1 naming what differs.",
    )
    verify.add_argument("atlas", help="atlas file (.duckdb)")
    verify.add_argument(
        "--sample", type=preflight.whole(0, 100_000), default=64, help="latents to recompute (default 64; 0: none)"
    )
    verify.add_argument("--seed", type=preflight.whole(0, 2**31), default=0, help="which latents are sampled")
    verify.add_argument(
        "--device", type=preflight.device, default=None, help="default: the device the atlas was built on"
    )
    verify.set_defaults(handler=_run_verify)

    st = commands.add_parser(
        "steer",
        help="complete a prompt with and without features turned up or down, and compare",
        description="Generate a default and a steered completion of the same prompt with the same seed; the "
        "steering acts where each feature's SAE writes, on every position.",
    )
    st.add_argument("--prompt", required=True, help="text to complete (cut from the left if it does not fit)")
    st.add_argument(
        "--feature",
        action="append",
        required=True,
        metavar="SAE:LATENT:COEF",
        help="a feature to steer and its coefficient, e.g. resid-L2:17:40; repeat for several",
    )
    st.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=list(METHODS),
        help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()) + f" (default {DEFAULT_METHOD})",
    )
    st.add_argument("--max-new-tokens", type=preflight.count, default=64, help="tokens to generate (default 64)")
    st.add_argument("--temperature", type=preflight.number(0, 1e6), default=0.5, help="0 is greedy (default 0.5)")
    st.add_argument(
        "--top-p", type=preflight.number(0, 1, low_open=True), default=1.0, help="nucleus sampling mass (default 1.0)"
    )
    st.add_argument(
        "--freq-penalty", type=preflight.number(-2, 2), default=1.0, help="OpenAI-style frequency penalty (default 1.0)"
    )
    st.add_argument(
        "--seed", type=preflight.whole(0, 2**63 - 1), default=16, help="seed of both completions (default 16)"
    )
    st.add_argument("--no-kv-cache", action="store_true", help="recompute the whole sequence every step")
    _model_arguments(st)
    st.add_argument("--json", action="store_true", help="print the full record as JSON")
    st.set_defaults(handler=_run_steer)

    graph = commands.add_parser(
        "graph",
        help="compute an attribution graph with circuit-tracer and write it as node-link JSON",
        description="Attribution graph of a prompt through the model's per-layer transcoders (circuit-tracer), "
        "pruned, scored and labelled from the atlas; written as networkx node-link JSON.",
    )
    graph.add_argument("--prompt", required=True, help="the text to explain (at most --max-tokens tokens)")
    graph.add_argument("--out", required=True, help="JSON file to write")
    _model_arguments(graph, "transcoder")
    graph.add_argument("--atlas", help="atlas to label features from (default: the demo atlas for the demo model)")
    graph.add_argument("--target", help="explain this token's logit (default: the top tokens up to 95%% probability)")
    graph.add_argument("--versus", help="with --target: explain logit(target) - logit(versus)")
    graph.add_argument(
        "--node-threshold",
        type=preflight.number(0, 1, low_open=True),
        default=0.8,
        help="share of influence kept in nodes (0.8)",
    )
    graph.add_argument(
        "--edge-threshold",
        type=preflight.number(0, 1, low_open=True),
        default=0.98,
        help="share of influence kept in edges (0.98)",
    )
    graph.add_argument(
        "--max-feature-nodes",
        type=preflight.whole(0),
        help="features attributed, most influential first; 0 = all (default: GraphSettings)",
    )
    graph.add_argument("--batch-size", type=preflight.whole(1), help="nodes per backward pass (default: GraphSettings)")
    graph.add_argument("--max-tokens", type=preflight.whole(1), help="longer prompts are refused (default 64)")
    graph.add_argument(
        "--top-features", type=preflight.whole(0, 1000), default=10, help="features listed after the run (10)"
    )
    graph.add_argument(
        "--neuronpedia",
        action="store_true",
        help="write Neuronpedia graph JSON (slug = the file's name) instead of node-link JSON",
    )
    graph.set_defaults(handler=_run_graph)

    dashboard = commands.add_parser(
        "dashboard",
        help="open the dashboard (Streamlit) on the demo atlas and any in SAESCOPE_ATLAS_DIR",
        description="Start the Streamlit dashboard; other arguments go to `streamlit run`, e.g. --server.port 8600.",
        usage="saescope dashboard [-h] [--verbose] [STREAMLIT RUN OPTIONS ...]",
    )
    dashboard.set_defaults(handler=_run_dashboard)

    from analysis.users import add_users_command

    add_users_command(commands)
    from analysis.governance.evidence_cli import add_evidence_command

    add_evidence_command(commands, VERBOSE_HELP)
    from analysis.governance.detector_cli import add_detector_command

    add_detector_command(commands)
    from analysis.governance.watch_cli import add_watch_command

    add_watch_command(commands)
    for subcommand in commands.choices.values():  # also after the subcommand; SUPPRESS keeps one given before
        subcommand.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, like logging's last-resort handler, so a
    handler set up by one ``main()`` call never writes to a stream that has since been replaced."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbose: bool) -> None:
    """SAEscope's own log lines (progress, what was loaded) to stderr, plain, from INFO up; with
    ``--verbose`` from DEBUG up and with their source. stdout is left to the results a command prints.
    Libraries keep Python's default (their warnings only), so ``--verbose`` is not a flood of torch."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    logger = logging.getLogger("analysis")  # the dashboard runs in its own process (streamlit), not this one
    logger.handlers = [handler]  # replaced, not added to: main() may run more than once in a process
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False  # a library that configures the root logger must not print each line twice


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. The project's own errors (``SAEscopeError``: bad input, unusable files) are one
    line and exit code 2, their traceback only with ``--verbose``; anything else is a bug and keeps its traceback."""
    parser = build_parser()
    # `dashboard` passes what it does not know to `streamlit run` (argparse's REMAINDER would refuse
    # `--server.port 8600` as an unknown option of its own); every other subcommand refuses it.
    args, unknown = parser.parse_known_args(argv)
    if args.command == "dashboard":
        args.streamlit_args = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    configure_logging(args.verbose)
    try:
        return args.handler(args)
    except (SAEscopeError, argparse.ArgumentError) as error:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return 2
