"""User-facing errors: a message, a hint and the process exit code."""

from __future__ import annotations


#: an error is one readable line: longer messages (a 5,000-character value quoted back) keep both ends
MAX_MESSAGE = 400


def safe_text(s: str) -> str:
    """``s`` encodable as UTF-8, so no output encoding or renderer can fail on it: lone surrogates (an
    undecodable file name, a hostile exception message) become ``\\udcff`` escapes."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def describe_exception(e: BaseException) -> str:
    """``str(e)``, or what the exception is when its ``__str__`` raises: recorded by its type, never lost."""
    try:
        return str(e)
    except BaseException as inner:  # noqa: BLE001 - a hostile __str__ may raise anything
        return f"<{type(e).__name__} whose str() raised {type(inner).__name__}>"


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (made safe to print), its middle elided past ``limit`` characters (saying how much
    was cut)."""
    text = safe_text(" ".join(str(text).split("\n")))
    if len(text) <= limit:
        return text
    keep = (limit - 30) // 2
    return f"{text[:keep]}...[{len(text) - 2 * keep:,} characters]...{text[-keep:]}"


class LoadprofError(Exception):
    """An error the CLI prints without a traceback and exits with ``exit_code``."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        message = shorten(message)
        hint = shorten(hint) if hint is not None else None
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class SpecError(LoadprofError):
    """Bad input (YAML, CLI value): exit code 2, nothing runs."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message, hint=hint, exit_code=2)
