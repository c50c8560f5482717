"""The training runner: seeded fits that keep Lightning's advice about its own setup away from users."""

from __future__ import annotations

import warnings

import lightning.pytorch as lp
import pytest
import torch

from gearsx.train import fit_lightning

#: Lightning's advice that does not apply to gearsx's fits (in-memory batches, a device gearsx chose).
ADVICE = ("does not have many workers", "GPU available but not used")


class _Plan(lp.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.module = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        return self.module(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture
def many_cores_and_a_gpu(monkeypatch):
    """Pretend to Lightning that the machine has 16 cores and a CUDA device (gearsx still picks the CPU)."""
    from lightning.pytorch.accelerators import CUDAAccelerator
    from lightning.pytorch.trainer.connectors import data_connector

    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda local_world_size: 15)
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))


def _loader():
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 3)), batch_size=8)


def _messages(record) -> list[str]:
    return [str(w.message) for w in record]


def test_fits_keep_lightnings_setup_advice_quiet(many_cores_and_a_gpu, tmp_path):
    # the setting that makes a plain Lightning fit give that advice ...
    with warnings.catch_warnings(record=True) as plain:
        warnings.simplefilter("always")
        trainer = lp.Trainer(
            max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(_Plan(), _loader())
    for advice in ADVICE:
        assert any(advice in m for m in _messages(plain)), advice
    # ... and gearsx's runner on it: trained, without it
    plan = _Plan()
    before = plan.module.weight.detach().clone()
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        history, device = fit_lightning(
            plan,
            _loader(),
            max_epochs=2,
            accelerator="cpu",
            devices=1,
            progress=False,
            random_state=0,
            reinitialise=False,
        )
    assert device.type == "cpu"
    assert len(history) == 2
    assert not torch.equal(plan.module.weight.detach(), before)
    assert not [m for m in _messages(ours) if any(advice in m for advice in ADVICE)]
