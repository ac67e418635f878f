"""The one error the report shows its users as a single line (no traceback)."""


class ReportError(Exception):
    """The report cannot be made: the message says why and, where it can, what to do."""
