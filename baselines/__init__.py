"""Re-implemented baseline methods, one module each.

``PLUGINS`` maps model names to lazy ``module:attr`` targets, so listing models imports no
model code. Adding a method: one new module here and one line below.
"""

PLUGINS: dict[str, str] = {
    "cnnspot": "baselines.cnnspot:CNNSpot",
    "univfd": "baselines.univfd:UnivFD",
    "npr": "baselines.npr:NPR",
    "fredect": "baselines.fredect:FreDect",
    "pscc_net": "baselines.pscc_net:PSCCNet",
    "gram_net": "baselines.gram_net:GramNet",
    "fusing": "baselines.fusing:Fusing",
    "mvss_net": "baselines.mvss_net:MVSSNet",
    "hifi_net": "baselines.hifi_net:HiFiNet",
    "trufor": "baselines.trufor:TruFor",
    "lgrad": "baselines.lgrad:LGrad",
    "lnp": "baselines.lnp:LNP",
    "antifakeprompt": "baselines.antifakeprompt:AntifakePrompt",
}
