"""Who may call the interactive server and how much they may send: its token check (``auth.TokenAuth`` with one
token and a cookie) and a request body size limit, as small ASGI middlewares (pure ASGI, so the limit also holds
for chunked uploads)."""

from __future__ import annotations

from medseg.serve.auth import ASGIApp, Receive, Scope, Send, TokenAuth, TokenSet, send_json

COOKIE_NAME = "medseg_token"


class TokenGuard(TokenAuth):
    """``TokenAuth`` with the interactive page's one token: ``Authorization: Bearer <token>`` or the
    ``medseg_token`` cookie; else 401. Opening any page with ``?token=<token>`` sets the cookie and redirects to
    the same path without the token. No rate limit (one user at a browser)."""

    def __init__(self, app: ASGIApp, *, token: str):
        super().__init__(app, tokens=TokenSet.single(token), cookie=COOKIE_NAME,
                         hint="open the URL that `medseg interactive` printed (it ends in ?token=...) or send "
                              "'Authorization: Bearer <token>'")


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
