"""The training engine: building a run, one step, the per-epoch evaluation, checkpoint save
and restore, signals, epoch metrics and the loop; this package re-exports every name the
former advcore.trainer had. It may import runtime, data, models, the kernel and the foundation.
"""

from .signals import StopOnSignal, _interrupted
from .metrics import EpochTotals, _quiet, _read_metrics, _summary
from .model_spec import model_spec, info_stats, build_model_from_spec, load_model_tensors
from .optim import build_optimizer, build_scheduler, lr_at, lr_schedule
from .loop import resolve_device, seed_everything, epoch_seed, resolve_composition, build_run, engine_services, isolated_rng, load_model, _stack_views, train_step, evaluate, evaluate_run, epoch_eval_sizes, evaluate_epoch, selection_score, checkpoint_tensors, write_checkpoint, restore_checkpoint, _rescale_progress, prepare_out, train, _train, chance_warning, InEpochSaver, _restore_latest

__all__ = ['build_run', 'train', 'train_step', 'evaluate', 'resolve_device', 'model_spec', 'build_model_from_spec', 'load_model']
