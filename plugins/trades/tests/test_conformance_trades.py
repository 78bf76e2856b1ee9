"""trades passes the conformance kit and composes as an objective should."""

from advcore.testing import check_plugin

SAME_ROLE = ['standard', 'pgd-at', 'mart', 'alp']
"""Built-in plugins that also claim the objective role: refused, naming both."""
PARTNERS = ['pgd', 'fgsm-rs', 'free']
"""Built-in adversaries it must run with."""


def test_trades_passes_the_conformance_kit():
    report = check_plugin("trades")
    assert {"contracts", "determinism", "checkpoint round-trip"} <= set(report.passed)
    assert sorted(report.refused) == sorted(SAME_ROLE)
    for partner, message in report.refused.items():
        assert "trades" in message and partner in message and "objective" in message
    assert {f"with {p}" for p in PARTNERS} <= set(report.passed)
