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
