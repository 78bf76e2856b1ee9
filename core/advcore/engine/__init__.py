"""The training engine, a module per concern: building a run (build), one step (step), the
per-epoch evaluation (epoch_eval), checkpoint save and restore (checkpoints), signals, epoch
metrics, the optimizer and schedule (optim), the model spec, and the loop (loop); this package
re-exports every name the former advcore.trainer had. It may import runtime, data, models, the kernel and the foundation.
"""

from .signals import StopOnSignal, _interrupted
from .metrics import EpochTotals, _quiet, _read_metrics, _summary
from .model_spec import model_spec, info_stats, build_model_from_spec, load_model_tensors
from .optim import build_optimizer, build_scheduler, lr_at, lr_schedule
from .build import (resolve_device, seed_everything, epoch_seed, resolve_composition, build_run, engine_services,
                    isolated_rng, load_model)
from .step import train_step
from .epoch_eval import evaluate, evaluate_run, epoch_eval_sizes, evaluate_epoch, selection_score
from .checkpoints import (checkpoint_tensors, write_checkpoint, restore_checkpoint, _rescale_progress, InEpochSaver,
                          _restore_latest)
from .loop import prepare_out, train, _train, chance_warning

__all__ = ['build_run', 'train', 'train_step', 'evaluate', 'resolve_device', 'model_spec', 'build_model_from_spec', 'load_model']
