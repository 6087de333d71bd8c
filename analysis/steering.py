"""Steering, as Neuronpedia does it: the same prompt completed twice with the same seed, once as the
model would and once with features turned up or down, so the difference is the features' doing.

Who holds the model: ``stream_comparison``, ``steer`` and ``generate`` take ``live.exclusive()``
themselves (steering hooks are model state; see analysis/live_model.py). ``stream_comparison``
holds it from its first step until it has yielded its result or is closed.

Why two single-row completions in lockstep and not one batch of two: on the CPU a batch of two
gives the default row logits up to ~6e-6 away from a single-row forward (another GEMM blocking),
so the default completion would not be exactly what plain generation gives with the same seed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass

import torch

from analysis.live_model import LiveInputError, LiveModel
from analysis.sampling import Completion, GenerationSettings
from analysis.steering_hooks import steering_hooks
from analysis.steering_methods import DEFAULT_METHOD
from analysis.steering_target import DEFAULT_COEFFICIENT_MULTIPLIER as DEFAULT_COEFFICIENT_MULTIPLIER  # re-exported
from analysis.steering_target import SteeringTarget
from analysis.steering_target import default_coefficient as default_coefficient  # re-exported

NEXT_TOKENS_SHOWN = 10


@dataclass(frozen=True)
class NextToken:
    """One candidate next token at the first divergence, under the model's own distribution
    (softmax of its logits: no temperature, penalty or top-p)."""

    token: int
    text: str
    p_default: float
    p_steered: float


@dataclass(frozen=True)
class SteeringProgress:
    """Both completions so far, after ``step`` tokens of each."""

    step: int
    default_ids: list[int]
    steered_ids: list[int]
    default_text: str
    steered_text: str


@dataclass(frozen=True)
class SteeringResult:
    """The finished comparison, with what is needed to reproduce it (see ``to_record``)."""

    prompt: str
    prompt_tokens: list[str]
    prompt_cut: int
    targets: tuple[SteeringTarget, ...]
    method: str
    settings: GenerationSettings
    default_ids: list[int]
    steered_ids: list[int]
    default_tokens: list[str]
    steered_tokens: list[str]
    default_text: str
    steered_text: str
    divergence: int | None  # index of the first generated token that differs; None if none does
    next_tokens: list[NextToken]  # at the divergence: the top tokens by either distribution
    seconds: float
    interrupted: bool
    model_hash: str
    sae_hashes: dict[str, str]

    def to_record(self) -> dict:
        """Everything as JSON-able values: settings, targets, outputs and the weights' content hashes."""
        return {
            "prompt": self.prompt,
            "prompt_tokens": self.prompt_tokens,
            "prompt_cut": self.prompt_cut,
            "method": self.method,
            "targets": [asdict(t) for t in self.targets],
            "settings": self.settings.to_dict(),
            "default": {"ids": self.default_ids, "tokens": self.default_tokens, "text": self.default_text},
            "steered": {"ids": self.steered_ids, "tokens": self.steered_tokens, "text": self.steered_text},
            "divergence": None
            if self.divergence is None
            else {"index": self.divergence, "next_tokens": [asdict(n) for n in self.next_tokens]},
            "seconds": round(self.seconds, 4),
            "interrupted": self.interrupted,
            "model_hash": self.model_hash,
            "sae_hashes": self.sae_hashes,
        }


@dataclass(frozen=True)
class Generation:
    """One completion on its own (plain, or steered without a comparison)."""

    prompt_cut: int
    ids: list[int]
    tokens: list[str]
    text: str
    seconds: float
    interrupted: bool


def _prompt_ids(live: LiveModel, prompt: str, settings: GenerationSettings) -> tuple[torch.Tensor, int]:
    """The prompt cut from the left so it and the new tokens fit the model's context."""
    if not isinstance(settings, GenerationSettings):
        raise LiveInputError(f"settings must be GenerationSettings, not {settings!r}")
    room = live.n_ctx - 2  # BOS and at least one prompt token
    if settings.max_new_tokens > room:
        raise LiveInputError(
            f"max_new_tokens {settings.max_new_tokens} leaves no room for a prompt in this model's "
            f"{live.n_ctx}-token context; at most {room}"
        )
    return live.tokenize(prompt, keep_last=live.n_ctx - settings.max_new_tokens)


def _next_tokens(live: LiveModel, default_logits: torch.Tensor, steered_logits: torch.Tensor) -> list[NextToken]:
    p_default, p_steered = torch.softmax(default_logits, -1), torch.softmax(steered_logits, -1)
    top = torch.maximum(p_default, p_steered).topk(NEXT_TOKENS_SHOWN).indices.tolist()
    return [
        NextToken(token, text, float(p_default[token]), float(p_steered[token]))
        for token, text in zip(top, live.token_strings(top))
    ]


