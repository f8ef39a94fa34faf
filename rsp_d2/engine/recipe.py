"""The paper's data pipeline (Sec. IV-A) in a Detectron2 script of your own.

Detectron2's ``DefaultTrainer`` and ``tools/plain_train_net.py`` map the training data with
Detectron2's ``DatasetMapper``, whatever ``INPUT.DATASET_MAPPER_NAME`` says. One step gives
them the recipe:

* a ``DefaultTrainer`` subclass (Detectron2's ``tools/train_net.py``)::

      class Trainer(RSPDataMixin, DefaultTrainer): ...

* a training loop of your own: ``data_loader = build_recipe_train_loader(cfg, model)``.

A run whose config names a mapper other than Detectron2's and that trains without one of these
says so in its log at the first training step (:meth:`RSPHead.forward`).
"""
from torch import nn

from ..data.build import build_test_loader, build_train_loader
from ..modeling.rsp_head import RSPHead

__all__ = ["RSPDataMixin", "build_recipe_train_loader", "confirm_recipe_data"]


def confirm_recipe_data(model: nn.Module) -> None:
    """Tell the RSP heads of `model` (DDP-wrapped or not) that their training data come from
    the mapper their config names, so that they do not warn."""
    for module in model.modules():
        if isinstance(module, RSPHead):
            module.confirm_data_recipe()


def build_recipe_train_loader(cfg, model: nn.Module, **kwargs):
    """:func:`rsp_d2.data.build.build_train_loader` for a loop of your own, confirming the
    recipe to `model`'s RSP heads; `kwargs`: its ``start_iter`` and ``seed``."""
    confirm_recipe_data(model)
    return build_train_loader(cfg, **kwargs)


class RSPDataMixin:
    """Put before ``DefaultTrainer`` (or a subclass): the train and test loaders map with the
    mapper that ``INPUT.DATASET_MAPPER_NAME`` names, the training stream resumable
    (:func:`rsp_d2.data.build.build_train_loader`)."""

    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        confirm_recipe_data(self.model)

    @classmethod
    def build_train_loader(cls, cfg, *, start_iter: int = 0, seed=None):
        return build_train_loader(cfg, start_iter=start_iter, seed=seed)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)
