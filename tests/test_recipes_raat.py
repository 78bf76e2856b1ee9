"""The RAAT recipes (core/advcore/recipe_files/raat) hold what the RAAT paper states: App. D.1's training
setup, Table 4's objectives with their weights, and Table 1's ResNet-18 numbers (where code and
paper differ, the recipes take the code's form: tests/test_recipes_code_forms.py).

Every row quotes the paper text that states the value; when the paper texts are present (the
shared checkout beside the repository), the quote must occur in the paper.
"""


import pytest

from advcore.cli.recipes import find_recipe
from recipe_quotes import assert_recipe_says

PAPER = "003_e22cbcdaa13759c1.txt"

DATASETS = ("cifar10", "cifar100")
METHODS = ("pgd-at", "trades", "mart", "cons-at", "raat", "raatpp")
ALL = [f"raat/{d}-{m}" for d in DATASETS for m in METHODS]

# App. D.1, shared by every ResNet-18 row of Table 1.
Q_SCHEDULE = ("initial learning rate 0.1, total 110 training epochs with learning rate decay by a factor of 0.1 "
              "at 100 and 105 epochs")
Q_OPTIM = r"we use SGD optimizer with momentum 0.9, batch size 128, weight decay 5×1045\!\times\!10^{-4}"
Q_ATTACK = (r"maximal perturbation budget ϵ=8/255\epsilon=8/255, we adopt step size α=2/255\alpha=2/255 "
            r"with 10-step adversaries")
Q_LAMBDA = r"we set the regularization parameter λ=6\lambda=6 for TRADES and MART, as well as λ=1\lambda=1 for Cons-AT and ours"
Q_ETA_GAMMA = r"we use default η=0.1\eta=0.1 to acquire boundary samples and fix γ=0.75\gamma=0.75 for the beta distribution"
Q_BEST = "acquired on the best checkpoint achieving the highest PGD-10 accuracy"
Q_AUGMENT = "random crop with 4-pixel zero padding and random horizontal flip with 50% of probability"
Q_RANGE = "we normalize all natural images into [0, 1]"
Q_MODEL = "we evaluate RAAT and RAAT++ on ResNet-18 [19]"

SHARED = [
    ("epochs", 110, Q_SCHEDULE),
    ("optim.lr", 0.1, Q_SCHEDULE),
    ("optim.schedule", "step", Q_SCHEDULE),
    ("optim.milestones", [100, 105], Q_SCHEDULE),
    ("optim.gamma", 0.1, Q_SCHEDULE),
    ("optim.momentum", 0.9, Q_OPTIM),
    ("optim.weight_decay", 5e-4, Q_OPTIM),
    ("data.batch_size", 128, Q_OPTIM),
    ("attack.eps", "8/255", Q_ATTACK),
    ("attack.step_size", "2/255", Q_ATTACK),
    ("attack.steps", 10, Q_ATTACK),
    ("data.augment", True, Q_AUGMENT),
    ("model.normalize", False, Q_RANGE),
    ("model.arch", "resnet18", Q_MODEL),
    ("recipe.checkpoint", "best", Q_BEST),
    ("eval.pgd_steps", 10, Q_BEST),
]

SPECIFIC = [
    ("trades", "options.trades.beta", 6.0, Q_LAMBDA),
    ("mart", "options.mart.beta", 6.0, Q_LAMBDA),
    ("cons-at", "options.cons-at.lam", 1.0, Q_LAMBDA),
    ("raat", "options.raat.lam", 1.0, Q_LAMBDA),
    ("raat", "options.raat.eta", 0.1, Q_ETA_GAMMA),
    ("raat", "options.raat.gamma", 0.75, Q_ETA_GAMMA),
    ("raat", "plugins", ["raat"], "Notably, due to their specific surrogate loss functions, RAAT and RAAT++ can be "
                                  "viewed as natural extensions of PGD-AT and MART, respectively."),
    ("raatpp", "plugins", ["raat", "mart"], "Notably, due to their specific surrogate loss functions, RAAT and RAAT++ "
                                            "can be viewed as natural extensions of PGD-AT and MART, respectively."),
    ("raatpp", "options.raat.lam", 1.0, Q_LAMBDA),
    ("raatpp", "options.raat.eta", 0.1, Q_ETA_GAMMA),
    ("raatpp", "options.raat.gamma", 0.75, Q_ETA_GAMMA),
    # the forms of the authors' code (dicar, reduced, boundary, RAAT++ mart.beta, Cons-AT T) are
    # checked against reference-notes.md in tests/test_recipes_code_forms.py
]

