"""Credentials out of text: the userinfo and secret query values of every URI in a line, replaced by `***`.

Below everything (harness.errors builds its messages with it), so it imports nothing of the harness.

A URI is found by its `scheme://` (also as Hydra escapes it in the overrides it logs: `scheme\\://`) and runs to the
next whitespace or the next URI. Its userinfo is read the way the parsers that will use it read it, whichever reads
more:
- RFC 3986 (urllib, requests: tracking servers): the authority runs to the first `/`, `?` or `#`; its userinfo to
  the authority's last `@` (a password holding an unescaped `@`: `alice:p@ss@host`).
- SQLAlchemy (every database URI MLflow opens): the user runs to the first `:`, the password to the next `@`, so a
  password may hold `/`, `?` or `#` (`postgresql://u:p/w@h/db` connects as u with password p/w). Where the
  authority has no `@` but a `:`, the userinfo runs to the next `@` of the URI (and on to the last `@` of the host
  after it); for a web URI only when what follows the `:` is no port.
A path with an `@` after a web host (`https://h:5000/users/a@b`, `https://medium.com/@user`) stays; text that holds
no `scheme://` (an email address) stays. Query values whose key names a secret are replaced wherever a `?key=`,
`&key=` or `;key=` appears.
"""

REDACTED = "***"
# Query keys whose values are secrets: a key holding any of these words, case-insensitive (`password`, `api_key`,
# `X-Amz-Signature`, `access_token`, `sslpassword`, `client_secret`, `auth`, `sig`).
SECRET_WORDS = ("pass", "pwd", "token", "secret", "key", "auth", "credential", "signature", "session")
SECRET_NAMES = ("sig", "pw")
# Read as RFC 3986 URIs (requests, urllib); any other scheme as SQLAlchemy reads a database URI.
WEB_SCHEMES = ("http", "https", "ws", "wss", "ftp", "databricks")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_QUERY_SEPARATORS = "&;"
MAX_KEY = 64  # a query key longer than this is not read as one (keeps the scan linear in the text)
_VALUE_ENDS = frozenset("&;#'\"")


def redact(text: str) -> str:
    """`text` with the credentials of every URI in it replaced by `***`.

    `http://user:secret@host:5000/` -> `http://***@host:5000/`; `...?password=x&a=1` -> `...?password=***&a=1`.
    Applies to whole lines too (`tracking.uri=http://u:p@h/ seed=1`, a list's repr). Text without URIs and without
    `?key=`/`&key=` pairs comes back unchanged.
    """
    if "://" not in text and "=" not in text:
        return text
    out: list[str] = []
    done = 0
    for scheme, rest, end in _uris(text):
        out.append(text[done:rest])
        out.append(_redact_uri(scheme, text[rest:end]))
        done = end
    out.append(text[done:])
    return _redact_query("".join(out))


def _uris(text: str) -> list[tuple[str, int, int]]:
    """(scheme, position after `://`, end) of every URI in `text`, in order: a URI ends at whitespace or the next
    one."""
    marks = []
    at = text.find("://")
    while at >= 0:
        start = at
        while start > 0 and text[start - 1] == "\\":  # Hydra's escape: http\://
            start -= 1
        scheme_end = start
        while start > 0 and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        if scheme_end > start and text[start].isalpha():
            marks.append((start, text[start:scheme_end].lower(), at + 3))
        at = text.find("://", at + 3)
    found = []
    for index, (_, scheme, rest) in enumerate(marks):
        end = marks[index + 1][0] if index + 1 < len(marks) else len(text)
        space = next((i for i in range(rest, end) if text[i].isspace()), end)
        found.append((scheme, rest, space))
    return found


def _redact_uri(scheme: str, rest: str) -> str:
    """What follows `scheme://` with its userinfo replaced."""
    end = _userinfo_end(rest, web=scheme in WEB_SCHEMES)
    return rest if end is None else REDACTED + rest[end:]


def _userinfo_end(rest: str, web: bool) -> int | None:
    """The position of the `@` that ends the userinfo of `rest` (the URI after `scheme://`), or None."""
    authority_end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        return at
    colon = rest.find(":", 0, authority_end)
    if colon < 0 or rest.startswith("["):  # a host alone, or an IPv6 literal `[::1]:5000`
        return None
    # host:port is no userinfo for a web URI (`h\:5000` as Hydra escapes it); SQLAlchemy reads `u:1234/5@h` as
    # user u, password 1234/5.
    if web and rest[colon + 1 : authority_end].lstrip("\\").isdigit():
        return None
    at = rest.find("@", colon)
    if at < 0:
        return None
    host_end = next((i for i in range(at + 1, len(rest)) if rest[i] in "/?#"), len(rest))
    return rest.rfind("@", at, host_end)


def _redact_query(text: str) -> str:
    """Every `?key=value`, `&key=value` or `;key=value` whose key names a secret, with the value replaced."""
    out: list[str] = []
    done = 0
    for index, char in enumerate(text):
        if char not in "?" + _QUERY_SEPARATORS or index < done:
            continue
        equals = text.find("=", index + 1, index + 2 + MAX_KEY)
        if equals < 0:
            continue
        key = text[index + 1 : equals]
        if not key or any(c.isspace() or c in "?&;=" for c in key) or not _is_secret(key):
            continue
        value_end = next(
            (i for i in range(equals + 1, len(text)) if text[i] in _VALUE_ENDS or text[i].isspace()),
            len(text),
        )
        out.append(text[done : equals + 1] + REDACTED)
        done = value_end
    out.append(text[done:])
    return "".join(out)


def _is_secret(key: str) -> bool:
    name = key.replace("\\", "").lower()
    return name in SECRET_NAMES or any(word in name for word in SECRET_WORDS)
