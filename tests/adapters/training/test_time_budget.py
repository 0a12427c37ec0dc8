"""The training time budget stops after the step that crosses it, and asks for a save."""

from __future__ import annotations

import time
from types import SimpleNamespace

from lorafleet.adapters.training.train import time_budget_callback


def test_budget_stops_and_saves() -> None:
    callback = time_budget_callback(minutes=0.001)  # 60 ms
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    state = SimpleNamespace(global_step=1)
    callback.on_train_begin(None, state, control)
    callback.on_step_end(None, state, control)
    assert control.should_training_stop is False
    time.sleep(0.1)
    state.global_step = 2
    callback.on_step_end(None, state, control)
    assert control.should_training_stop is True and control.should_save is True
