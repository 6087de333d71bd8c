"""How the next token is drawn: frequency penalty, temperature 0 as greedy, top-p, and seeds."""

from __future__ import annotations

import torch

from analysis.sampling import GenerationSettings, sample_next

LOGITS = torch.log(torch.tensor([0.6, 0.3, 0.1]))
NEVER_SEEN = torch.zeros(3)


def draws(settings: GenerationSettings, counts: torch.Tensor = NEVER_SEEN, n: int = 200) -> list[int]:
    generator = torch.Generator().manual_seed(settings.seed)
    return [sample_next(LOGITS, counts, settings, generator) for _ in range(n)]


def test_temperature_zero_is_greedy():
    assert set(draws(GenerationSettings(temperature=0, frequency_penalty=0))) == {0}


def test_frequency_penalty_lowers_tokens_by_how_often_they_were_generated():
    settings = GenerationSettings(temperature=0, frequency_penalty=1.0)
    assert draws(settings, counts=torch.tensor([1.0, 0.0, 0.0]), n=1) == [1]  # log 0.6 - 1 < log 0.3
    assert draws(settings, counts=torch.tensor([0.0, 0.0, 0.0]), n=1) == [0]


def test_top_p_keeps_the_smallest_set_of_likeliest_tokens_that_reaches_it():
    assert set(draws(GenerationSettings(temperature=1, frequency_penalty=0, top_p=0.5))) == {0}
    assert set(draws(GenerationSettings(temperature=1, frequency_penalty=0, top_p=0.8))) == {0, 1}
    assert set(draws(GenerationSettings(temperature=1, frequency_penalty=0, top_p=1.0))) == {0, 1, 2}


def test_the_same_seed_draws_the_same_tokens():
    settings = GenerationSettings(temperature=1, frequency_penalty=0, seed=5)
    assert draws(settings) == draws(settings) != draws(GenerationSettings(temperature=1, frequency_penalty=0, seed=6))
