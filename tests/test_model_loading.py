"""Loading models: the demo model through the same loader a user's model goes through, and every error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from analysis.devices import DeviceError, pick_device
from analysis.model_loading import ModelLoadError, load_model, resolve_model_path

pytestmark = pytest.mark.model


def test_demo_model_has_standard_hook_names(demo_model):
    hooks = demo_model.model.hook_dict
    for layer in range(demo_model.model.cfg.n_layers):
        for name in ("hook_resid_pre", "hook_mlp_out", "ln2.hook_normalized", "hook_resid_post"):
            assert f"blocks.{layer}.{name}" in hooks
    assert demo_model.architecture == "GPT2LMHeadModel"
    assert demo_model.device == "cpu"


def test_loaded_model_computes_what_the_hugging_face_model_computes(demo_model, demo_dir):
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(demo_dir / "model").eval()
    tokens = demo_model.model.to_tokens("In the beginning God created the heaven and the earth.")
    with torch.no_grad():
        ours = demo_model.model(tokens)
        theirs = hf_model(tokens).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_demo_model_generates_text_of_its_domains(demo_model):
    text = demo_model.model.generate("And the LORD said unto Moses,", max_new_tokens=20, do_sample=False, verbose=False)
    assert text.startswith("And the LORD said unto Moses,")
    assert len(demo_model.model.to_tokens(text, prepend_bos=False)[0]) > 20


def test_special_tokens_have_non_zero_ids(demo_model):
    tokenizer = demo_model.model.tokenizer
    assert tokenizer.bos_token_id and tokenizer.eos_token_id and tokenizer.pad_token_id
    assert demo_model.model.to_tokens("hello")[0, 0].item() == tokenizer.bos_token_id


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"))


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_hub_id_that_is_not_downloaded_says_how_to_fix_it():
    with pytest.raises(ModelLoadError, match="not available offline: download it first or give a local folder"):
        resolve_model_path("saescope-test/not-a-cached-model")


def test_unknown_architecture_is_a_clear_error(tmp_path, demo_dir):
    folder = tmp_path / "mystery"
    shutil.copytree(demo_dir / "model", folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MysteryForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError, match="unknown architecture 'MysteryForCausalLM': SAEscope loads GPT2LMHeadModel, "
    ):
        load_model(str(folder))


def test_device_defaults_to_cuda_when_present_else_cpu():
    assert pick_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error():
    with pytest.raises(DeviceError, match="no CUDA device"):
        pick_device("cuda")


def test_damaged_weights_are_a_clear_error(tmp_path, demo_dir):
    shutil.copytree(demo_dir / "model", tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="could not be read"):
        load_model(str(tmp_path / "model"), device="cpu")
