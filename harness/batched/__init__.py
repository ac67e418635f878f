"""Batched trials: K jobs that differ only in numbers train as one program, each exactly as it would alone.

spec.TrialSpec and spec.group_key say which jobs can share a group; engine.train_group trains a group and writes
each trial's record; models and optim hold the stacked model families and the batched optimizer updates.
"""
