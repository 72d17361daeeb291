"""The one error type users see: a full sentence that names the problem and the fix."""


class LabelcleanError(Exception):
    """Raised for anything the user can fix: bad input files, bad options, a broken run directory.

    The CLI prints ``error: <message>`` and exits with status 1; the message must
    therefore be a complete, actionable sentence on one line.
    """
