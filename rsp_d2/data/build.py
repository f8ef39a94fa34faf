"""The loaders of the paper's data pipeline (Sec. IV-A): the mapper named by
``INPUT.DATASET_MAPPER_NAME`` in Detectron2's loaders, the training stream resumable.

Detectron2's own ``build_detection_train_loader(cfg)`` always maps with its ``DatasetMapper``
(crop before resize, no SSD colour jitter, no single-category crop bound): a config's
``DATASET_MAPPER_NAME: rsp_semantic`` reaches training only through these builders.
"""
from detectron2.data import build_detection_test_loader, build_detection_train_loader

from .mapper import build_mapper
from .resumable import build_resumable_train_loader

__all__ = ["build_train_loader", "build_test_loader", "uses_resumable_loader"]


def uses_resumable_loader(cfg) -> bool:
    """Whether :func:`build_train_loader` gives the resumable stream (the default sampler)."""
    return cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler"


def build_train_loader(cfg, *, start_iter: int = 0, seed=None):
    """The training stream from iteration `start_iter`, a function of `seed` (default SEED) and
    the position only (:func:`build_resumable_train_loader`); Detectron2's own loader for the
    other DATALOADER.SAMPLER_TRAIN choices (then a resume is not exact). Yields lists of
    Detectron2 dataset dicts, ``image`` (3, H, W) uint8 and ``sem_seg`` (H, W) long."""
    mapper = build_mapper(cfg, is_train=True)
    if not uses_resumable_loader(cfg):
        return build_detection_train_loader(cfg, mapper=mapper)
    return build_resumable_train_loader(cfg, mapper, start_iter=start_iter,
                                        seed=cfg.SEED if seed is None else seed)


def build_test_loader(cfg, dataset_name: str):
    """Detectron2's test loader of `dataset_name` with the configured mapper (resize only)."""
    return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, is_train=False))
