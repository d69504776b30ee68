"""Precision per card: bf16 where the card computes it natively, fp16 with loss scaling on older cards."""

import warnings

import torch

from gptlab import device


def test_precision_follows_the_cards_compute_capability(monkeypatch):
    cuda = torch.device("cuda")
    assert device.amp_dtype(torch.device("cpu")) is None
    for capability, dtype in (((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((7, 5), torch.float16),
                              ((7, 0), torch.float16)):  # H100, A100: bf16; T4, V100: fp16
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert device.amp_dtype(cuda) == dtype


def test_the_grad_scaler_is_on_for_fp16_only(monkeypatch):
    monkeypatch.setattr(device, "amp_dtype", lambda d: torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without CUDA torch warns that it disables the scaler
        assert device.grad_scaler(torch.device("cuda")).is_enabled() is torch.cuda.is_available()
    monkeypatch.setattr(device, "amp_dtype", lambda d: None)
    assert not device.grad_scaler(torch.device("cpu")).is_enabled()


def backends(monkeypatch, cuda, mps):
    """This machine, as one with (or without) CUDA and Apple's MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_auto_chooses_cuda_then_mps_then_the_cpu(monkeypatch):
    for cuda, mps, chosen in ((True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        backends(monkeypatch, cuda, mps)
        assert device.resolve_device("auto") == torch.device(chosen)
        assert device.resolve_device("cpu") == torch.device("cpu")


def test_a_backend_named_but_absent_is_one_line_naming_what_is_here(monkeypatch):
    import pytest

    from gptlab.errors import GptlabError

    backends(monkeypatch, cuda=False, mps=True)
    assert device.resolve_device("mps") == torch.device("mps")
    with pytest.raises(GptlabError, match=r"^train.device = 'cuda' is not available on this machine; allowed: auto, "
                                          r"cpu, mps$"):
        device.resolve_device("cuda")
    backends(monkeypatch, cuda=True, mps=False)
    with pytest.raises(GptlabError, match=r"^train.device = 'mps' is not available on this machine; allowed: auto, "
                                          r"cpu, cuda$"):
        device.resolve_device("mps")
    monkeypatch.delattr(torch.backends, "mps")  # a torch built without the MPS backend
    assert device.resolve_device("auto") == torch.device("cuda") and not device.mps_available()


def test_mps_trains_in_fp32_without_a_scaler_seeds_one_by_one_and_one_job_at_once(monkeypatch):
    from gptlab import capacity
    from gptlab.config import preset
    from gptlab.runner import default_grouping, device_name

    mps = torch.device("mps")
    assert device.amp_dtype(mps) is None and isinstance(device.autocast(mps), type(device.autocast(torch.device("cpu"))))
    backends(monkeypatch, cuda=False, mps=True)
    assert default_grouping("auto") is False and default_grouping("mps") is False
    assert device_name("mps") == "mps"
    choice = capacity.auto_jobs([preset("lecture")], planned=20, cores=8)
    assert choice.jobs == 1 and choice.why == "--jobs auto: 1 at once (one job per GPU, 1 here)"


def test_a_grid_and_train_accept_mps_and_refuse_it_without_apple_silicon(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from gptlab.cli import app
    from gptlab.grid import load_grid

    assert load_grid("heads", device="mps").set["train.device"] == "mps"
    backends(monkeypatch, cuda=False, mps=False)
    result = CliRunner().invoke(app, ["train", "--preset", "bigram", "--device", "mps", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "train.device = 'mps' is not available on this machine; allowed: auto, cpu" in result.output
    bad = CliRunner().invoke(app, ["ablate", "heads", "--device", "tpu", "--dry-run"])
    assert bad.exit_code == 2 and "choose one of: auto, cpu, cuda, mps" in bad.output
