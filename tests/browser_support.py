"""What the browser tests and bench/annotation.py share: the real server on a free local port in a thread, waiting
for the page, and clicking a pixel of a canvas."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable


def serve_in_thread(app, timeout: float = 20) -> tuple[str, Callable[[], None]]:
    """``app`` under uvicorn on 127.0.0.1 at a free port, in a daemon thread; returns (base URL, stop)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError("uvicorn did not start")

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


def wait_for(driver, script: str, timeout: float = 60, poll: float = 0.1):
    """The first truthy value of ``script`` in the page (selenium's TimeoutException after ``timeout`` s)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=poll).until(lambda d: d.execute_script(script))


def click_pixel(driver, canvas, row: float, col: float, *, right: bool = False) -> None:
    """Click at the centre of pixel ``(row, col)`` of the plane shown on ``canvas`` (its CSS size may differ per
    axis: the spacing)."""
    from selenium.webdriver.common.action_chains import ActionChains

    height, width = driver.execute_script("return [arguments[0].height, arguments[0].width]", canvas)
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                 canvas)
    dx = (col + 0.5) * rect[0] / width - rect[0] / 2  # selenium offsets are from the element's centre
    dy = (row + 0.5) * rect[1] / height - rect[1] / 2
    actions = ActionChains(driver).move_to_element_with_offset(canvas, int(round(dx)), int(round(dy)))
    (actions.context_click() if right else actions.click()).perform()
