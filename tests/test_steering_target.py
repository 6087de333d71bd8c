"""``SAE:LATENT[:COEFFICIENT]``: one steering-target type and one parser for the command line and the
Steer page's URL, read and written without torch."""

from __future__ import annotations

import subprocess
import sys
from typing import cast

import numpy as np
import pytest

from analysis.live_errors import LiveInputError
from analysis.paths import REPO_ROOT
from analysis.steering_target import MAX_COEFFICIENT, SteeringTarget


@pytest.mark.parametrize(
    "text, target",
    [
        ("resid-L2:17:40", SteeringTarget("resid-L2", 17, 40.0)),
        ("resid-L2:17:-2.5", SteeringTarget("resid-L2", 17, -2.5)),
        ("resid-L2:17", SteeringTarget("resid-L2", 17, None)),
        ("release/layer_3:width_16k:17:1e3", SteeringTarget("release/layer_3:width_16k", 17, 1000.0)),
        ("a:b:17", SteeringTarget("a:b", 17, None)),
    ],
)
def test_parse_reads_sae_latent_and_an_optional_coefficient(text, target):
    assert SteeringTarget.parse(text) == target


@pytest.mark.parametrize("coefficient", [None, 40.0, -2.5, 0.1 + 0.2, 1234567.0 / 1000, MAX_COEFFICIENT])
def test_as_text_reads_back_to_the_same_target(coefficient):
    target = SteeringTarget("transcoder-L3", 5, coefficient)
    assert SteeringTarget.parse(target.as_text()) == target
    assert SteeringTarget("transcoder-L3", 5, 40).as_text() == "transcoder-L3:5:40"


@pytest.mark.parametrize(
    "text, message",
    [
        ("nonsense", "a feature is SAE:LATENT or SAE:LATENT:COEFFICIENT, e.g. resid-L2:17:40, not 'nonsense'"),
        (":17", "a feature is SAE:LATENT or SAE:LATENT:COEFFICIENT"),
        ("resid-L2:", "a feature is SAE:LATENT or SAE:LATENT:COEFFICIENT"),
        ("resid-L2:-3:4", "a latent is a whole number of at least 0, not -3"),
        ("resid-L2:17:nan", "a steering coefficient must be a finite number, not nan"),
        ("resid-L2:17:1e6", "steering coefficient 1e+06 is out of range: at most ±10000"),
    ],
)
def test_bad_text_is_one_clear_line(text, message):
    with pytest.raises(LiveInputError, match=message.replace("+", r"\+")):
        SteeringTarget.parse(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("resid-L2:17", "a feature is SAE:LATENT:COEFFICIENT, e.g. resid-L2:17:40, not 'resid-L2:17'"),
        ("resid-L2:abc:1", "in 'resid-L2:abc:1': the latent must be a whole number and the coefficient a number"),
    ],
)
def test_the_command_line_form_needs_a_coefficient(text, message):
    with pytest.raises(LiveInputError, match=message):
        SteeringTarget.parse(text, require_coefficient=True)


def test_a_target_is_read_and_written_without_torch():
    code = (
        "import sys; from analysis.steering_target import SteeringTarget; "
        "import analysis.steering_methods, analysis.sae_capabilities; "
        "assert SteeringTarget.parse('resid-L2:3').with_coefficient(2.0).as_text() == 'resid-L2:3:2'; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_numpy_latent_from_a_table_becomes_a_plain_int():
    # numpy scalars where the annotations say int and float: what a pandas table hands over
    target = SteeringTarget("resid-L2", cast(int, np.int64(3)), cast(float, np.float32(2.5)))
    assert type(target.latent) is int and type(target.coefficient) is float
    assert target.as_text() == "resid-L2:3:2.5"
