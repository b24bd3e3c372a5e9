"""Blind restoration: a small network names what is wrong with each photo, so restore can pick the prompt."""

from .detector import (
    CHAIN,
    DEFAULT_DETECTOR,
    LOW_CONFIDENCE,
    PRESENT,
    RESTORE_ORDER,
    AutoPolicy,
    Detection,
    Detector,
    decide,
    known_families,
    noise_prompt,
    parse_chain,
    plan_prompts,
)
from .network import FAMILIES, DetectorConfig, DetectorNet

__all__ = ["CHAIN", "DEFAULT_DETECTOR", "FAMILIES", "LOW_CONFIDENCE", "PRESENT", "RESTORE_ORDER", "AutoPolicy",
           "Detection",
           "Detector", "DetectorConfig", "DetectorNet", "decide", "known_families", "noise_prompt", "parse_chain",
           "plan_prompts"]
