"""The page on a server restart: a socket closed with 1012 is reopened at once (no backoff),
asking for the running turn after the last seq the page saw, and the answer ends whole."""

import re

from tests.browser.helpers import answer_text, open_paired, send, wait_for, wait_turn_end

TOKENS = lambda n: [f"tok{i}" for i in range(1, n + 1)]  # noqa: E731

# Every socket the page opens, and when (in the page's own clock).
TRACE_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  class Traced extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      window.__sockets.push({ url: String(url), opened: performance.now() });
    }
  }
  window.WebSocket = Traced;
  // Every state the connection indicator shows, in order.
  window.__conn = [];
  document.addEventListener("DOMContentLoaded", () => {
    const conn = document.getElementById("conn");
    const seen = () => window.__conn.push(`${conn.dataset.state}: ${conn.textContent.trim()}`);
    new MutationObserver(seen).observe(conn, { subtree: true, childList: true,
                                               characterData: true, attributes: true });
  });
})();
"""


class RestartingProxy:
    """Passes the chat socket through to the server; `restart()` closes the page's side with
    1012, as a draining server does."""

    def __init__(self, page):
        self.routes = []
        page.route_web_socket(re.compile(r"/ws/chat"), self._connect)

    def _connect(self, ws):
        ws.connect_to_server()
        self.routes.append(ws)

    def restart(self):
        self.routes[-1].close(code=1012, reason="service restart")


def test_a_1012_close_reconnects_at_once_and_resumes_the_turn(chat_server, token, page):
    page.context.add_init_script(TRACE_SOCKETS)
    proxy = RestartingProxy(page)
    open_paired(page, chat_server, token)
    send(page, "[[chunks=60]] [[delay_ms=40]] restart")
    wait_for(lambda: len(answer_text(page)) >= 8)

    restart_at = page.evaluate("performance.now()")
    shown_before = page.evaluate("window.__conn.length")
    proxy.restart()
    wait_turn_end(page, 1, "done", timeout=30_000)
    assert answer_text(page) == TOKENS(60)
    assert page.locator("article.msg.assistant").count() == 1

    sockets = page.evaluate("window.__sockets")
    after = [s for s in sockets if s["opened"] >= restart_at]
    assert len(sockets) == 2 and len(after) == 1, sockets
    # Reopened at once, not after the backoff: the indicator went straight from connected to
    # connecting (a first attempt), never "Disconnected" or a "Reconnecting in N s" countdown.
    # No timing here: on a busy machine the proxy's close itself may take a while.
    shown = page.evaluate("window.__conn")[shown_before:]
    assert shown and shown[0].startswith("connecting:"), shown
    assert not any("Reconnecting" in text or "Disconnected" in text for text in shown), shown
    assert "turn_id=" in after[0]["url"] and "last_seq=" in after[0]["url"]
    wait_for(lambda: page.locator("#conn[data-state=online]").count() == 1, page=page)
