# pyright: reportMissingImports=false, reportArgumentType=false
# (runs in SAEDashboard's own virtual environment, not the project's; see the docstring)
"""Run the reference tool SAEDashboard (PyPI ``sae-dashboard``) on our demo model + one SAE, offline.

Run it with the SAEDashboard venv's python, NOT the project's venv (see
``bench/requirements-saedashboard.txt``)::

    python3 -m venv /work/sdb-venv
    /work/sdb-venv/bin/pip install -r bench/requirements-saedashboard.txt
    /work/sdb-venv/bin/python bench/saedashboard_runner.py \\
        --model data/demo/model --sae data/demo/saes/resid-L2 \\
        --windows /tmp/windows.npy --latents 0-31 --out /tmp/sdb.json

    # helper: cut [8190] + 127 consecutive stream tokens into N windows (non-overlapping, from 0)
    /work/sdb-venv/bin/python bench/saedashboard_runner.py \\
        --make-windows data/demo/heldout_tokens.npy --n-windows 64 --windows /tmp/windows.npy

What runs
---------
* Model: our Hugging Face GPT-2 folder, converted with THIS venv's transformer-lens (2.17) by the
  same recipe as ``analysis/model_loading.py``: ``get_pretrained_model_config(<folder>)`` +
  ``get_pretrained_state_dict`` + ``load_and_process_state_dict`` with fold_ln=False,
  center_writing_weights=False, center_unembed=False, fold_value_biases=False,
  refactor_factored_attn_matrices=False. The class is sae-lens's ``HookedSAETransformer`` (a
  HookedTransformer subclass; what NeuronpediaRunner uses). ``--verify`` checks that
  ``blocks.L.hook_resid_pre`` equals the raw HF model's ``hidden_states[L]``.
* SAE: ``sae_lens.SAE.load_from_disk`` (sae-lens 6.54.12 here, the same version as the project's
  venv) -> ``JumpReLUSAE`` for architecture "jumprelu". Its encode is
  ``pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc; acts = relu(pre) * (pre > threshold)``;
  ``--verify`` checks this against the formula applied to the raw safetensors.
* Pipeline: SAEDashboard's own ``SaeVisRunner(SaeVisConfig).run(encoder, model, tokens)`` with the
  exact layout NeuronpediaRunner builds (sequences with ``buffer=None`` i.e. whole window as
  context, stack-all, compute_buffer=True; acts histogram; logits histogram; logits table;
  feature tables with 3 rows), and ``ignore_tokens`` = {bos, eos, pad} of the tokenizer (here
  {8190, 8191}) like NeuronpediaRunner. We bypass NeuronpediaRunner itself only because it insists
  on building tokens from a HF dataset through an ActivationsStore and on loading the model by
  official name; everything from the forward passes on is SAEDashboard's code.

Caveats of SAEDashboard's semantics (recorded in the output JSON's "notes" too)
-----------------------------------------------------------------------------
* ``SaeVisRunner.run`` calls ``encoder.fold_W_dec_norm()`` first (in place), so the activations it
  reports are ``act * ||W_dec[i]||``. Our resid-L2 SAE has unit-norm decoder rows (1 +- 2e-7), so
  this is a no-op up to float rounding; the per-latent ``w_dec_norm`` is written out anyway.
* Examples are PER TOKEN, not per window: the top group is ``torch.topk`` over the flattened
  [n_windows * seq] activation matrix (special tokens zeroed first), so one window can supply
  several of the 20 top examples. Ties: ``torch.topk`` gives no ordering guarantee among equal
  values (on CPU it is neither by window nor by position); in particular a latent with fewer than
  20 nonzero tokens gets zero-valued filler examples at arbitrary (often special-token) positions.
  The context shown with each example is the whole window (buffer=None) minus position 0: the
  stored ``token_ids`` / ``feat_acts`` lists start at position 1 (SAEDashboard drops the first
  column of its buffer index, which it keeps for a "previous token" loss computation).
* Interval ("quantile") groups: 10 equal-width bins of [0, max]; the bottom bin includes 0, so it
  is mostly filled with zero-activation tokens, special tokens included; 5 examples per bin are
  drawn with ``random.sample`` (python RNG seeded by SaeVisConfig.seed). Values inside the
  sequence lists are rounded to 4 decimals by SAEDashboard; the ``value`` we write is the exact
  float32 read from the same masked activation tensor at the selected (window, position).
  SAEDashboard keys interval groups by their title string, so bins with identical titles collapse:
  a dead latent (max 0) gets ONE interval [0, 0] instead of 10; empty bins have 0 examples.
* Density: SAEDashboard reports ``frac_nonzero`` only inside the activation-histogram title
  ("DENSITY = x.xxx%"), computed as (#tokens with masked act > 0) / (#ALL tokens, special tokens
  included in the denominator), rounded to 3 decimals of a percent. We write that as
  ``density_reported`` and also the exact non-special-token density
  ``density = n_nonzero / n_nonspecial_tokens`` where n_nonzero = sum of the histogram's bar heights
  (the histogram is over exactly the nonzero masked activations). ``feature_stats`` (SAEDashboard's
  FeatureStatistics) is computed on the UNMASKED activations (special tokens included, |act|>1e-6)
  and is written under ``unmasked_stats``.

Options set to keep it offline and deterministic
------------------------------------------------
* Env: HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1, HF_DATASETS_OFFLINE=1, HF_HUB_DISABLE_TELEMETRY=1,
  WANDB_MODE=disabled, WANDB_DISABLED=true, DO_NOT_TRACK=1, TOKENIZERS_PARALLELISM=false; every HF
  load uses ``local_files_only=True`` from the given folder. NeuronpediaRunner (which would fetch a
  dataset and the model by hub name, and init wandb) is not used.
* ``sys.modules['torchvision'] = sys.modules['torchaudio'] = None`` before any import: the PyPI
  wheels decode-clt pulls in are CUDA builds that crash at import next to the CPU torch, and
  transformers imports torchvision whenever it looks installed. With the modules set to None,
  ``importlib.util.find_spec`` reports them absent.
* ``SaeVisConfig(cache_dir=None)``: NeuronpediaRunner caches model activations on disk and REUSES
  any existing file by minibatch index, which would silently give stale activations for new
  windows; we keep everything in memory. ``verbose=False`` (no tqdm/rich output).
* ``SaeVisConfig(seed=--seed, default 0)``: SaeVisRunner seeds python ``random``, torch and numpy,
  which makes the interval sampling reproducible. ``torch.set_num_threads(--threads, default 1)``
  keeps CPU use modest and the float reductions' order fixed. Model/SAE in float32 on CPU, eval mode.
"""

