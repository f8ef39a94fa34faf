"""Training and evaluation: ``RSPTrainer``, evaluator selection, atomic checkpoints, and the
entry points behind ``train_net.py``."""
from .checkpoint import AtomicDetectionCheckpointer
from .datasets import DatasetNotFoundError, check_datasets
from .evaluation import CityscapesOfficialSemSegEvaluator, build_evaluator
from .launcher import argument_parser, load_cfg, main, run, setup
from .trainer import RSPTrainer
