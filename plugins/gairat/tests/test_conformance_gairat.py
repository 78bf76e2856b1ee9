"""gairat passes the conformance kit and composes with the built-in objectives and adversaries."""

from advcore.testing import check_plugin

PARTNERS = ["standard", "pgd-at", "trades", "mart", "alp", "pgd"]


def test_gairat_passes_the_conformance_kit():
    report = check_plugin("gairat")
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)
    assert report.refused == {}
    assert {f"with {p}" for p in PARTNERS} <= set(report.passed)


def test_gairat_with_weights_on_from_the_start_passes_with_the_adversaries_that_report_steps():
    report = check_plugin("gairat", options={"begin_epoch": 0}, partners=["pgd-at", "trades", "mart", "pgd", "fat"])
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)
    assert {f"with {p}" for p in ["pgd-at", "trades", "mart", "pgd", "fat"]} <= set(report.passed)