# Table 1, ResNet-18 columns: clean, PGD-10, PGD-100, C&W, AA (means of three runs).
REPORTED = [
    ("cifar10-pgd-at", (82.92, 51.81, 50.34, 48.51, 46.74),
     r"CIFAR-10 PGD-AT 82.92±\pm0.23 51.81±\pm0.15 50.34±\pm0.14 48.51±\pm0.16 46.74±\pm0.37"),
    ("cifar10-trades", (79.67, 52.14, 51.88, 49.33, 47.62),
     r"TRADES 79.67±\pm0.34 52.14±\pm0.26 51.88±\pm0.09 49.33±\pm0.13 47.62±\pm0.17"),
    ("cifar10-mart", (77.93, 53.61, 52.83, 48.66, 46.70),
     r"MART 77.93±\pm0.26 53.61±\pm0.14 52.83±\pm0.30 48.66±\pm0.31 46.70±\pm0.33"),
    ("cifar10-cons-at", (83.42, 53.20, 51.68, 49.37, 47.72),
     r"Cons-AT 83.42±\pm0.21 53.20±\pm0.23 51.68±\pm0.43 49.37±\pm0.25 47.72±\pm0.22"),
    ("cifar10-raat", (83.69, 54.55, 53.50, 51.07, 47.94),
     r"\cellcolorblack!10RAAT \cellcolorblack!1083.69±\pm0.27 \cellcolorblack!1054.55±\pm0.14 "
     r"\cellcolorblack!1053.50±\pm0.23 \cellcolorblack!1051.07±\pm0.12 \cellcolorblack!1047.94±\pm0.25"),
    ("cifar10-raatpp", (79.70, 54.87, 53.87, 51.64, 47.50),
     r"\cellcolorblack!10RAAT++ \cellcolorblack!1079.70±\pm0.24 \cellcolorblack!1054.87±\pm0.16 "
     r"\cellcolorblack!1053.87±\pm0.11 \cellcolorblack!1051.64±\pm0.12 \cellcolorblack!1047.50±\pm0.18"),
    ("cifar100-pgd-at", (56.56, 29.27, 28.71, 26.62, 25.02),
     r"CIFAR-100 PGD-AT 56.56±\pm0.28 29.27±\pm0.29 28.71±\pm0.17 26.62±\pm0.16 25.02±\pm0.19"),
    ("cifar100-trades", (55.39, 29.61, 29.28, 27.02, 24.51),
     r"TRADES 55.39±\pm0.17 29.61±\pm0.36 29.28±\pm0.38 27.02±\pm0.34 24.51±\pm0.21"),
    ("cifar100-mart", (49.83, 30.60, 30.31, 27.27, 25.00),
     r"MART 49.83±\pm0.13 30.60±\pm0.19 30.31±\pm0.24 27.27±\pm0.26 25.00±\pm0.22"),
    ("cifar100-cons-at", (58.53, 29.99, 29.13, 26.98, 25.39),
     r"Cons-AT 58.53±\pm0.25 29.99±\pm0.23 29.13±\pm0.26 26.98±\pm0.16 25.39±\pm0.30"),
    ("cifar100-raat", (58.53, 29.87, 29.24, 27.06, 25.65),
     r"\cellcolorblack!10RAAT \cellcolorblack!1058.53±\pm0.14 \cellcolorblack!1029.87±\pm0.20 "
     r"\cellcolorblack!1029.24±\pm0.21 \cellcolorblack!1027.06±\pm0.12 \cellcolorblack!1025.65±\pm0.26"),
    ("cifar100-raatpp", (53.12, 31.43, 31.11, 28.97, 25.32),
     r"\cellcolorblack!10RAAT++ \cellcolorblack!1053.12±\pm0.18 \cellcolorblack!1031.43±\pm0.10 "
     r"\cellcolorblack!1031.11±\pm0.13 \cellcolorblack!1028.97±\pm0.16 \cellcolorblack!1025.32±\pm0.08"),
]
COLUMNS = ("clean_acc", "pgd10_acc", "pgd100_acc", "cw20_acc", "autoattack_acc")

ROWS = (
    [(name, key, expected, quote) for name in ALL for key, expected, quote in SHARED]
    + [(f"raat/{d}-{m}", key, expected, quote) for d in DATASETS for m, key, expected, quote in SPECIFIC]
    + [(f"raat/{row}", f"reported.{col}", v, quote) for row, values, quote in REPORTED
       for col, v in zip(COLUMNS, values)]
)


@pytest.mark.parametrize("name,key,expected,quote", ROWS, ids=[f"{r[0]}:{r[1]}" for r in ROWS])
def test_recipe_value_is_the_papers(name, key, expected, quote):
    assert_recipe_says(name, key, expected, quote, PAPER, with_defaults=True)  # advcore's defaults filled in


def test_every_table_1_resnet18_row_has_a_recipe():
    names = {row for row, _, _ in REPORTED}
    assert names == {n.removeprefix("raat/") for n in ALL}
    for name in ALL:
        recipe = find_recipe(name)
        assert set(recipe.reported) == set(COLUMNS)
        assert recipe.attacks == ("pgd-10", "pgd-100", "cw-20", "autoattack")


def test_the_paper_form_switches_are_spelled_out_in_the_notes():
    """The recipes follow the authors' code (it produced Table 1); the notes name the paper's switches."""
    for dataset in DATASETS:
        raat, raatpp = find_recipe(f"raat/{dataset}-raat"), find_recipe(f"raat/{dataset}-raatpp")
        for recipe in (raat, raatpp):
            for switch in ("options.raat.dicar=paper", "options.raat.reduced=attack", "options.raat.boundary=paper"):
                assert switch in recipe.notes
        assert "options.mart.beta=1" in raatpp.notes
        assert "options.cons-at.temperature=1" in find_recipe(f"raat/{dataset}-cons-at").notes
