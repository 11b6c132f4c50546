"""The training recipe the probe measures and the trainer runs: the reference's fastai learner."""

from __future__ import annotations

import pytest
import torch

from planner.base.plan import ItemTransform
from planner.base.recipe import (
    CheckpointingUnsupported,
    build_learner,
    set_grad_checkpointing,
    synthetic_dataloaders,
)

ITEM = ItemTransform(resize=40, method="squish")


@pytest.fixture(scope="module")
def dls():
    return synthetic_dataloaders(ITEM, (32, 32), 4, device="cpu", n_batches=2, n_classes=3)


def test_the_data_loaders_give_the_entry_size_and_classes(dls) -> None:
    x, y = dls.one_batch()
    assert tuple(x.shape) == (4, 3, 32, 32) and x.dtype == torch.float32
    assert list(dls.vocab) == ["class0", "class1", "class2"] and int(y.max()) < 3


def test_the_learner_is_the_references(dls) -> None:
    from fastai.callback.training import GradientAccumulation

    learn = build_learner(dls, "resnet18", effective_batch_size=16, pretrained=False, fp16=False)
    accumulation = [cb for cb in learn.cbs if isinstance(cb, GradientAccumulation)]
    assert len(accumulation) == 1 and accumulation[0].n_acc == 16  # counts samples, not batches
    assert [metric.name for metric in learn.metrics] == ["error_rate"]
    assert learn.model(dls.one_batch()[0]).shape == (4, 3)  # fastai's head sized by the classes


def test_checkpointing_switches_timm_s_body_and_is_refused_where_timm_has_none(dls) -> None:
    learn = build_learner(dls, "resnet18", effective_batch_size=16, pretrained=False, fp16=False,
                          grad_checkpointing=True)
    assert learn.model[0].model.grad_checkpointing is True
    set_grad_checkpointing(learn.model, False)
    assert learn.model[0].model.grad_checkpointing is False
    with pytest.raises(CheckpointingUnsupported, match="no gradient checkpointing"):
        build_learner(dls, "vgg11", effective_batch_size=16, pretrained=False, fp16=False, grad_checkpointing=True)