def stream_comparison(
    live: LiveModel,
    prompt: str,
    targets: Sequence[SteeringTarget],
    method: str = DEFAULT_METHOD,
    settings: GenerationSettings = GenerationSettings(),
    stop: threading.Event | None = None,
) -> Generator[SteeringProgress | SteeringResult, None, None]:
    """Default and steered completions of ``prompt``, one token of each per step: yields a
    SteeringProgress after every step and the SteeringResult last. Bad input raises LiveInputError
    here, before anything runs; setting ``stop`` ends it early with ``interrupted`` set."""
    hooks = steering_hooks(live, targets, method)
    prompt_ids, cut = _prompt_ids(live, prompt, settings)
    return _compare(live, prompt, prompt_ids, cut, tuple(targets), method, settings, hooks, stop)


def _compare(
    live: LiveModel,
    prompt: str,
    prompt_ids: torch.Tensor,
    cut: int,
    targets: tuple[SteeringTarget, ...],
    method: str,
    settings: GenerationSettings,
    hooks: list,
    stop: threading.Event | None,
) -> Generator[SteeringProgress | SteeringResult, None, None]:
    decode = live.tokenizer.decode
    with live.exclusive():
        started = time.perf_counter()
        default = Completion(live.model, prompt_ids, settings)
        steered = Completion(live.model, prompt_ids, settings, hooks)
        divergence, next_tokens, interrupted = None, [], False
        while not (default.done and steered.done):
            if stop is not None and stop.is_set():
                interrupted = True
                break
            logits = [row.step() if not row.done else None for row in (default, steered)]
            if divergence is None and default.ids[-1] != steered.ids[-1]:
                # Until now both rows held the same tokens, so both stepped and saw the same prefix.
                default_logits, steered_logits = logits
                assert default_logits is not None and steered_logits is not None, "both rows stepped"
                divergence, next_tokens = len(default.ids) - 1, _next_tokens(live, default_logits, steered_logits)
            yield SteeringProgress(
                max(len(default.ids), len(steered.ids)),
                list(default.ids),
                list(steered.ids),
                decode(default.ids),
                decode(steered.ids),
            )
        seconds = time.perf_counter() - started
    used = dict.fromkeys(t.sae for t in targets)
    yield SteeringResult(
        prompt=prompt,
        prompt_tokens=live.token_strings(prompt_ids[0]),
        prompt_cut=cut,
        targets=targets,
        method=method,
        settings=settings,
        default_ids=default.ids,
        steered_ids=steered.ids,
        default_tokens=live.token_strings(default.ids),
        steered_tokens=live.token_strings(steered.ids),
        default_text=decode(default.ids),
        steered_text=decode(steered.ids),
        divergence=divergence,
        next_tokens=next_tokens,
        seconds=seconds,
        interrupted=interrupted,
        model_hash=live.model_hash,
        sae_hashes={name: live.sae_hashes[name] for name in used},
    )


def steer(
    live: LiveModel,
    prompt: str,
    targets: Sequence[SteeringTarget],
    method: str = DEFAULT_METHOD,
    settings: GenerationSettings = GenerationSettings(),
    stop: threading.Event | None = None,
) -> SteeringResult:
    """``stream_comparison`` run to the end."""
    *_, result = stream_comparison(live, prompt, targets, method, settings, stop)
    assert isinstance(result, SteeringResult), "stream_comparison ends with its result"
    return result


def generate(
    live: LiveModel,
    prompt: str,
    settings: GenerationSettings = GenerationSettings(),
    targets: Sequence[SteeringTarget] = (),
    method: str = DEFAULT_METHOD,
    stop: threading.Event | None = None,
) -> Generation:
    """One completion, plain (no targets) or steered: the same loop and seed as either row of a comparison."""
    hooks = steering_hooks(live, targets, method) if targets else []
    prompt_ids, cut = _prompt_ids(live, prompt, settings)
    with live.exclusive():
        started = time.perf_counter()
        row = Completion(live.model, prompt_ids, settings, hooks)
        while not row.done and not (stop is not None and stop.is_set()):
            row.step()
        seconds = time.perf_counter() - started
    return Generation(
        prompt_cut=cut,
        ids=row.ids,
        tokens=live.token_strings(row.ids),
        text=live.tokenizer.decode(row.ids),
        seconds=seconds,
        interrupted=not row.done,
    )
