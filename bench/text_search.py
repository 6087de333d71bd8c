"""search_text on a 64-token text against the work it cannot avoid, and what a wide SAE costs it.

Speed: median seconds of ``search_text`` (all five demo SAEs; summed, and per token) against the
bare model forward to the last hooked layer plus every SAE's encode on the same tokens, the three
interleaved in one process after a warm-up, so the machine's load hits them alike.

Memory: a synthetic 131,072-latent JumpReLU SAE at ``blocks.2.hook_resid_pre`` (random encoder,
threshold set for about 64 firing latents per token) on a full 256-token context: the bytes
``encode_text`` keeps for it against the dense [tokens, latents] array, and the growth of peak RSS
while encoding in chunks (as ``encode_text`` does; measured first) against one dense encode of the
whole context.

    python bench/text_search.py --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig

from analysis.hooked_forward import run_to_hooks  # noqa: E402
from analysis.live_model import LiveModel, LiveSpecs, load_live  # noqa: E402
from analysis.sae_loading import LoadedSAE  # noqa: E402
from analysis.text_activations import encode_text, search_text  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
WIDE = 131072
HOOK = "blocks.2.hook_resid_pre"


@torch.no_grad()
def bare(live: LiveModel, ids: torch.Tensor) -> None:
    cache = run_to_hooks(live.model, ids, sorted({s.hook_name for s in live.saes.values()}))
    for loaded in live.saes.values():
        loaded.sae.encode(cache[loaded.hook_name])


def speed(live: LiveModel, text: str, repeats: int) -> None:
    ids, _ = live.tokenize(text)
    runs = {
        "bare forward + encode": lambda: bare(live, ids),
        "search_text": lambda: search_text(live, text),
        "search_text per token": lambda: search_text(live, text, per_token=True),
    }
    first = {}
    for name, run in runs.items():
        started = time.perf_counter()
        run()
        first[name] = time.perf_counter() - started
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["bare forward + encode"])
    print(
        f"{ids.shape[1]} tokens (BOS included), {len(live.saes)} SAEs, {torch.get_num_threads()} threads, "
        f"{sum(s.d_sae for s in live.saes.values()):,} latents; median of {repeats}:"
    )
    for name, values in seconds.items():
        median = statistics.median(values)
        print(
            f"  {name:<22} {median * 1000:7.1f} ms  ratio {median / base:.2f}  (first call {first[name] * 1000:.0f} ms)"
        )


def wide_sae(live: LiveModel, ids: torch.Tensor, firing: int = 64) -> LoadedSAE:
    """A JumpReLU SAE of WIDE latents whose one threshold lets about ``firing`` fire per token here."""
    generator = torch.Generator().manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=live.model.cfg.d_model, d_sae=WIDE, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=generator) / sae.W_enc.shape[0] ** 0.5)
        sae.W_dec.copy_(sae.W_enc.T)
        _, cache = live.model.run_with_cache(ids, names_filter=[HOOK])
        pre = (cache[HOOK][0] @ sae.W_enc).flatten()
        sae.threshold.fill_(float(pre.kthvalue(len(pre) - firing * ids.shape[1]).values))
    sae.cfg.metadata.hook_name = HOOK
    return LoadedSAE(name="wide", spec="synthetic", sae=sae)


def _status_mb(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def peak_growth_mb(run) -> float:
    """How far resident memory rose above its level at the start while ``run`` ran (Linux: the
    kernel's high-water mark, reset first through /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
    start = _status_mb("VmRSS")
    run()
    return _status_mb("VmHWM") - start


def memory(live: LiveModel, text: str) -> None:
    ids, _ = live.tokenize(text)
    live.saes = {"wide": wide_sae(live, ids)}
    kept = {}

    @torch.no_grad()
    def dense_encode() -> None:
        live.saes["wide"].sae.encode(run_to_hooks(live.model, ids, [HOOK])[HOOK])

    chunked = peak_growth_mb(lambda: kept.update(encode_text(live, text).acts))
    dense = peak_growth_mb(dense_encode)
    acts = kept["wide"]
    print(
        f"wide SAE, {WIDE:,} latents, {acts.shape[0]} tokens, {len(acts.values) / acts.shape[0]:.0f} firing per "
        f"token: kept {acts.nbytes / 2**20:.2f} MB (dense array {acts.shape[0] * WIDE * 4 / 2**20:.0f} MB); "
        f"peak RSS growth: encode_text {chunked:.0f} MB, one dense encode of the context {dense:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    live = load_live(LiveSpecs(model=str(DEMO / "model"), saes=(str(DEMO / "saes"),)), device="cpu")
    stream = np.load(DEMO / "heldout_tokens.npy")
    speed(live, live.tokenizer.decode(stream[:63].tolist()), args.repeats)
    memory(live, live.tokenizer.decode(stream[: 4 * live.n_ctx].tolist()))


if __name__ == "__main__":
    main()
