"""Detectors: one module per family, each a pure function or small state machine (input → alerts)."""
