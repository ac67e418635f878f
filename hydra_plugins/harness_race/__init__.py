"""`hydra/sweeper=race`: a grid raced over its seeds (harness.sweep.race), each round one launch of any launcher.

Hydra imports every module under the `hydra_plugins` namespace package at start-up (for every command), so these
modules import only Hydra and OmegaConf at the top; the harness is imported when a sweep launches.
"""
