"""Real git transports on loopback for tests: an OpenSSH server and a smart-HTTP server.

`SshServer` runs the system's `sshd` on 127.0.0.1 with throw-away host and client keys, so
`ssh://` URLs go through the same ssh client, host-key checks and key authentication as in
production. `GitHttpServer` serves a directory of bare repositories with `git http-backend`
(as CGI) behind HTTP Basic authentication, and records what each request carried, so tests
can check what credentials reached the wire and that none reached a command line.

Both listen on 127.0.0.1 only, pick a free port, and are context managers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import getpass
import io
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast
from urllib.parse import unquote, urlsplit

from gitsync.testing.waiting import stop_process

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


class TransportUnavailable(RuntimeError):
    """The server cannot run here (missing binary, no privilege-separation directory, ...)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, alive: Any = None) -> bool:
    """Poll until 127.0.0.1:`port` accepts a connection; False on timeout or when `alive()` turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


# -- ssh --------------------------------------------------------------------------------------------


def generate_key(path: Path, *, comment: str = "gitsync-test", passphrase: str = "") -> Path:
    """An ed25519 key pair at `path` / `path`.pub (mode 600, as ssh insists); returns the private key."""
    if shutil.which("ssh-keygen") is None:
        raise TransportUnavailable("ssh-keygen is not installed")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    path.chmod(0o600)
    return path


def public_key(private_key: Path) -> str:
    """`type base64` of a key pair's public half (without the comment)."""
    kind, blob, *_ = Path(f"{private_key}.pub").read_text(encoding="utf-8").split()
    return f"{kind} {blob}"


