"""Networks declare their own contract in models/ (genesis_jax.models.spec): the rooms that use a network (training,
pretexts, evaluation, active learning, the config checks) name none and hold no parameter-path rule. This is the
issue's check anyone can run, kept true:

    grep -rnE '"(unetpp|genesis_unet|genesis_classifier)"|"encoder_' genesis_jax/train genesis_jax/evaluation \\
        genesis_jax/active genesis_jax/config_checks.py

widened to every registered network's name, either quote, and the pretexts' package."""

import re
from pathlib import Path

from genesis_jax.models import MODELS

PACKAGE = Path(__file__).resolve().parents[2] / "genesis_jax"
ROOMS = ("train", "pretext", "evaluation", "active", "config_checks.py")


def network_rules(text: str) -> list[str]:
    names = "|".join(re.escape(n) for n in sorted(MODELS))
    pattern = re.compile(rf"""(["'])({names})\1|["']encoder_""")
    return [line.strip() for line in text.splitlines() if pattern.search(line)]


def test_the_pattern_finds_what_it_must():
    assert network_rules('if name == "unetpp":') and network_rules("p.startswith('encoder_')")
    assert network_rules(f"spec = {sorted(MODELS)[0]!r}")
    assert not network_rules('MODELS[config.model.name]  # "unetpp_liver" config') and not network_rules("x = 1")


def test_no_network_name_or_parameter_path_rule_outside_models():
    files = [p for room in ROOMS for p in ([PACKAGE / room] if room.endswith(".py") else
                                            sorted((PACKAGE / room).rglob("*.py")))]
    assert len(files) > 20, files
    hits = {str(p.relative_to(PACKAGE)): found for p in files if (found := network_rules(p.read_text()))}
    assert not hits, f"ask the network's spec in genesis_jax/models/ instead: {hits}"
