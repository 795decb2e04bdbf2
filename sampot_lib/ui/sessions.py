"""The app's server-side parts: a kernel manager that holds at most ``max_sessions`` kernels (one per open page), and
the hook that lets a closed page free its kernel at once.

Voilà starts one kernel per page request, each with its own copy of the model, and has no limit of its own: a few
more tabs than the machine can hold would swap it to a halt for everyone. Voilà takes its kernel manager class from
``VoilaConfiguration.multi_kernel_manager_class``; :func:`sampot_lib.ui.server.voila_command` names this one there and
sets ``SessionLimitedKernelManager.max_sessions``. A page request past the limit gets HTTP 503, which Voilà's
handler renders with the template's ``503.html`` (the busy page).

A page request abandoned while its kernel starts (the tab closed, the client gone before the page arrived) leaves a
kernel that no page will ever connect to, and that never hears the closing page's shutdown either; the manager shuts
down a kernel no page has connected to once it has been idle for ``unconnected_timeout`` seconds.

Imported only inside the Voilà server process (by the class's dotted name), so it imports nothing of sampot's
beyond the defaults (no torch, no widgets).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import nbformat
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from tornado.ioloop import IOLoop
from traitlets import Float, Integer

from sampot_lib.defaults import MAX_SESSIONS

#: The HTTP reason phrase of the busy page's status line (the page itself says more).
BUSY_REASON = "Busy"
#: Seconds a refused page is asked to wait before trying again: its ``Retry-After`` header, and the busy page's
#: ``<meta http-equiv="refresh">`` (``app_files/voila/templates/sampot/503.html``; a test holds the two equal).
RETRY_AFTER_S = 60


class SessionLimitedKernelManager(AsyncMappingKernelManager):
    """Refuses to start a kernel while ``max_sessions`` are running or starting (HTTP 503), and shuts down a kernel
    that no page has connected to once it has been idle for ``unconnected_timeout`` seconds."""

    max_sessions = Integer(
        MAX_SESSIONS, config=True, help="the most kernels (open pages) at a time; a page past it is refused"
    )
    unconnected_timeout = Float(
        60.0,
        config=True,
        help="seconds a kernel that no page has connected to may stay idle before it is shut down (0: never)",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Kernels being started: they join self._kernels only once ready, seconds later, and the pages asking for
        # them meanwhile must count too (two requests in the same second could otherwise both take the last slot).
        self._reserved: set[str] = set()
        # Kernels started that no page has connected to yet, with the pending check of each.
        self._unconnected: dict[str, object] = {}

    def sessions(self) -> int:
        """Kernels running or starting."""
        return len(set(self._kernels) | self._reserved)

    async def start_kernel(self, *, kernel_id: str | None = None, path: str | None = None, **kwargs: Any) -> str:
        """Start a kernel, or raise HTTPError 503 when ``max_sessions`` are taken (a kernel already running is
        returned as before). A new kernel is shut down unless a page connects to it (see ``unconnected_timeout``)."""
        if kernel_id is not None and kernel_id in self:
            return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)
        in_use = self.sessions()
        if in_use >= self.max_sessions:
            self.log.warning("sampot app: %d of %d sessions in use; a new page was refused", in_use, self.max_sessions)
            raise web.HTTPError(503, f"{in_use} of {self.max_sessions} sessions in use", reason=BUSY_REASON)
        # The id is chosen here, not by the parent, so that the slot is held by name until the kernel is ready.
        kernel_id = kernel_id or self.new_kernel_id()
        self._reserved.add(kernel_id)
        try:
            started = await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)
        finally:
            self._reserved.discard(kernel_id)
        if self.unconnected_timeout > 0:
            self._check_later(started, self.unconnected_timeout)
        return started

    def notify_connect(self, kernel_id: str) -> None:
        """A client (the page's websocket) connected to the kernel: it is no longer shut down for want of one."""
        check = self._unconnected.pop(kernel_id, None)
        if check is not None:
            IOLoop.current().remove_timeout(check)
        super().notify_connect(kernel_id)

    def _check_later(self, kernel_id: str, delay: float) -> None:
        self._unconnected[kernel_id] = IOLoop.current().call_later(delay, self._shut_down_if_unconnected, kernel_id)

    async def _shut_down_if_unconnected(self, kernel_id: str) -> None:
        """Shut the kernel down if no page has connected to it and it has been idle for ``unconnected_timeout``
        seconds; otherwise look again when it could be. A kernel running a cell (Voilà runs the page's cell, which
        loads the model, before the page reaches the browser) is busy, not idle, however long it takes."""
        if self._unconnected.pop(kernel_id, None) is None or kernel_id not in self._kernels:
            return  # a page connected, or the kernel is already gone
        kernel = self._kernels[kernel_id]
        # execution_state and last_activity are the markers the parent keeps from the kernel's messages (its culler
        # reads them too); the last message of the page's cell is its end.
        idle = (datetime.now(timezone.utc) - kernel.last_activity).total_seconds()
        if kernel.execution_state == "busy":
            self._check_later(kernel_id, self.unconnected_timeout)
            return
        if idle < self.unconnected_timeout:
            self._check_later(kernel_id, self.unconnected_timeout - idle)
            return
        self.log.warning(
            "sampot app: no page connected to kernel %s, idle for %d s; shutting it down (its page request was "
            "abandoned)",
            kernel_id,
            idle,
        )
        await self.shutdown_kernel(kernel_id)


def prelaunch(handler: web.RequestHandler, notebook: nbformat.NotebookNode, cwd: str) -> None:
    """Voilà's ``prelaunch_hook``, run for each page request before its kernel starts: sets the ``_xsrf`` cookie.

    When a page is closed, Voilà's front end posts the cookie's value to ``/voila/api/shutdown/<kernel>`` so that the
    kernel stops at once; but Voilà's page handler never sets that cookie, so the post is refused (403) and the
    kernel, with its place, stays until it is culled as idle. Reading ``xsrf_token`` sets the cookie on this
    response (tornado); the shutdown then passes the usual same-origin check.

    It also gives this request's error page a ``Retry-After`` header when it is the busy page (503): tornado clears
    every header before it writes an error, so the header is set in the handler's ``write_error``, not here."""
    handler.xsrf_token  # noqa: B018 - read for its side effect: tornado sets the cookie
    write_error = handler.write_error

    def write_error_with_retry(status_code: int, **kwargs: Any) -> None:
        if status_code == 503:
            handler.set_header("Retry-After", str(RETRY_AFTER_S))
        write_error(status_code, **kwargs)

    handler.write_error = write_error_with_retry
