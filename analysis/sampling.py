"""Our own token-by-token sampling loop. transformer-lens 3.2.1 does stream (``generate_stream``
yields tokens as they come), but steering needs what it does not give, read off its source
(``HookedTransformer.generate_stream``, ``utilities/logits_utils.sample_logits``):
- two completions in lockstep with hooks on only one: it runs its whole loop under whatever hooks
  are on the model, so a default and a steered generator interleaved would both be steered, and a
  batch of two with a row-wise hook moves the default row's logits (see analysis/steering.py);
- a seeded generator per completion: it samples with ``Categorical(...).sample()`` from torch's
  global random state, shared by both completions and by every session in the process;
- a penalty over generated tokens only: its ``freq_penalty`` counts the prompt's tokens too, is
  applied after the temperature division and only when positive;
- the logits of each step (the next-token distributions at the first difference): it yields tokens.
So ``Completion`` below runs one forward per step under its own hooks and samples with ``sample_next``.

Choices, kept close to what Neuronpedia's steering and OpenAI's API do:
- frequency penalty, OpenAI style: ``logit -= penalty * count``, where count is how often that token
  was *generated* so far in this completion (prompt tokens are not counted);
- then temperature (0 means greedy: the arg-max of the penalized logits), then top-p (the smallest
  set of most likely tokens whose probability reaches ``top_p``);
- each completion draws from its own ``torch.Generator`` seeded with ``seed``, on the CPU, so two
  completions with identical logits draw identical tokens on any device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformer_lens import HookedTransformer, TransformerLensKeyValueCache

from analysis.generation_settings import GenerationSettings
from analysis.model_loading import model_tokenizer

ForwardHook = tuple[str, Callable[..., torch.Tensor | None]]  # (hook name, function), as model.hooks takes them


def sample_next(
    logits: torch.Tensor, counts: torch.Tensor, settings: GenerationSettings, generator: torch.Generator
) -> int:
    """The next token from one row of float32 CPU logits, given how often each token was generated."""
    logits = logits - settings.frequency_penalty * counts
    if settings.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # probability of the more likely tokens
        sorted_probs[before >= settings.top_p] = 0  # the first token always stays
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


@contextmanager
def _hooks_on(model: HookedTransformer, hooks: list[ForwardHook]) -> Iterator[None]:
    """``hooks`` on their hook points for one forward pass, as plain torch forward hooks.

    Not ``model.hooks(...)``: that walks all of the model's hook points to remove its hooks again,
    about 0.5 ms, which is 5 % of a one-token step of the demo model on the CPU; here only the
    handles added are removed.
    """
    handles = [
        model.hook_dict[name].register_forward_hook(lambda module, inputs, output, fn=fn: fn(output, hook=module))
        for name, fn in hooks
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Completion:
    """One completion grown a token per ``step``: its own KV cache, random generator and token counts,
    and the forward hooks (steering) that every one of its forward passes runs under."""

    model: HookedTransformer
    prompt_ids: torch.Tensor  # [1, n]
    settings: GenerationSettings
    hooks: list[ForwardHook] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    done: bool = False

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.counts = torch.zeros(self.model.cfg.d_vocab_out, dtype=torch.float32)
        self.eos = model_tokenizer(self.model).eos_token_id
        self.cache = (
            TransformerLensKeyValueCache.init_cache(self.model.cfg, self.model.cfg.device, 1)
            if self.settings.use_kv_cache
            else None
        )

    def _forward(self) -> torch.Tensor:
        """Logits for the next token: only the tokens the cache has not seen, else the whole sequence."""
        if self.cache is None:
            tokens = torch.cat([self.prompt_ids, self._generated()], dim=1)
            return self.model(tokens)[0, -1]
        tokens = self._generated()[:, -1:] if self.ids else self.prompt_ids
        # An explicit mask: transformer-lens would otherwise guess one and treat pad-id tokens as padding.
        return self.model(tokens, past_kv_cache=self.cache, attention_mask=torch.ones_like(tokens))[0, -1]

    def _generated(self) -> torch.Tensor:
        return torch.tensor([self.ids], dtype=self.prompt_ids.dtype, device=self.prompt_ids.device)

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Sample one more token; returns the model's logits it was drawn from (float32, CPU)."""
        with _hooks_on(self.model, self.hooks):
            logits = self._forward()
        logits = logits.float().cpu()
        token = sample_next(logits, self.counts, self.settings, self.generator)
        self.ids.append(token)
        self.counts[token] += 1
        self.done = token == self.eos or len(self.ids) >= self.settings.max_new_tokens
        return logits
