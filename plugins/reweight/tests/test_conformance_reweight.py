"""reweight passes the conformance kit and composes with every built-in objective and adversary."""

from advcore.testing import check_plugin

PARTNERS = ["standard", "pgd-at", "trades", "mart", "alp", "pgd", "fgsm-rs", "free"]


def test_reweight_passes_the_conformance_kit():
    report = check_plugin("reweight")
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)
    assert report.refused == {}
    assert {f"with {p}" for p in PARTNERS} <= set(report.passed)
