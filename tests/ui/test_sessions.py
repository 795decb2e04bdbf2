"""The app's kernel manager (:mod:`sampot_lib.ui.sessions`) with its parent's kernel start and shutdown faked: which
kernels it shuts down on its own, and when.

The limit on sessions itself and the busy page are tested in test_app.py; the manager in a live Voilà server in
tests/browser/test_live_sessions.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web

from sampot_lib.ui.sessions import SessionLimitedKernelManager


@pytest.fixture
def fake_kernels(monkeypatch):
    """The parent's start_kernel and shutdown_kernel, without processes: a kernel is its activity markers (what the
    parent records from the kernel's messages), idle since long ago."""

    async def start(self, *, kernel_id=None, path=None, **kwargs):
        await asyncio.sleep(0.01)
        ago = datetime.now(timezone.utc) - timedelta(hours=1)
        self._kernels[kernel_id] = SimpleNamespace(execution_state="idle", last_activity=ago)
        self._kernel_connections[kernel_id] = 0
        return kernel_id

    async def shutdown(self, kernel_id, now=False, restart=False):
        del self._kernels[kernel_id]
        self._kernel_connections.pop(kernel_id, None)

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", start)
    monkeypatch.setattr(AsyncMappingKernelManager, "shutdown_kernel", shutdown)


def test_a_kernel_no_page_connects_to_is_shut_down_once_idle_and_frees_its_place(fake_kernels):
    """Three pages take every place: one request abandoned before its page arrived (its kernel idle, no connection),
    one page open, one still running its cell (busy). The abandoned one goes ``unconnected_timeout`` s after it
    started, and a new page gets its place; the loading one stays while busy and for ``unconnected_timeout`` s
    after its last message, then goes too, as nothing connected; the open page stays, even once disconnected."""
    timeout = 1.0

    async def scenario():
        km = SessionLimitedKernelManager(max_sessions=3, unconnected_timeout=timeout)
        abandoned, opened, loading = [await km.start_kernel() for _ in range(3)]
        km.notify_connect(opened)
        km._kernels[loading].execution_state = "busy"
        with pytest.raises(web.HTTPError):
            await km.start_kernel()

        await asyncio.sleep(1.5 * timeout)  # every kernel's first check has run
        assert set(km._kernels) == {opened, loading}
        late = await km.start_kernel()  # the abandoned kernel's place is free again
        km._kernels[loading].execution_state = "idle"  # its cell ended just now
        km._kernels[loading].last_activity = datetime.now(timezone.utc)
        km.notify_disconnect(opened)  # left to the idle culler, as before

        await asyncio.sleep(0.7 * timeout)  # the loading kernel was checked again, idle for less than the timeout
        assert set(km._kernels) == {opened, loading, late}
        await asyncio.sleep(0.6 * timeout)
        assert set(km._kernels) == {opened}
        assert km._unconnected == {}  # nothing left to check

    asyncio.run(scenario())


def test_no_timeout_keeps_every_kernel(fake_kernels):
    """``unconnected_timeout=0``: a kernel no page connects to stays (until the idle culler, if any)."""

    async def scenario():
        km = SessionLimitedKernelManager(max_sessions=2, unconnected_timeout=0)
        kernel = await km.start_kernel()
        await asyncio.sleep(0.2)
        assert list(km._kernels) == [kernel] and km._unconnected == {}

    asyncio.run(scenario())
