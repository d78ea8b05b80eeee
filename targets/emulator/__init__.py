"""Bit-exact fixed-point emulator of Loihi-style CUBA cores (Lava 0.10 fixed_pt semantics), batched."""

from spikedeploy.targets.emulator.engine import Program, compile_emulator, simulate_emulator
from spikedeploy.targets.loihi_arith import LOIHI2, Arith, arith_for, prepare_weights, sign_mode_of

__all__ = ["LOIHI2", "Arith", "arith_for", "prepare_weights", "sign_mode_of", "simulate_emulator", "compile_emulator", "Program"]
