"""`trainer.compile=true`: the network under torch.compile gives the eager network's loss and gradients, and keeps
its parameter names (checkpoints load either way)."""

import pytest
import torch

from src.run import build_datamodule, build_module


@pytest.mark.slow
def test_compiled_network_gives_the_eager_loss(train_cfg):
    overrides = ["model.base_channels=4", "model.depth=1", "trainer.precision=32-true", "data.image_size=32"]
    eager_cfg = train_cfg(*overrides, run="eager")
    compiled_cfg = train_cfg(*overrides, "trainer.compile=true", run="compiled")
    datamodule = build_datamodule(eager_cfg)
    datamodule.setup("fit")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    torch.manual_seed(0)
    eager = build_module(eager_cfg, datamodule)
    torch.manual_seed(0)
    compiled = build_module(compiled_cfg, datamodule)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(eager.state_dict().values(), compiled.state_dict().values()))

    losses, grads = [], []
    for module in (eager, compiled):
        module.train()
        loss = module.loss(module(batch["image"]), batch["mask"])["loss"]
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in module.net.parameters()]))
    assert compiled.net._compiled_call_impl is not None  # it did run compiled
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4)
