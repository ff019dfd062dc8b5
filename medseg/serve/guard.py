"""Who may call the server and how much they may send: a bearer-token check on every request and a request body
size limit, as two small ASGI middlewares (pure ASGI, so the limit also holds for chunked uploads)."""

from __future__ import annotations

import json
import secrets
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

COOKIE_NAME = "medseg_token"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """Every HTTP request needs ``token``: ``Authorization: Bearer <token>`` or the ``medseg_token`` cookie; else
    401. Opening any page with ``?token=<token>`` sets the cookie (HttpOnly, SameSite=Strict) and redirects to the
    same path without the token, so that it leaves the address bar and the history."""

    def __init__(self, app: ASGIApp, *, token: str):
        if not token:
            raise ValueError("the server needs a non-empty token")
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["method"] == "GET" and self._valid(query.get("token", [""])[0]):
            cookie = (f"{COOKIE_NAME}={self.token}; Path=/; HttpOnly; SameSite=Strict").encode()
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", scope["path"].encode()), (b"set-cookie", cookie),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if not self._valid(self._presented(scope)):
            await send_json(send, 401, "missing or wrong token: open the URL that `medseg interactive` printed "
                            "(it ends in ?token=...) or send 'Authorization: Bearer <token>'",
                            [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)

    def _valid(self, presented: str) -> bool:
        return bool(presented) and secrets.compare_digest(presented.encode(), self.token.encode())

    @staticmethod
    def _presented(scope: Scope) -> str:
        headers = dict(scope.get("headers", []))
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed cookie header is simply no token
            return ""
        return cookie[COOKIE_NAME].value if COOKIE_NAME in cookie else ""


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a body outgrows the limit; the app turns it into 413 (``BodyLimit.message``)."""


class BodyLimit:
    """Refuse request bodies over their limit with 413: ``max_bytes`` for uploads (POST to ``upload_path``),
    ``max_json_bytes`` for every other request (prompts, paths: a few KB each). At once from ``Content-Length``,
    and while streaming when a client sends more than it announced or no length at all (``BodyTooLarge``, which
    the app answers with 413 when a route was reading the body)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_json_bytes: int = 4 * 2**20,
                 upload_path: str = "/api/images"):
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = max_json_bytes
        self.upload_path = upload_path
        self.message = (f"request body over the limit of {max_bytes / 2**20:.1f} MiB (fix: start the server "
                        "with a larger --max-upload-mb, or open the file by path)")
        self.json_message = (f"request body over the limit of {max_json_bytes / 2**20:.1f} MiB for a request "
                             "that is not an upload (fix: send fewer scribble points; upload images to "
                             f"POST {upload_path})")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"] == self.upload_path
        limit, message = (self.max_bytes, self.message) if upload else (self.max_json_bytes, self.json_message)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await send_json(send, 413, message)
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(message)
            return event

        async def tracking_send(event: dict) -> None:
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_json(send, 413, message)
