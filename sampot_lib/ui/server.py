"""The server behind ``sampot app``: checks the address, writes the one-cell notebook the page runs, and starts
Voilà on it (one kernel per page, at most ``max_sessions`` at a time, idle kernels culled, a token off the loopback
address). What a page shows is :mod:`sampot_lib.ui.app`; the session limit is :mod:`sampot_lib.ui.sessions`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sampot_lib import errors
from sampot_lib.defaults import APP_PORT, IDLE_MINUTES, MAX_SESSIONS, MOST_IDLE_MINUTES, MOST_SESSIONS
from sampot_lib.errors import SampotError
from sampot_lib.ui.app import AppSpec, check_app

#: Voilà loads every JupyterLab extension installed beside it, and one built for another JupyterLab (jupytext's,
#: say) fails in Voilà's page with a console error. The app needs only the widget managers and plotly's widget.
VOILA_EXTENSIONS = (
    "@jupyter-widgets/jupyterlab-manager",
    "@voila-dashboards/widgets-manager8",
    "anywidget",
    "jupyterlab-plotly",
)
#: The Voilà template (``voila/templates/sampot`` under this folder, found through $JUPYTER_PATH).
TEMPLATE = "sampot"
JUPYTER_DATA = Path(__file__).resolve().parent / "app_files"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Addresses that mean "every interface": the URL printed names the machine instead.
ANY_ADDRESS = ("0.0.0.0", "::", "")
#: The kernel manager Voilà uses: one kernel per page, at most ``max_sessions`` at a time.
KERNEL_MANAGER = "sampot_lib.ui.sessions.SessionLimitedKernelManager"


def write_page(spec: AppSpec, folder: Path) -> Path:
    """Write ``spec.json``, the one-cell notebook Voilà serves and Voilà's config file (``voila.py``, for the one
    setting the command line cannot carry, a function) into ``folder``; returns the notebook's path."""
    import nbformat

    spec_path = folder / "spec.json"
    spec.save(spec_path)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(f"from sampot_lib.ui.app import page\n\npage({str(spec_path)!r})")]
    path = folder / "sampot.ipynb"  # Voilà titles the page with the notebook's name
    nbformat.write(nb, path)
    (folder / "voila.py").write_text(
        "from sampot_lib.ui.sessions import prelaunch\n\nc.VoilaConfiguration.prelaunch_hook = prelaunch\n"
    )
    return path


def voila_command(notebook: Path, host: str, port: int, *, max_sessions: int = MAX_SESSIONS,
                  idle_minutes: float = IDLE_MINUTES, token: bool = False) -> list[str]:  # fmt: skip
    """The command that serves ``notebook`` with Voilà on ``host:port`` (no browser opened, no other port tried):
    at most ``max_sessions`` pages at a time, a page's kernel shut down after ``idle_minutes`` without activity (0:
    never). ``token``: every request must carry the token Voilà reads from $JUPYTER_TOKEN (see :func:`voila_env`;
    kept off the command line, which other users of the machine can read)."""
    cmd = [
        sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.port_retries=0",
        f"--Voila.ip={host}", f"--template={TEMPLATE}", "--theme=light",
        # Voilà's config file is the one write_page put beside the notebook, none of the user's.
        f"--Voila.config_file_paths={notebook.parent}",
        f"--VoilaConfiguration.multi_kernel_manager_class={KERNEL_MANAGER}",
        f"--SessionLimitedKernelManager.max_sessions={max_sessions}",
        *(f"--VoilaConfiguration.extension_allowlist={name}" for name in VOILA_EXTENSIONS),
    ]  # fmt: skip
    if idle_minutes > 0:
        seconds = math.ceil(idle_minutes * 60)
        # An open tab keeps its kernel's websocket connected: idle connected kernels are culled too, or a few tabs
        # left open would hold every place for good. Idle: no message to or from the kernel (a click is one).
        cmd += [f"--MappingKernelManager.cull_idle_timeout={seconds}",
                f"--MappingKernelManager.cull_interval={min(300, max(1, seconds // 6))}",
                "--MappingKernelManager.cull_connected=True"]  # fmt: skip
    if token:
        # Voilà then leaves the token to jupyter_server's identity provider, which takes it from $JUPYTER_TOKEN.
        cmd.append("--Voila.auto_token=True")
    return cmd


