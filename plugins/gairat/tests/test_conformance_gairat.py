"""gairat passes the conformance kit and composes with the built-in objectives and adversaries."""

from advcore.testing import check_plugin

PARTNERS = ["standard", "pgd-at", "trades", "mart", "alp", "pgd"]


def test_gairat_passes_the_conformance_kit():
    report = check_plugin("gairat")
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)
    assert report.refused == {}
    assert {f"with {p}" for p in PARTNERS} <= set(report.passed)
