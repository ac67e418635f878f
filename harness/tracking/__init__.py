"""Tracking: a small tracker interface, with MLflow (imported lazily) and null/in-memory implementations."""

from harness.tracking.base import FAILED, FINISHED, KILLED, MemoryTracker, NullTracker, Tracker

__all__ = ["FAILED", "FINISHED", "KILLED", "MemoryTracker", "NullTracker", "Tracker"]
