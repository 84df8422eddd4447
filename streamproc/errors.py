"""The rejection type shared by every parser and validator: a machine-readable reason plus detail."""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why an input was sent to the dead-letter topic. Values are stable: dashboards and alerts key on them."""

    malformed_json = "malformed_json"
    unknown_event_type = "unknown_event_type"
    missing_field = "missing_field"
    invalid_field = "invalid_field"
    unsupported_version = "unsupported_version"
    key_mismatch = "key_mismatch"
    unknown_call = "unknown_call"
    call_ended = "call_ended"
    out_of_order = "out_of_order"
    invalid_transition = "invalid_transition"
    # audio frames
    bad_audio_header = "bad_audio_header"
    unknown_encoding = "unknown_encoding"
    odd_byte_count = "odd_byte_count"
    sample_rate_changed = "sample_rate_changed"
    format_changed = "format_changed"  # encoding or channel count changed mid-stream
    oversize_frame = "oversize_frame"
    session_limit = "session_limit"
    # anything unexpected inside the worker: still dead-lettered, never a crash
    internal_error = "internal_error"


class InputRejected(Exception):
    """Raised by parsers and state machines for input that must go to the dead-letter topic."""

    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
