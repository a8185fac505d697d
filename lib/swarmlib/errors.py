"""The error tree. Each error carries what a person needs to act on it."""

from __future__ import annotations

from collections.abc import Sequence


class SwarmError(Exception):
    """Base of every build-swarm error."""

    code = "error"
    status = 500


class ConfigError(SwarmError):
    """Bad configuration: the daemon prints one line and exits non-zero."""

    code = "bad_config"


class BadRequest(SwarmError):
    code = "bad_request"
    status = 400


class BadSubmission(BadRequest):
    """A submission with bad lines; nothing of it was queued."""

    def __init__(self, lines: Sequence[tuple[int, str, str]]) -> None:
        self.lines = list(lines)
        parts = [f"line {n}: {why}" for n, _text, why in self.lines]
        super().__init__("; ".join(parts))


class NotFound(SwarmError):
    code = "not_found"
    status = 404


class Conflict(SwarmError):
    code = "conflict"
    status = 409


class StaleLease(Conflict):
    """A report made with a lease that is no longer the build's current one."""

    code = "stale_lease"

    def __init__(self, build_id: str, why: str = "lease is no longer valid") -> None:
        self.build_id = build_id
        super().__init__(f"build {build_id}: {why}")


class SessionSuperseded(Conflict):
    code = "session_superseded"


class JournalCorrupt(SwarmError):
    """A damaged record that is not a torn tail: start-up refuses."""

    code = "journal_corrupt"

    def __init__(self, path: str, offset: int, why: str) -> None:
        self.path = path
        self.offset = offset
        self.why = why
        super().__init__(
            f"journal {path} is damaged at byte offset {offset}: {why}; "
            f"run 'swarmd journal check --state-dir DIR' and, after a backup, "
            f"'swarmd journal repair --truncate-at-damage --state-dir DIR'"
        )


class JournalRecordInvalid(JournalCorrupt):
    """A complete, checksummed record that is not a valid event (a field missing, of the wrong
    type, misspelt, or an unknown event type): start-up refuses and changes nothing."""

    code = "journal_record_invalid"

    def __init__(self, path: str, offset: int, seq: int | None, field: str, why: str) -> None:
        self.seq = seq
        self.field = field
        where = f"record seq {seq}" if seq is not None else "record"
        what = f"field {field!r}: {why}" if field else why
        self.path = path
        self.offset = offset
        self.why = f"{where} is not a valid event: {what}"
        # Not JournalCorrupt's advice: the frame is sound, so repair finds no damage, and
        # cutting the journal here would throw away acknowledged work.
        SwarmError.__init__(
            self,
            f"journal {path}, byte offset {offset}: {self.why}. The record is intact but this "
            f"swarmd cannot read it: usually a journal written by a newer swarmd (run that "
            f"version again), else report it with the record ('swarmd journal check "
            f"--state-dir DIR' names it); do not truncate the journal, that loses acknowledged "
            f"work")


class JournalWriteFailed(SwarmError):
    """A write or fsync of the journal failed: fatal, the daemon exits."""

    code = "journal_write_failed"
