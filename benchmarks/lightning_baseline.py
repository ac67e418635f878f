"""What users would pick instead: PyTorch Lightning with its MLFlowLogger, same model, data and optimizer."""

import logging
import warnings

import torch
from common import digits_data

from harness.tasks import create_task


def lightning_run(
    epochs: int, tracking_uri: str, batch_size: int = 32, lr: float = 1e-3, seed: int = 0
) -> None:
    import lightning as L
    from lightning.pytorch.loggers import MLFlowLogger

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = create_task("digits_mlp").make_model()

        def training_step(self, batch, _index):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
            self.log("train/loss", loss, on_step=True, on_epoch=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    x, y = digits_data()
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=MLFlowLogger("lightning", tracking_uri=tracking_uri),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Module(), loader)
