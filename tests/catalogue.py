"""The bad-input catalogue of docs/errors.md as data: each case is a command line, its exit
code and phrases of the one line it must print (in order, separated by " ... ").

``{tmp}`` is a scratch folder, ``{run}`` a copy of a small finished run (expensive cases),
``{file}`` an ordinary file. ``python tests/catalogue.py`` prints the docs table with the
messages advcore really prints (paths shortened).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    says: str
    needs_run: bool = False  # uses {run}: a prepared run directory (imports torch)
    setup: str = ""  # name of a file-preparing step in test_catalogue.SETUP

    @property
    def id(self) -> str:
        return " ".join(self.args)[:90]


def _set(key_value: str, says: str) -> Case:
    return Case(("train", "--set", key_value), 1, says)


def _bad(key: str, value: str, says: str) -> Case:
    return _set(f"{key}={value}", f"invalid configuration: {key}: ... {says}")


GE1, GT0, INT, NUM, BOOL = ("greater than or equal to 1", "greater than 0", "valid integer", "valid number",
                            "valid boolean")
CONFIG = [
    _bad("epochs", "0", GE1), _bad("epochs", "-3", GE1), _bad("epochs", "x", INT), _bad("epochs", "1.5", INT),
    _bad("seed", "-1", "greater than or equal to 0"), _bad("seed", "9223372036854775808", "less than 9223372036854775808"),
    _bad("seed", "x", INT), _bad("deterministic", "perhaps", BOOL),
    _bad("data.batch_size", "0", GE1), _bad("data.batch_size", "x", INT), _bad("data.eval_batch_size", "0", GE1),
    _bad("data.extra_fraction", "1", "less than 1"), _bad("data.extra_fraction", "0", GT0),
    _set("data.extra_fraction=0.7", "data.extra_fraction: 0.7 is the share of data.extra samples per batch, but "
                                    "data.extra is not set; pass --set data.extra=FILE.npz"),
    _set("data.subset=bogus:3", "data.subset bogus:3: no enabled plugin ranks 'bogus' subsets"), _bad("data.subset", "-5", "allowed: a positive count N"),
    _bad("data.subset", "0", "allowed: a positive count N"), _bad("data.on_device", "maybe", "allowed: true, false, auto"),
    _bad("data.dataset", "imagenet", "invalid value 'imagenet'"), _bad("data.augment", "perhaps", BOOL),
    _bad("data.download", "2", BOOL),
    _bad("model.width", "0", GE1), _bad("model.width", "wide", INT), _bad("model.normalize", "perhaps", BOOL),
    _bad("optim.lr", "0", GT0), _bad("optim.lr", "-0.1", GT0), _bad("optim.lr", "fast", NUM),
    _bad("optim.momentum", "1", "less than 1"), _bad("optim.momentum", "-0.1", "greater than or equal to 0"),
    _bad("optim.weight_decay", "-1", "greater than or equal to 0"), _bad("optim.schedule", "linear", "invalid value 'linear'"),
    _bad("optim.gamma", "0", GT0), _bad("optim.gamma", "2", "less than or equal to 1"),
    _bad("optim.pct_start", "0", GT0), _bad("optim.pct_start", "1", "less than 1"), _bad("optim.grad_clip", "0", GT0),
    _bad("optim.milestones", "x", "valid list"), _bad("optim.nesterov", "perhaps", BOOL),
    _set("optim.milestones=[10]", "invalid configuration: optim.milestones [10] lie outside the run's epochs 1..4"),
    _set("optim.milestones=[0]", "invalid configuration: optim.milestones [0] lie outside the run's epochs 1..4"),
    _set("optim.warmup_epochs=5", "invalid configuration: optim.warmup_epochs 5 must be shorter than the run's 5 epochs"),
    Case(("train", "--set", "optim.schedule=onecycle", "--set", "optim.warmup_epochs=1"), 1,
         "optim.warmup_epochs cannot be combined with optim.schedule=onecycle ... drop optim.warmup_epochs"),
    _bad("optim.warmup_epochs", "-1", "greater than or equal to 0"), _bad("optim.warmup_start", "0", GT0),
    _bad("attack.norm", "L3", "invalid value 'L3'"), _bad("attack.eps", "0", GT0), _bad("attack.eps", "-1", GT0),
    _bad("attack.eps", "2", "less than or equal to 1 (got 2) for attack.norm=Linf"),
    _bad("attack.eps", "1/0", "cannot read '1/0' as a number"), _bad("attack.eps", "abc", NUM),
    _bad("attack.step_size", "0", GT0), _bad("attack.step_size", "3", "less than or equal to 1"),
    _bad("attack.steps", "0", GE1), _bad("attack.steps", "ten", INT),
    _bad("attack.model_mode", "test", "invalid value 'test'"),
    _set("attack.norm=L2", "invalid configuration: attack: norm L2 needs an explicit attack.eps"),
    _bad("eval.n", "0", GE1), _bad("eval.pgd_steps", "0", GE1), _bad("eval.restarts", "0", GE1),
    _bad("eval.every", "0", GE1), _bad("eval.n", "all", INT),
    _bad("ema.decay", "0", GT0), _bad("ema.decay", "1", "less than 1"), _bad("ema.warmup", "perhaps", BOOL),
    _bad("speed.autocast", "fp16", "invalid value 'fp16'"), _bad("speed.channels_last", "perhaps", "invalid value 'perhaps' (allowed: true, false, auto)"),
    _bad("speed.compile", "perhaps", BOOL),
    _bad("checkpoint.every_steps", "0", GE1), _bad("checkpoint.every_steps", "often", INT),
    _bad("checkpoint.every_seconds", "0", GT0), _bad("checkpoint.every_seconds", "-5", GT0),
    *[_bad(k, "1", "unknown key") for k in ("attack.epz", "optim.lrr", "data.sizes", "eval.m", "ema.dcay", "speed.fast",
                                             "checkpoint.every", "model.depth", "foo")],
    _set("trainer.epochs=1", "invalid configuration: trainer: unknown key"),
    _set("attack=3", "invalid configuration: attack: Input should be a valid dictionary"),
    _set("plugins=trades", "invalid configuration: plugins: Input should be a valid list"),
    _set("options=3", "invalid configuration: options: Input should be a valid dictionary"),
    _set("recipe.name=1", "invalid configuration: recipe.name: Input should be a valid string"),
    Case(("train", "--set", "novalue"), 1, "--set 'novalue' needs the form key=value"),
    Case(("train", "--set", "=3"), 1, "--set '=3' has an empty key"),
    Case(("train", "--set", "attack.eps=0.1", "--set", "attack.eps.x=1"), 1, "--set 'attack.eps.x=1': eps is a value, not a section"),
]

FLAGS = [
    Case(("train", "--seed", "9223372036854775808"), 1, "invalid configuration: seed: Input should be less than"),
    Case(("train", "--seed", "-1"), 1, "invalid configuration: seed: Input should be greater than or equal to 0"),
    Case(("train", "--epochs", "0"), 1, "invalid configuration: epochs: Input should be greater than or equal to 1"),
    Case(("train", "--subset", "bogus"), 1, "invalid configuration: data.subset: invalid value 'bogus'"),
    Case(("train", "--dataset", "imagenet"), 1, "invalid configuration: data.dataset: invalid value 'imagenet'"),
    Case(("train", "--twin"), 1, "--twin needs --recipe NAME"),
    Case(("train", "--recipe", "nosuch/row"), 1, "unknown recipe 'nosuch/row' ... run 'advcore recipes' to list them"),
    Case(("train", "--resume"), 1, "--resume needs --out DIR"),
    Case(("train", "--fallback"), 1, "--fallback only applies with --resume"),
    Case(("train", "--allow-change"), 1, "--allow-change only applies with --resume"),
    Case(("train", "--config", "{tmp}/nope.toml"), 1, "nope.toml does not exist; pass an existing .toml or .yaml file"),
    Case(("train", "--config", "{tmp}/bad.toml"), 1, "bad.toml could not be parsed", setup="bad_toml"),
    Case(("train", "--config", "{tmp}/run.json"), 1, "run.json must end in .toml, .yaml or .yml", setup="json_config"),
    Case(("train", "--config", "{tmp}/list.yaml"), 1, "must hold a table of settings at the top level", setup="list_yaml"),
    Case(("train", "--config", "{tmp}/eps.toml"), 1, "invalid configuration: attack.eps: Input should be greater than 0",
         setup="eps_toml"),
    Case(("train", "--out", "{tmp}/empty", "--resume"), 1, "nothing to resume in", setup="empty_dir"),
    Case(("train", "--out", "{file}", "--resume"), 1, "nothing to resume in"),
    Case(("recipes", "nosuch/row"), 1, "unknown recipe 'nosuch/row' ... run 'advcore recipes' to list them"),
]

EVAL_VALUES = [
    Case(("eval", "{tmp}/missing"), 1, "missing not found; pass a run directory"),
    Case(("eval", "{file}", "--eps", "-1"), 1, "--eps -1: the budget must be a positive number"),
    Case(("eval", "{file}", "--eps", "0"), 1, "--eps 0: the budget must be a positive number"),
    Case(("eval", "{file}", "--eps", "abc"), 1, "--eps abc: the budget must be a positive number"),
    Case(("eval", "{file}", "--eps", "1/0"), 1, "--eps: cannot read '1/0' as a number"),
    Case(("eval", "{file}", "--eps", "nan"), 1, "--eps nan: the budget must be a positive number"),
    Case(("eval", "{file}", "--eps", "inf"), 1, "--eps inf: the budget must be a positive number"),
]

USAGE = [Case(args, 2, says) for args, says in [
    (("--bogus",), "No such option: --bogus"), (("nosuch",), "No such command 'nosuch'"), ((), "Usage: advcore"),
    (("train", "--bogus"), "No such option: --bogus"), (("train", "--epochs", "x"), "Invalid value for '--epochs'"),
    (("train", "--seed", "x"), "Invalid value for '--seed'"), (("train", "--plugin"), "requires an argument"),
    (("train", "--out"), "requires an argument"), (("train", "extra"), "Got unexpected extra argument"),
    (("eval",), "Missing argument 'checkpoint'"), (("eval", "r", "--n", "0"), "Invalid value for '--n'"),
    (("eval", "r", "--n", "-3"), "Invalid value for '--n'"), (("eval", "r", "--n", "many"), "Invalid value for '--n'"),
    (("eval", "r", "--pgd-steps", "0"), "Invalid value for '--pgd-steps'"),
    (("eval", "r", "--restarts", "0"), "Invalid value for '--restarts'"),
    (("eval", "r", "--batch-size", "0"), "Invalid value for '--batch-size'"),
    (("eval", "r", "--square-queries", "0"), "Invalid value for '--square-queries'"),
    (("eval", "r", "--step-size", "big"), "Invalid value for '--step-size'"), (("eval", "r", "--bogus"), "No such option"),
    (("eval", "r", "--width", "x"), "Invalid value for '--width'"), (("report",), "Missing argument 'sources"),
    (("plot",), "Usage: advcore plot"), (("plot", "nosuch"), "No such command 'nosuch'"),
    (("plot", "curves"), "Missing argument 'runs"), (("plot", "tradeoff"), "Missing argument 'sources"),
    (("plot", "sweep"), "Missing argument 'checkpoints"), (("plot", "sweep", "r", "--pgd-steps", "x"), "Invalid value"),
    (("margin",), "Missing argument 'standard'"), (("margin", "a"), "Missing argument 'robust'"),
    (("margin", "a", "b", "--n", "x"), "Invalid value for '--n'"), (("analyze",), "Usage: advcore analyze"),
    (("analyze", "difficulty"), "Missing argument 'run'"), (("analyze", "gap"), "Missing argument 'run'"),
    (("analyze", "gap", "r", "--n", "x"), "Invalid value for '--n'"), (("new-plugin",), "Missing argument 'name'"),
    (("recipes", "--bogus"), "No such option"), (("plugins", "--bogus"), "No such option"),
    (("plan", "--bogus"), "No such option"), (("report", "a", "--bogus"), "No such option"),
]]

RUNS = [  # these import torch: one small run directory is prepared once and copied per case
    Case(("eval", "{run}", "--attack", "pgd", "--n", "8"), 1, "is corrupt or truncated (checksum mismatch)", True, "truncate_tensors"),
    Case(("eval", "{run}", "--attack", "pgd", "--n", "8"), 1, "is corrupt or truncated (checksum mismatch)", True, "flip_byte"),
    Case(("eval", "{run}", "--attack", "pgd", "--n", "8"), 1, "which is missing; use another checkpoint", True, "drop_tensors"),
    Case(("eval", "{run}", "--attack", "pgd", "--n", "8"), 1, "is corrupt (not JSON)", True, "manifest_not_json"),
    Case(("eval", "{run}", "--attack", "pgd", "--n", "8"), 1, "is not an advcore format-1 checkpoint manifest", True, "manifest_list"),
    Case(("eval", "{run}", "--attack", "pgd", "--n", "8"), 1, "was edited or damaged", True, "edit_epoch"),
    Case(("train", "--out", "{run}", "--resume"), 1, "was edited or damaged", True, "drop_global_step"),
    Case(("train", "--out", "{run}", "--resume"), 1, "is corrupt or truncated (checksum mismatch)", True, "swap_tensors"),
    Case(("train", "--out", "{run}", "--resume"), 1, "checksum mismatch); use another checkpoint; or pass --fallback", True, "truncate_tensors"),
    Case(("train", "--out", "{run}", "--resume"), 1, "last.json is missing; or pass --fallback", True, "drop_last"),
    Case(("train", "--out", "{run}", "--resume", "--fallback"), 1, "no intact checkpoint left", True, "break_all"),
    Case(("train", "--out", "{run}", "--resume"), 1, "its config.json is missing", True, "drop_config"),
    Case(("train", "--out", "{run}", "--resume"), 1, "its config.json is not a valid run config", True, "garble_config"),
    Case(("train", "--out", "{run}", "--resume", "--dataset", "mnist"), 1, "would change data.dataset", True),
    Case(("train", "--out", "{run}", "--resume"), 1, "is in use by advcore process", True, "live_lock"),
    Case(("train", "--out", "{run}", "--epochs", "1"), 1, "already holds a run; pass --resume", True),
    Case(("train", "--out", "{file}", "--epochs", "1"), 1, "cannot write the run directory there (it is a file)"),
    Case(("train", "--out", "{file}/run", "--epochs", "1"), 1, "cannot write the run directory there"),
    Case(("train", "--plugin", "nosuch"), 1, "unknown plugin 'nosuch'; installed plugins:"),
    Case(("train", "--plugin", "fgsm-rs", "--plugin", "free"), 1, "'fgsm-rs' and 'free' both claim the adversary role"),
    Case(("plan", "--plugin", "fgsm-rs", "--plugin", "free"), 1, "'fgsm-rs' and 'free' both claim the adversary role"),
    Case(("train", "--set", "options.hat.beta=3"), 1, "plugin 'hat' is not enabled; add --plugin hat"),
    Case(("train", "--plugin", "trades", "--set", "options.trades.bet=1"), 1, "options.trades.bet: unknown key"),
    Case(("train", "--plugin", "trades", "--set", "options.trades.beta=-1"), 1, "options.trades.beta: Input should be greater"),
    Case(("train", "--set", "device=tpu"), 1, "device: invalid value 'tpu'"),
    Case(("train", "--set", "model.arch=vgg", "--subset", "32"), 1, "model.arch: unknown model 'vgg'"),
    Case(("train", "--subset", "32", "--set", "data.extra={tmp}/nan.npz"), 1, "images hold NaN or infinite values", setup="nan_extra"),
    Case(("train", "--subset", "32", "--set", "data.extra={tmp}/inf.npz"), 1, "images hold NaN or infinite values", setup="inf_extra"),
    Case(("train", "--subset", "32", "--set", "data.extra={tmp}/shape.npz"), 1, "images have shape (4, 1, 3, 5); expected [N, 1, 8, 8]", setup="shape_extra"),
    Case(("train", "--subset", "32", "--set", "data.extra={tmp}/none.npz"), 1, "none.npz does not exist"),
    Case(("train", "--subset", "32", "--set", "data.extra={tmp}/ok.npz", "--set", "data.batch_size=2", "--set",
          "data.extra_fraction=0.2"), 1, "data.extra_fraction=0.2 of a global batch of 2 leaves 2 training and 0 extra "
                                         "samples per batch; raise data.batch_size", setup="ok_extra"),
    Case(("train", "--dataset", "mnist", "--data-dir", "{tmp}/none"), 1, "data directory"),
    Case(("train", "--set", "speed.compile_backend=nosuch"), 1, "unknown torch.compile backend 'nosuch'"),
]

CASES = CONFIG + FLAGS + EVAL_VALUES + USAGE + RUNS

if __name__ == "__main__":  # the docs table, with the messages advcore prints now (python tests/catalogue.py RUN)
    import re
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_catalogue import materialise  # noqa: E402

    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            args, env = materialise(case, Path(tmp) / 'c', Path(sys.argv[1]) if len(sys.argv) > 1 else None)
            proc = subprocess.run([str(Path(sys.executable).with_name("advcore")), *args], capture_output=True,
                                  text=True, env=env)
            text = proc.stderr.strip().splitlines()
            line = re.sub(r"/\S*/(tmp|run)\w*", "DIR", text[-1] if text else "")
            shown = " ".join(a.replace(tmp, "DIR") for a in case.args).replace("|", "\\|")
            step = f" ({case.setup.replace('_', ' ')})" if case.setup else ""
            print(f"| `advcore {shown}`{step} | {case.code} | `{line.replace('|', '/')}` |")
