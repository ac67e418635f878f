"""Tracking: the tracker interface, a null tracker, and the tracking port (port.py) every store operation goes
through."""

from harness.tracking.base import FAILED, FINISHED, KILLED, NullTracker, Tracker

__all__ = ["FAILED", "FINISHED", "KILLED", "NullTracker", "Tracker"]
