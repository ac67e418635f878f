"""The harness's Hydra plugins: `hydra/launcher=batched` and the default sweeper `hydra/sweeper=harness`.

Hydra imports every module under the `hydra_plugins` namespace package at start-up (for every command), so these
modules import only Hydra and OmegaConf at the top; the harness is imported when a sweep launches.
"""