class SshServer:
    """`sshd -D -e` on 127.0.0.1 that lets the current user in with one generated client key.

    Files live in `root`: ``host_key`` (the server's identity), ``client_key`` (authorised),
    ``authorized_keys``, ``sshd_config``, ``sshd.log`` (the daemon's own log, for failures)
    and ``sshd.pid``. `url()` gives the ``ssh://`` URL of a repository path.
    """

    def __init__(self, root: Path, *, user: str | None = None, start_timeout: float = 10.0) -> None:
        self.root = root
        self.user = user or getpass.getuser()
        self.start_timeout = start_timeout
        self.host_key = root / "host_key"
        self.client_key = root / "client_key"
        self.authorized_keys = root / "authorized_keys"
        self.config = root / "sshd_config"
        self.log_path = root / "sshd.log"
        self.pid_file = root / "sshd.pid"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- what tests use --------------------------------------------------------------------------
    def url(self, repo: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo.resolve()}"

    @property
    def host_public_key(self) -> str:
        return public_key(self.host_key)

    def known_hosts_line(self, key: str | None = None) -> str:
        """A known_hosts line for this server (``[127.0.0.1]:port``), with its real key or `key`."""
        return f"[127.0.0.1]:{self.port} {key or self.host_public_key}\n"

    def authorize(self, private_key: Path) -> None:
        """Let another key pair in as well (its public half is read from `private_key`.pub)."""
        with self.authorized_keys.open("a", encoding="utf-8") as keys:
            keys.write(public_key(private_key) + " gitsync-test-extra\n")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> SshServer:
        if not os.access(SSHD, os.X_OK):
            raise TransportUnavailable(f"{SSHD} is not installed (Debian: apt-get install openssh-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        _ensure_privsep_dir()
        if not self.host_key.exists():
            generate_key(self.host_key, comment="gitsync-test-host")
        if not self.client_key.exists():
            generate_key(self.client_key, comment="gitsync-test-client")
        self.authorized_keys.write_text(public_key(self.client_key) + " gitsync-test-client\n", encoding="utf-8")
        last_error = ""
        for _ in range(3):  # the free port can be taken between probing and binding: try another
            self.port = free_port()
            self._write_config()
            self._log = self.log_path.open("ab")
            self._process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                                             stdout=self._log, stderr=self._log)
            if wait_for_port(self.port, self.start_timeout, alive=self._running):
                return self
            self.stop()
            last_error = " | ".join(self.log_text().strip().splitlines()[-5:])
        raise TransportUnavailable(f"sshd did not start listening on 127.0.0.1 (log: {last_error})")

    def _running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "MaxStartups 64",
            "LogLevel VERBOSE",
            f"PidFile {self.pid_file}",
            f"AllowUsers {self.user}",
            "PermitUserRC no",
            # sshd runs git-upload-pack through the account's login shell, and Debian's bash sources
            # ~/.bashrc for ssh commands unless it looks nested: keep the host account's (often slow)
            # shell start-up out of every connection.
            "SetEnv SHLVL=1",
        ]
        if os.geteuid() == 0:
            lines.append("PermitRootLogin prohibit-password")
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        # OpenSSH >= 9.8 penalises sources that fail to authenticate, and every test here comes from
        # 127.0.0.1: turn that off where the option exists (older versions reject unknown options).
        with_penalties_off = self.config.read_text(encoding="utf-8") + "PerSourcePenalties no\n"
        probe = self.root / "sshd_config.probe"
        probe.write_text(with_penalties_off, encoding="utf-8")
        if _sshd_accepts(probe):
            self.config.write_text(with_penalties_off, encoding="utf-8")
        probe.unlink()
        checked = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL)
        if checked.returncode != 0:
            raise TransportUnavailable(f"sshd rejects its test configuration: {checked.stderr.strip()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, grace=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _ensure_privsep_dir() -> None:
    """sshd refuses to start without its (empty, root-owned) privilege-separation directory."""
    if PRIVSEP_DIR.is_dir():
        return
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
    except OSError as exc:
        raise TransportUnavailable(f"sshd needs {PRIVSEP_DIR}, which is missing and cannot be created "
                                   f"({exc.strerror}); run as root or create it") from None


def _sshd_accepts(config: Path) -> bool:
    done = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    return done.returncode == 0


# -- smart HTTP -------------------------------------------------------------------------------------


def basic(username: str, password: str) -> str:
    """The value of an ``Authorization`` header for HTTP Basic authentication."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: str
    authorization: tuple[str, ...]  # every Authorization header, as sent
    user: str | None  # who authenticated, None when refused
    status: int


@dataclass
class _Shared:
    root: Path
    accounts: dict[str, str]
    watch: tuple[str, ...]
    requests: list[SeenRequest] = field(default_factory=list)
    argv_hits: list[tuple[int, str]] = field(default_factory=list)
    argv_scans: int = 0
    backend_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ThreadedHTTP:
    """A stdlib ThreadingHTTPServer on 127.0.0.1 and a free port, served from a daemon thread."""

    def __init__(self) -> None:
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _serve(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class GitHttpServer(_ThreadedHTTP):
    """`git http-backend` behind HTTP Basic auth on 127.0.0.1, serving the bare repos under `root`.

    `accounts` maps user names to passwords (tokens); any other request gets 401 with
    ``WWW-Authenticate: Basic``. Pushing is enabled for every repository that
    `enable_push()` was called for. While serving each request the server looks through every
    process's command line (``/proc/*/cmdline``) for the strings in `watch_argv`, so a test can
    prove a token never reached an argv (and so `ps`) while git was talking to it.
    """

    def __init__(self, root: Path, accounts: Mapping[str, str], *, watch_argv: Iterable[str] = ()) -> None:
        self.root = root
        super().__init__()
        self._shared = _Shared(root, dict(accounts), tuple(w for w in watch_argv if w))

    def url(self, repo: Path | str) -> str:
        rel = Path(repo).resolve().relative_to(self.root.resolve()) if Path(repo).is_absolute() else Path(repo)
        return f"http://127.0.0.1:{self.port}/{rel.as_posix()}"

    def set_password(self, user: str, password: str) -> None:
        """Rotate a credential: from now on only `password` lets `user` in."""
        with self._shared.lock:
            self._shared.accounts[user] = password

    @staticmethod
    def enable_push(bare: Path) -> None:
        subprocess.run(["git", "-C", str(bare), "config", "http.receivepack", "true"], check=True,
                       capture_output=True)

    # -- what the server saw -------------------------------------------------------------------------
    @property
    def requests(self) -> list[SeenRequest]:
        with self._shared.lock:
            return list(self._shared.requests)

    @property
    def authorization_headers(self) -> list[str]:
        return [a for r in self.requests for a in r.authorization]

    @property
    def argv_hits(self) -> list[tuple[int, str]]:
        """(pid, command line) of every process seen with a watched string in its argv."""
        with self._shared.lock:
            return list(self._shared.argv_hits)

    @property
    def argv_scans(self) -> int:
        """How many times /proc was searched (0 where there is no /proc: the check proved nothing)."""
        with self._shared.lock:
            return self._shared.argv_scans

    @property
    def backend_errors(self) -> list[str]:
        with self._shared.lock:
            return list(self._shared.backend_errors)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> GitHttpServer:
        shared = self._shared

        class Handler(_CgiHandler):
            state = shared

        self._serve(Handler, "git-http-backend")
        if not wait_for_port(self.port, 10.0):
            raise TransportUnavailable("the git smart-HTTP test server did not start")
        return self

    def __enter__(self) -> GitHttpServer:
        return self.start()


class _CgiHandler(BaseHTTPRequestHandler):
    """One request: authenticate, run `git http-backend` with the CGI environment, relay its answer."""

    state: _Shared
    protocol_version = "HTTP/1.1"
    timeout = 30

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass  # quiet: tests read `requests` instead

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        authorization = tuple(self.headers.get_all("Authorization") or ())
        self._scan_argv()
        user = self._authenticate(authorization)
        if user is None:
            self._drain_body()
            self._record(parts.path, parts.query, authorization, None, 401)
            self.send_response(401, "Unauthorized")
            self.send_header("WWW-Authenticate", 'Basic realm="gitsync-test"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "13")
            self.end_headers()
            self.wfile.write(b"unauthorized\n")
            return
        status = self._run_backend(unquote(parts.path), parts.query, user)
        self._record(parts.path, parts.query, authorization, user, status)

    def _authenticate(self, headers: tuple[str, ...]) -> str | None:
        for header in headers:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                continue
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
            if user in self.state.accounts and self.state.accounts[user] == password:
                return user
        return None

    def _scan_argv(self) -> None:
        if not self.state.watch:
            return
        proc = Path("/proc")
        if not proc.is_dir():
            return
        hits = []
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(w in argv for w in self.state.watch):
                hits.append((int(entry.name), argv))
        with self.state.lock:
            self.state.argv_scans += 1
            self.state.argv_hits.extend(hits)

    def _record(self, path: str, query: str, authorization: tuple[str, ...], user: str | None, status: int) -> None:
        with self.state.lock:
            self.state.requests.append(SeenRequest(self.command, path, query, authorization, user, status))

    # -- request body --------------------------------------------------------------------------------
    def _body_chunks(self) -> Iterable[bytes]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def _drain_body(self) -> None:
        for _ in self._body_chunks():
            pass

    # -- the CGI call ----------------------------------------------------------------------------------
    def _run_backend(self, path: str, query: str, user: str) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update({
            "GIT_PROJECT_ROOT": str(self.state.root.resolve()),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "REMOTE_USER": user,
            "REMOTE_ADDR": self.client_address[0],
            "AUTH_TYPE": "Basic",
        })
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if not chunked and self.headers.get("Content-Length"):
            env["CONTENT_LENGTH"] = self.headers["Content-Length"]  # chunked: http-backend reads to EOF
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_AUTHORIZATION", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                env[key] = value  # HTTP_GIT_PROTOCOL (protocol v2), HTTP_CONTENT_ENCODING (gzip), ...
        backend = subprocess.Popen(["git", "http-backend"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        assert backend.stdin is not None and backend.stdout is not None and backend.stderr is not None
        errors: list[bytes] = []
        feeder = threading.Thread(target=self._feed, args=(backend.stdin,), daemon=True)
        stderr = backend.stderr
        reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
        feeder.start()
        reader.start()
        status, reason, headers = self._cgi_headers(backend.stdout)
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        body = cast(io.BufferedReader, backend.stdout)  # read1: relay what is there, do not wait for 64 KiB
        while chunk := body.read1(65536):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        backend.wait(30)
        feeder.join(5)
        reader.join(5)
        text = b"".join(errors).decode(errors="replace").strip()
        if text or backend.returncode:
            with self.state.lock:
                self.state.backend_errors.append(f"{self.command} {path}: exit {backend.returncode}: {text}")
        return status

    def _feed(self, stdin: IO[bytes]) -> None:
        try:
            for chunk in self._body_chunks():
                stdin.write(chunk)
        except (BrokenPipeError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    @staticmethod
    def _cgi_headers(stdout: IO[bytes]) -> tuple[int, str, list[tuple[str, str]]]:
        status, reason = 200, "OK"
        headers: list[tuple[str, str]] = []
        while True:
            line = stdout.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
            if name.strip().lower() == "status":
                code, _, reason = value.strip().partition(" ")
                status = int(code)
            else:
                headers.append((name.strip(), value.strip()))
        return status, reason or "OK", headers


class RedirectServer(_ThreadedHTTP):
    """Answers every request with a redirect to the same path on `target` (``http://host:port``).

    Stands for a repository host that moved, or a hostile one: tests check that credentials
    meant for this server do not follow the redirect to another host.
    """

    def __init__(self, target: str, status: int = 302) -> None:
        self.target = target.rstrip("/")
        self.status = status
        super().__init__()
        self.authorization: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def start(self) -> RedirectServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.authorization.extend(self.headers.get_all("Authorization") or ())
                self.send_response(outer.status)
                self.send_header("Location", outer.target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._serve(Handler, "redirect")
        return self

    def __enter__(self) -> RedirectServer:
        return self.start()



# -- a terminal to prompt on ------------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalRun:
    returncode: int | None  # None: killed (timed out, or stopped because it prompted)
    stdout: str
    stderr: str
    tty: str  # everything written to the controlling terminal: prompts land here
    seconds: float
    prompted: bool  # something was written to the terminal, and the process was killed for it
    timed_out: bool


def run_in_terminal(argv: list[str], *, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 30.0,
                    kill_on_prompt: bool = True) -> TerminalRun:
    """Run `argv` in a new session whose controlling terminal is a fresh pseudo-terminal.

    ssh and git prompt on /dev/tty, not on stdout/stderr; without a controlling terminal they
    cannot prompt at all, so a test run from CI would never notice a missing ``BatchMode`` or
    ``GIT_TERMINAL_PROMPT=0``. Here anything written to the terminal is captured and, with
    `kill_on_prompt`, ends the run at once (a prompt would otherwise wait forever).
    """
    import pty
    import select
    import signal

    if shutil.which("setsid") is None:
        raise TransportUnavailable("setsid (util-linux) is not installed")
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    started = time.monotonic()
    # setsid --ctty: a new session that takes stdin (the pty) as its controlling terminal
    process = subprocess.Popen(["setsid", "--ctty", *argv], stdin=slave, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=dict(env), cwd=cwd)
    os.close(slave)
    assert process.stdout is not None and process.stderr is not None
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    streams = {out_fd: bytearray(), err_fd: bytearray(), master: bytearray()}
    open_fds = set(streams)
    prompted = timed_out = False
    try:
        while open_fds:
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select(list(open_fds), [], [], min(left, 0.1))
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's last user is gone
                    data = b""
                if not data:
                    open_fds.discard(fd)
                    continue
                streams[fd] += data
                if fd == master and kill_on_prompt:
                    prompted = True
            if prompted:
                time.sleep(0.2)  # let the rest of the prompt arrive, for the failure message
                with contextlib.suppress(OSError):
                    streams[master] += os.read(master, 65536)
                break
            if open_fds == {master} and process.poll() is not None:
                break  # only the terminal is left, and nobody will write to it any more
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the session we started: setsid made it its leader
        returncode = process.wait(10)
    finally:
        os.close(master)
        process.stdout.close()
        process.stderr.close()

    def text(fd: int) -> str:
        return bytes(streams[fd]).decode(errors="replace")

    killed = prompted or timed_out
    return TerminalRun(None if killed else returncode, text(out_fd), text(err_fd), text(master),
                       time.monotonic() - started, prompted, timed_out)


class StalledServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word: a remote that hangs."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._connections: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> StalledServer:
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.port = int(self._socket.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="stalled", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self._connections.append(connection)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        for connection in self._connections:
            connection.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> StalledServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