def voila_env(base: dict[str, str] | None = None, token: str | None = None) -> dict[str, str]:
    """The environment for Voilà: $JUPYTER_PATH leads to the app's template; $JUPYTER_TOKEN is ``token`` (None:
    as in ``base``; Voilà ignores it unless :func:`voila_command` was given ``token=True``)."""
    env = dict(os.environ if base is None else base)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(JUPYTER_DATA), env.get("JUPYTER_PATH", "")) if p)
    if token is not None:
        env["JUPYTER_TOKEN"] = token
    return env


def needs_token(host: str) -> bool:
    """Whether a server on ``host`` asks for a token: anything but the loopback address, which only this machine's
    users reach."""
    return host not in LOOPBACK


def app_url(host: str, port: int, token: str | None = None) -> str:
    """The URL to open: ``host`` (the machine's name for an every-interface address), the token as Voilà's login
    takes it from the query."""
    where = socket.gethostname() if host in ANY_ADDRESS else f"[{host}]" if ":" in host else host
    return f"http://{where}:{port}/" + (f"?token={token}" if token else "")


def check_sessions(max_sessions: int, idle_minutes: float) -> None:
    """SampotError naming the option and its range unless ``max_sessions`` is a whole number in 1..MOST_SESSIONS and
    ``idle_minutes`` a number in 0..MOST_IDLE_MINUTES (0: never)."""
    errors.whole(max_sessions, "--max-sessions", low=1, high=MOST_SESSIONS)
    errors.number(idle_minutes, "--idle-minutes", low=0, high=MOST_IDLE_MINUTES)


def check_server(host: str, port: int) -> None:
    """SampotError unless Voilà is installed and ``host:port`` is free to listen on."""
    if importlib.util.find_spec("voila") is None:
        raise SampotError("the app needs Voilà, which is not installed: pip install -e '.[app]' (or pip install voila)")
    if not 1 <= port <= 65535:
        raise SampotError(f"--port {port} is not a port number (1..65535).")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SampotError(f"--host {host!r} is not an address of this machine ({exc.strerror}).") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(addr)
        except OSError as exc:
            raise SampotError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port.") from None


def run_app(source: str | Path, regressor: str | Path | None, *, host: str = "127.0.0.1", port: int = APP_PORT,
            max_sessions: int = MAX_SESSIONS, idle_minutes: float = IDLE_MINUTES, **settings: Any) -> int:  # fmt: skip
    """Check the input, then serve the app until Voilà stops (Ctrl-C); returns Voilà's exit status.
    ``settings``: the keyword arguments of :func:`check_app`."""
    check_sessions(max_sessions, idle_minutes)
    check_server(host, port)
    spec = check_app(source, regressor, **settings)
    token = secrets.token_urlsafe(32) if needs_token(host) else None
    if token is not None:
        print(f"sampot app: serving on {host}: whoever has the URL below (its token) and can reach this machine on "
              f"port {port} can use the app.", file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sampot-app-") as tmp:
        notebook = write_page(spec, Path(tmp))
        print(f"sampot app: {spec.source} with {spec.model}, at most {max_sessions} pages at a time; "
              f"open {app_url(host, port, token)} (Ctrl-C stops it)", flush=True)  # fmt: skip
        cmd = voila_command(notebook, host, port, max_sessions=max_sessions, idle_minutes=idle_minutes,
                            token=token is not None)  # fmt: skip
        proc = _start_voila(cmd, env=voila_env(token=token))
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        try:
            for signum in STOP_SIGNALS:
                signal.signal(signum, _raise_stop)
            return proc.wait()
        except _Stop:
            proc.terminate()
            return _wait(proc)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


#: Ctrl-C and SIGTERM both stop the app: sampot passes one SIGTERM on to Voilà, which then shuts its kernels down.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _start_voila(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Voilà started with Ctrl-C ignored (a disposition that survives ``exec``). A terminal sends Ctrl-C to the whole
    process group: Voilà would stop on it, and a second Ctrl-C while it shuts its kernels down ends it in a
    traceback. Only sampot takes it, and stops Voilà once."""
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen(cmd, env=env)
    finally:
        signal.signal(signal.SIGINT, interrupt)


class _Stop(Exception):
    """Ctrl-C or SIGTERM arrived."""


def _raise_stop(signum: int, frame: Any) -> None:
    # the first signal stops the app; more of them (a second Ctrl-C; timeout and docker stop signal the whole process
    # group, then again) must not interrupt the wait for Voilà's kernels to stop
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise _Stop


def _wait(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """Voilà's exit status once it has stopped its kernels; killed if it takes longer than ``timeout`` s."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
