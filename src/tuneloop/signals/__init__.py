"""Signals: feedback → rewards with confidence, preference pairs, KTO labels, SFT rows, held-out split."""

from tuneloop.signals.build import Signals, build_signals
from tuneloop.signals.policy import RewardPolicy

__all__ = ["RewardPolicy", "Signals", "build_signals"]