from __future__ import annotations

import os
import sys

# Must happen before torch / transformers / sae_lens are imported (see docstring).
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
    "WANDB_DISABLED": "true",
    "WANDB_SILENT": "true",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[_key] = _value
for _broken in ("torchvision", "torchaudio"):
    if _broken not in sys.modules:
        sys.modules[_broken] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

BOS_ID = 8190
WINDOW_LEN = 128


def parse_latents(spec: str | None, d_sae: int) -> list[int]:
    """'all' / None, or a comma list of ids and inclusive ranges: '0,5,17' or '0-31,100'."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(range(d_sae))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    bad = [i for i in out if not 0 <= i < d_sae]
    if bad:
        raise SystemExit(f"latents out of range [0, {d_sae}): {bad[:10]}")
    if len(set(out)) != len(out):
        raise SystemExit("duplicate latent ids in --latents")
    return out


def make_windows(stream_path: str, n_windows: int, out_path: str, start: int = 0) -> None:
    stream = np.load(stream_path)
    body = WINDOW_LEN - 1
    need = start + n_windows * body
    if stream.shape[0] < need:
        raise SystemExit(f"stream has {stream.shape[0]} tokens, need {need}")
    chunks = stream[start:need].astype(np.int64).reshape(n_windows, body)
    windows = np.concatenate([np.full((n_windows, 1), BOS_ID, dtype=np.int64), chunks], axis=1)
    np.save(out_path, windows)
    print(f"wrote {out_path}: {windows.shape} {windows.dtype} (stream tokens {start}..{need - 1})")


def pkg_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def load_model(model_dir: Path):
    import torch
    from sae_lens import HookedSAETransformer
    from transformer_lens import loading_from_pretrained as tl_loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = tl_loading.get_pretrained_model_config(str(model_dir), fold_ln=False, device="cpu", dtype=torch.float32)
    hf_model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    hf_model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    state_dict = tl_loading.get_pretrained_state_dict(str(model_dir), cfg, hf_model, dtype=torch.float32)
    model = HookedSAETransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.eval()
    return model, hf_model, tokenizer


def sae_formula(x, w):
    """Our reference JumpReLU encoding from the raw safetensors (w: dict of tensors, cfg dict)."""
    import torch

    sae_in = x - w["b_dec"] * float(w["apply_b_dec_to_input"])
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    return torch.relu(pre) * (pre > w["threshold"]).to(pre.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--model", default="data/demo/model")
    ap.add_argument("--sae", default="data/demo/saes/resid-L2")
    ap.add_argument("--windows", required=True, help="int64 .npy [n_windows, seq] of token ids")
    ap.add_argument("--latents", default=None, help="'0,5,17', '0-31' or 'all' (default all)")
    ap.add_argument("--out", help="output JSON path")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--n-intervals", type=int, default=10)
    ap.add_argument("--interval-examples", type=int, default=5)
    ap.add_argument("--hist-bins", type=int, default=50)
    ap.add_argument(
        "--features-per-batch",
        type=int,
        default=128,
        help="SaeVisConfig.minibatch_size_features (NeuronpediaRunner default 128); "
        "SAEDashboard re-runs the model forward once per feature batch",
    )
    ap.add_argument(
        "--prompts-per-forward",
        type=int,
        default=32,
        help="SaeVisConfig.minibatch_size_tokens (NeuronpediaRunner default 32)",
    )
    ap.add_argument(
        "--ignore-token-ids", default=None, help="comma list; default: tokenizer's bos/eos/pad ids (here 8190,8191)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check hooks vs raw HF model and SAE encode vs formula (outside the timing)",
    )
    ap.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="untimed SaeVisRunner.run on the first minibatch of windows and 1 latent first, "
        "so one-off first-call costs are not timed",
    )
    ap.add_argument(
        "--make-windows",
        metavar="STREAM_NPY",
        help="only write --windows from a token stream ([8190] + 127 tokens each) and exit",
    )
    ap.add_argument("--n-windows", type=int, default=64)
    args = ap.parse_args()

    if args.make_windows:
        make_windows(args.make_windows, args.n_windows, args.windows)
        return
    if not args.out:
        ap.error("--out is required")

    warnings.filterwarnings("ignore")
    t_import = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from sae_dashboard.components_config import (
        ActsHistogramConfig,
        Column,
        FeatureTablesConfig,
        LogitsHistogramConfig,
        LogitsTableConfig,
        SequencesConfig,
    )
    from sae_dashboard.feature_data_generator import FeatureDataGenerator
    from sae_dashboard.layout import SaeVisLayoutConfig
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner
    from sae_dashboard.sequence_data_generator import SequenceDataGenerator
    from sae_lens import SAE
    from safetensors.torch import load_file

    import_s = time.perf_counter() - t_import

    # ---------------- inputs ----------------
    t_load = time.perf_counter()
    model_dir, sae_dir = Path(args.model), Path(args.sae)
    sae_cfg = json.loads((sae_dir / "cfg.json").read_text())
    hook_name = sae_cfg.get("hook_name") or sae_cfg.get("metadata", {}).get("hook_name")
    if not hook_name:
        raise SystemExit(f"no hook_name in {sae_dir / 'cfg.json'}")

    windows = np.load(args.windows)
    if windows.ndim != 2:
        raise SystemExit(f"--windows must be 2-D, got {windows.shape}")
    tokens = torch.from_numpy(windows.astype(np.int64))
    n_windows, seq_len = tokens.shape

    model, hf_model, tokenizer = load_model(model_dir)
    if seq_len > model.cfg.n_ctx:
        raise SystemExit(f"windows of {seq_len} tokens exceed n_ctx {model.cfg.n_ctx}")

    sae = SAE.load_from_disk(str(sae_dir), device="cpu")
    sae.eval()
    raw = {k: v.float() for k, v in load_file(str(sae_dir / "sae_weights.safetensors")).items()}
    raw["apply_b_dec_to_input"] = bool(sae_cfg.get("apply_b_dec_to_input", True))
    d_sae = int(sae.cfg.d_sae)
    latents = parse_latents(args.latents, d_sae)
    w_dec_norm = raw["W_dec"].norm(dim=-1)

    if args.ignore_token_ids:
        ignore_ids = {int(x) for x in args.ignore_token_ids.split(",") if x.strip()}
    else:  # what NeuronpediaRunner does
        ignore_ids = {
            t for t in (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None
        }
    special_mask = torch.isin(tokens, torch.tensor(sorted(ignore_ids), dtype=tokens.dtype))
    n_tokens = int(tokens.numel())
    n_nonspecial = int((~special_mask).sum())
    load_s = time.perf_counter() - t_load

    # ---------------- verification (not timed) ----------------
    checks: dict = {}
    if args.verify:
        t_v = time.perf_counter()
        layer = int(hook_name.split(".")[1])
        vt = tokens[: min(8, n_windows)]
        _, cache = model.run_with_cache(vt, names_filter=[hook_name], stop_at_layer=layer + 1)
        tl_act = cache[hook_name]
        hf_hidden = hf_model(vt, output_hidden_states=True).hidden_states
        if hook_name.endswith("hook_resid_pre"):
            checks["hook_vs_hf_hidden_states_max_abs_diff"] = float((tl_act - hf_hidden[layer]).abs().max())
            checks["hook_vs_hf_compared"] = f"{hook_name} vs HF hidden_states[{layer}] on {len(vt)} windows"
        sae_acts = sae.encode(tl_act)
        ref = sae_formula(tl_act, raw)
        checks["sae_class"] = type(sae).__name__
        checks["sae_encode_vs_formula_max_abs_diff"] = float((sae_acts - ref).abs().max())
        checks["sae_encode_vs_formula_active_mismatch"] = int(((sae_acts > 0) != (ref > 0)).sum())
        checks["w_dec_norm_min_max"] = [float(w_dec_norm.min()), float(w_dec_norm.max())]
        # keep reference acts for the selected latents to compare with what SAEDashboard used
        checks["_ref"] = ref[..., latents]  # [n_verify, seq, n_latents]
        checks["seconds"] = round(time.perf_counter() - t_v, 3)
    del hf_model

    # ---------------- SAEDashboard config (as NeuronpediaRunner builds it) ----------------
    layout = SaeVisLayoutConfig(
        columns=[
            Column(
                SequencesConfig(
                    stack_mode="stack-all",
                    buffer=None,  # type: ignore[arg-type]
                    compute_buffer=True,
                    n_quantiles=args.n_intervals,
                    top_acts_group_size=args.top_k,
                    quantile_group_size=args.interval_examples,
                ),
                ActsHistogramConfig(n_bins=args.hist_bins),
                LogitsHistogramConfig(n_bins=args.hist_bins),
                LogitsTableConfig(),
                FeatureTablesConfig(n_rows=3),
            )
        ]
    )
    vis_cfg = SaeVisConfig(
        hook_point=hook_name,
        features=latents,
        minibatch_size_features=args.features_per_batch,
        minibatch_size_tokens=args.prompts_per_forward,
        quantile_feature_batch_size=64,
        verbose=False,
        device="cpu",
        dtype="float32",
        feature_centric_layout=layout,
        perform_ablation_experiments=False,
        cache_dir=None,
        ignore_tokens=ignore_ids,
        ignore_positions=[],
        use_dfa=False,
        seed=args.seed,
    )

    if args.warmup:
        t_w = time.perf_counter()
        warm_cfg = SaeVisConfig(
            **{**{f: getattr(vis_cfg, f) for f in vis_cfg.__dataclass_fields__}, "features": latents[:1]}
        )
        SaeVisRunner(warm_cfg).run(encoder=sae, model=model, tokens=tokens[: args.prompts_per_forward])
        warmup_s = time.perf_counter() - t_w
    else:
        warmup_s = 0.0

    # ---- light instrumentation (wrappers only observe; their own time is subtracted) ----
    captured: list[dict] = []
    timers = {"model_forward": 0.0, "instrumentation": 0.0}
    orig_get_model_acts = FeatureDataGenerator.get_model_acts
    orig_get_sequences_data = SequenceDataGenerator.get_sequences_data

    def timed_get_model_acts(self, *a, **kw):
        t = time.perf_counter()
        try:
            return orig_get_model_acts(self, *a, **kw)
        finally:
            timers["model_forward"] += time.perf_counter() - t

    def capturing_get_sequences_data(self, feat_acts, *a, **kw):
        result = orig_get_sequences_data(self, feat_acts, *a, **kw)
        t = time.perf_counter()
        groups = []
        for group in result.seq_group_data:
            idx = torch.tensor(
                [[s.original_index, s.qualifying_token_index] for s in group.seq_data], dtype=torch.long
            ).reshape(-1, 2)
            vals = feat_acts[idx[:, 0], idx[:, 1]].tolist() if len(idx) else []
            groups.append((group.title, idx.tolist(), vals, group.seq_data))
        captured.append(
            {
                "max": float(feat_acts.max()),
                "groups": groups,
                "acts": feat_acts[: checks["_ref"].shape[0]].clone() if "_ref" in checks else None,
            }
        )
        timers["instrumentation"] += time.perf_counter() - t
        return result

    FeatureDataGenerator.get_model_acts = timed_get_model_acts
    SequenceDataGenerator.get_sequences_data = capturing_get_sequences_data
    try:
        t0 = time.perf_counter()
        vis_data = SaeVisRunner(vis_cfg).run(encoder=sae, model=model, tokens=tokens)
        run_s = time.perf_counter() - t0 - timers["instrumentation"]
    finally:
        FeatureDataGenerator.get_model_acts = orig_get_model_acts
        SequenceDataGenerator.get_sequences_data = orig_get_sequences_data

    assert len(captured) == len(latents), (len(captured), len(latents))

    # ---------------- collect output ----------------
    stats = vis_data.feature_stats
    per_latent = []
    max_ref_diff = 0.0
    context_check_ok = True
    for j, lat in enumerate(latents):
        fd = vis_data.feature_data_dict[lat]
        cap = captured[j]
        hist = fd.acts_histogram_data
        n_nonzero = int(sum(hist.bar_heights)) if hist.bar_heights else 0
        density_reported = float(hist.title.split(" = ")[1].split("%")[0]) / 100 if hist.title else 0.0
        top_title, top_idx, top_vals, top_seqs = cap["groups"][0]
        top_examples = []
        for (w, p), v, s in zip(top_idx, top_vals, top_seqs):
            # s.feat_acts / s.token_ids cover positions 1..seq-1 (see docstring); check that once
            if s.token_ids != tokens[w, 1:].tolist():
                context_check_ok = False
            top_examples.append({"window_index": w, "position": p, "value": v, "value_rounded": s.feat_acts[p - 1]})
        intervals = []
        for title, idx, vals, _ in cap["groups"][1:]:
            # title: "INTERVAL lo - hi<br>CONTAINS x.xxx%"
            rng, contains = title.replace("INTERVAL ", "").split("<br>CONTAINS ")
            lo, hi = (float(x) for x in rng.split(" - "))
            intervals.append(
                {
                    "lower": lo,
                    "upper": hi,
                    "contains_frac": float(contains.rstrip("%")) / 100,
                    "examples": [{"window_index": w, "position": p, "value": v} for (w, p), v in zip(idx, vals)],
                }
            )
        if cap["acts"] is not None:
            ref = checks["_ref"][..., j] * w_dec_norm[lat]
            ref = ref * (~special_mask[: ref.shape[0]]).to(ref.dtype)
            max_ref_diff = max(max_ref_diff, float((cap["acts"] - ref).abs().max()))
        per_latent.append(
            {
                "latent": lat,
                "max_activation": cap["max"],
                "max_activation_title": float(top_title.split("MAX = ")[1]),
                "density": n_nonzero / n_nonspecial if n_nonspecial else 0.0,
                "density_reported": round(density_reported, 8),
                "n_nonzero": n_nonzero,
                "w_dec_norm": float(w_dec_norm[lat]),
                "unmasked_stats": {"max": stats.max[j], "frac_nonzero": stats.frac_nonzero[j]},
                "top_examples": top_examples,
                "intervals": intervals,
                "acts_histogram": {"bar_heights": hist.bar_heights, "bar_values": hist.bar_values},
            }
        )
    if args.verify:
        checks["saedashboard_acts_vs_formula_max_abs_diff"] = max_ref_diff
        checks["saedashboard_context_is_window_positions_1_to_end"] = context_check_ok
        checks.pop("_ref", None)

    n_lat = len(latents)
    out = {
        "tool": "SAEDashboard",
        "versions": {
            name: pkg_version(name)
            for name in ("sae-dashboard", "sae-lens", "transformer-lens", "transformers", "torch", "numpy")
        },
        "python": platform.python_version(),
        "inputs": {
            "model": str(model_dir),
            "sae": str(sae_dir),
            "hook_name": hook_name,
            "architecture": sae_cfg.get("architecture"),
            "apply_b_dec_to_input": raw["apply_b_dec_to_input"],
            "windows": str(args.windows),
            "ignore_token_ids": sorted(ignore_ids),
        },
        "config": {
            "top_k": args.top_k,
            "n_intervals": args.n_intervals,
            "interval_examples": args.interval_examples,
            "hist_bins": args.hist_bins,
            "buffer": None,
            "minibatch_size_features": args.features_per_batch,
            "minibatch_size_tokens": args.prompts_per_forward,
            "seed": args.seed,
            "threads": args.threads,
        },
        "n_windows": int(n_windows),
        "seq_len": int(seq_len),
        "n_tokens": n_tokens,
        "n_tokens_nonspecial": n_nonspecial,
        "n_latents": n_lat,
        "seconds": run_s,
        "seconds_model_forward": timers["model_forward"],
        "n_forward_passes_over_all_windows": -(-n_lat // args.features_per_batch),
        "throughput_token_latents_per_s": n_tokens * n_lat / run_s if run_s > 0 else None,
        "seconds_import": import_s,
        "seconds_load": load_s,
        "seconds_warmup": warmup_s,
        "checks": checks,
        "notes": {
            "seconds": "wall time of SaeVisRunner.run only (forward passes to the hook, SAE encode, "
            "stats, histograms, logit tables, correlation tables, example selection); excludes "
            "imports, model/SAE loading, verification and the untimed warm-up run",
            "examples": "per token: topk over the flattened [window, position] matrix of activations "
            "with special tokens zeroed; several examples may come from one window; ties broken "
            "arbitrarily by torch.topk; if fewer than top_k tokens are nonzero the rest are "
            "zero-valued fillers. Context = whole window (buffer=None).",
            "value": "exact float32 from the masked activation tensor SAEDashboard selected from; "
            "value_rounded is SAEDashboard's stored 4-decimal value",
            "max_activation": "max over non-special tokens (SAEDashboard's TOP ACTIVATIONS MAX, unrounded)",
            "density": "n_nonzero / n_tokens_nonspecial (n_nonzero = sum of SAEDashboard's histogram counts)",
            "density_reported": "SAEDashboard's DENSITY: nonzero / ALL tokens (special tokens in the "
            "denominator), rounded to 0.001%",
            "unmasked_stats": "SAEDashboard FeatureStatistics on unmasked acts (special tokens included)",
            "intervals": "equal-width bins of [0, max]; contains_frac = share of ALL tokens in the bin; "
            "examples drawn with seeded random.sample; bottom bin includes zeros",
            "fold_W_dec_norm": "SaeVisRunner folds decoder norms into the encoder: values are act * w_dec_norm",
        },
        "latents": per_latent,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(
        f"SAEDashboard: {n_windows} windows x {seq_len} = {n_tokens} tokens, {n_lat} latents in "
        f"{run_s:.2f}s (model forward {timers['model_forward']:.2f}s) -> "
        f"{n_tokens * n_lat / run_s:.3g} token-latents/s; wrote {args.out}"
    )
    if args.verify:
        print("checks:", json.dumps(checks))


if __name__ == "__main__":
    main()
