"""fast-atta passes the conformance kit and composes as a base adversary should."""

from advcore.testing import check_plugin

SAME_ROLE = ["pgd", "fgsm-rs", "free"]
"""Built-in plugins that also claim the adversary role: refused, naming both."""
PARTNERS = ["pgd-at", "trades", "mart", "alp", "standard"]
"""Built-in objectives it must run with."""


def test_fast_atta_passes_the_conformance_kit():
    report = check_plugin("fast-atta")
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)
    assert sorted(report.refused) == sorted(SAME_ROLE)
    for partner, message in report.refused.items():
        assert "fast-atta" in message and partner in message and "adversary" in message
    assert {f"with {p}" for p in PARTNERS} <= set(report.passed)
