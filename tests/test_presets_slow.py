"""The presets reach the losses of the recipes they reproduce (minutes on 2 CPU cores): ``pytest -m slow``."""

import pytest

from gptlab.config import preset
from gptlab.train import train


@pytest.mark.slow
@pytest.mark.parametrize("name, ceiling", [("bigram", 2.55), ("lecture", 2.10), ("cpu", 1.92)])
def test_preset_reaches_its_recipe_loss(corpus, name, ceiling):
    cfg = preset(name)
    cfg.train.threads = 2
    result = train(cfg, corpus)
    print(f"{name}: val {result.final_val_loss:.4f} in {result.wall_time:.1f} s")
    assert result.final_val_loss <= ceiling
