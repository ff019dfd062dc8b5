"""Who may call a medseg server, and how often: bearer tokens (from a tokens file or one token), each with an
optional rate limit, checked by one ASGI middleware (``TokenAuth``) that both the prediction service and the
interactive page use.

Tokens file: one token per line (``#`` comments and blank lines ignored; every token gets the server's default
rate), or JSON ``{"tokens": [{"token": "...", "name": "slicer", "requests_per_minute": 60, "burst": 10}]}``
(``requests_per_minute`` null: no limit). Tokens are compared with ``hmac.compare_digest`` against every known
token, so that the time a check takes does not tell how much of a guess was right.
"""

from __future__ import annotations

import hmac
import json
import math
import threading
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence
from urllib.parse import parse_qs

from medseg.errors import MedsegError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
MIN_TOKEN_CHARACTERS = 8


@dataclass(frozen=True)
class Token:
    """A caller's secret, the name it is logged and rate-limited under, and its rate (None: unlimited)."""

    secret: str
    name: str
    requests_per_minute: float | None = None
    burst: int | None = None  # requests allowed at once (default: a tenth of a minute's, at least 1)


class RateLimiter:
    """A token bucket per caller name: ``requests_per_minute`` refill continuously, up to ``burst`` at once.
    Thread-safe; the clock is passed in so tests need not sleep."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens left, time of that count)
        self._lock = threading.Lock()

    def retry_after(self, token: Token) -> float:
        """0 when ``token`` may make one more request now (and counts it); else the seconds until it may."""
        if token.requests_per_minute is None:
            return 0.0
        rate = token.requests_per_minute / 60.0
        capacity = float(token.burst or max(1, math.ceil(token.requests_per_minute / 10)))
        now = self.clock()
        with self._lock:
            left, then = self._buckets.get(token.name, (capacity, now))
            left = min(capacity, left + (now - then) * rate)
            if left >= 1.0:
                self._buckets[token.name] = (left - 1.0, now)
                return 0.0
            self._buckets[token.name] = (left, now)
            return (1.0 - left) / rate if rate > 0 else math.inf


class TokenSet:
    """The tokens a server accepts. ``match`` compares a presented secret with every one (constant time each)."""

    def __init__(self, tokens: Sequence[Token]):
        if not tokens:
            raise MedsegError("no tokens: the server would let nobody in", fix="give at least one token")
        if len({t.secret for t in tokens}) != len(tokens) or len({t.name for t in tokens}) != len(tokens):
            raise MedsegError("two tokens share a secret or a name", fix="give every token its own secret and name")
        self.tokens = list(tokens)

    @classmethod
    def single(cls, secret: str, *, name: str = "default") -> "TokenSet":
        if not secret:
            raise ValueError("the server needs a non-empty token")
        return cls([Token(secret, name)])

    def match(self, presented: str) -> Token | None:
        found = None
        data = presented.encode()
        for token in self.tokens:  # no early exit: every token is compared
            if hmac.compare_digest(data, token.secret.encode()):
                found = token
        return found if presented else None


def read_tokens_file(path: str | Path, *, default_per_minute: float | None = None) -> TokenSet:
    """The tokens of a tokens file (module docstring); line tokens get ``default_per_minute``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MedsegError(f"cannot read the tokens file ({getattr(error, 'strerror', None) or error})", path=path,
                          fix="pass a readable UTF-8 file with one token per line") from None
    if text.lstrip().startswith("{"):
        tokens = _json_tokens(text, path, default_per_minute)
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
        tokens = [Token(s, f"token{i + 1}", default_per_minute) for i, s in enumerate(lines)]
    for token in tokens:
        if len(token.secret) < MIN_TOKEN_CHARACTERS:
            raise MedsegError(f"the token named {token.name!r} has {len(token.secret)} characters, fewer than "
                              f"{MIN_TOKEN_CHARACTERS}", path=path, fix="use long random tokens, e.g. "
                              "python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if not tokens:
        raise MedsegError("the tokens file holds no token", path=path, fix="write one token per line")
    return TokenSet(tokens)


def _json_tokens(text: str, path: Path, default_per_minute: float | None) -> list[Token]:
    fix = 'write {"tokens": [{"token": "<secret>", "name": "<who>", "requests_per_minute": 60}]}'
    try:
        entries = json.loads(text)["tokens"]
        tokens = []
        for index, entry in enumerate(entries):
            rate = entry.get("requests_per_minute", default_per_minute)
            burst = entry.get("burst")
            if not isinstance(entry["token"], str) or (rate is not None and float(rate) <= 0) or \
                    (burst is not None and int(burst) < 1):
                raise ValueError(f"entry {index}")
            tokens.append(Token(entry["token"], str(entry.get("name") or f"token{index + 1}"),
                                None if rate is None else float(rate), None if burst is None else int(burst)))
        return tokens
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise MedsegError(f"not a valid tokens file ({type(error).__name__}: {str(error)[:80]})", path=path,
                          fix=fix) from None


async def send_json(send: Send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class TokenAuth:
    """Every HTTP request, except to ``open_paths``, needs a token of ``tokens``: ``Authorization: Bearer <token>``
    (or, with ``cookie``, that cookie); else 401 with ``hint``. A caller over its rate gets 429 with
    ``Retry-After``. The matched ``Token`` is put in ``scope["state"]["token"]`` for the app.

    With ``cookie``, opening any page with ``?token=<token>`` sets the cookie (HttpOnly, SameSite=Strict) and
    redirects to the same path without the token, so that it leaves the address bar and the history."""

    def __init__(self, app: ASGIApp, *, tokens: TokenSet, cookie: str | None = None,
                 open_paths: Sequence[str] = (), limiter: RateLimiter | None = None,
                 hint: str = "send 'Authorization: Bearer <token>'"):
        self.app = app
        self.tokens = tokens
        self.cookie = cookie
        self.open_paths = frozenset(open_paths)
        self.limiter = limiter or RateLimiter()
        self.hint = hint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        if self.cookie and scope["method"] == "GET":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            token = self.tokens.match(query.get("token", [""])[0])
            if token is not None:
                cookie = f"{self.cookie}={token.secret}; Path=/; HttpOnly; SameSite=Strict".encode()
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", scope["path"].encode()), (b"set-cookie", cookie),
                                        (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
        token = self.tokens.match(self._presented(scope))
        if token is None:
            await send_json(send, 401, f"missing or wrong token: {self.hint}", [(b"www-authenticate", b"Bearer")])
            return
        wait = self.limiter.retry_after(token)
        if wait > 0:
            seconds = str(max(1, math.ceil(min(wait, 86400)))).encode()
            await send_json(send, 429, f"rate limit of {token.requests_per_minute:g} requests per minute reached "
                            f"for token {token.name!r} (fix: retry after {seconds.decode()} s)",
                            [(b"retry-after", seconds)])
            return
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)

    def _presented(self, scope: Scope) -> str:
        headers = dict(scope.get("headers", []))
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        if not self.cookie:
            return ""
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed cookie header is simply no token
            return ""
        return cookie[self.cookie].value if self.cookie in cookie else ""
