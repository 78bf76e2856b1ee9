"""Standard training: CE on clean inputs, no adversarial examples."""

from advcore import PluginInfo, hookimpl


@hookimpl
def advcore_plugin_info():
    return PluginInfo(summary="standard training: CE on clean inputs, no attack", roles=("objective",))


@hookimpl
def advcore_loss_terms(step):
    return [step.term("ce_clean", step.supervised_loss("clean"))]
