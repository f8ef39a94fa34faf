"""Training and evaluation: ``RSPTrainer``, checked checkpoints and inputs, and the entry
points behind ``train_net.py``."""
from .checkpoint import AtomicDetectionCheckpointer, check_checkpoint, load_model
from .dataset_checks import DatasetNotFoundError, check_datasets
from .launcher import argument_parser, cli, main, run, setup
from .predictor import Predictor, read_image
from .recipe import RSPDataMixin, build_recipe_train_loader, confirm_recipe_data
from .trainer import RSPTrainer
