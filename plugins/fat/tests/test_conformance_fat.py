"""fat passes the conformance kit and composes as a base adversary should."""

from advcore.testing import check_plugin

SAME_ROLE = ["pgd", "fgsm-rs", "free"]
"""Built-in plugins that also claim the adversary role: refused, naming both."""
PARTNERS = ["standard", "pgd-at", "trades", "mart", "alp"]


def test_fat_passes_the_conformance_kit():
    report = check_plugin("fat")
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)
    assert sorted(report.refused) == sorted(SAME_ROLE)
    for partner, message in report.refused.items():
        assert "fat" in message and partner in message and "adversary" in message
    assert {f"with {p}" for p in PARTNERS} <= set(report.passed)
