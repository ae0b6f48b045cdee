"""Which device commands and the trainer use."""
import pytest


def test_mps_is_chosen_when_present_and_refused_when_absent(monkeypatch):
    import torch

    from iiae.device import resolve_device
    from iiae.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device().type == "mps" and resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device().type == "cpu"
    with pytest.raises(UserError, match="--device mps: no Apple MPS device"):
        resolve_device("mps")
