"""`kubectl exec` for sandbox pods: the WebSocket channel protocol on an HTTP request.

The API server matches `/api/v1/namespaces/{ns}/pods/{name}/exec` and hands its
`http.server` request handler to `serve_exec()`. This module answers 400 Status
when it cannot exec (no WebSocket upgrade, no command, pod not running), else
does the WebSocket handshake (subprotocol `v5.channel.k8s.io`, `v4.channel.k8s.io`
or `channel.k8s.io`, in the client's order of preference) and runs the command —
an argv, no shell — as a local process in the pod's directory with the pod's
environment (`sandbox.pods.process_env`, the same as the pod's own process).

Frames as the kubelet sends them: binary messages, first byte the channel
(0 stdin, 1 stdout, 2 stderr, 3 status); channel 3 carries a v1 Status JSON
(`Success`, or `Failure`/`NonZeroExitCode` with the code in `details.causes`) for
every subprotocol; then a close frame. Stdin is fed from channel 0 and closed by
the v5 close-channel message (255, 0) or when the client goes away, which also
kills the command. A command that cannot start answers exit code 127 (not
found) or 126 (not executable) with the reason on stderr. `tty` merges stderr
into stdout (no terminal, no resize).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import signal
import struct
import subprocess
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO

from sandbox.pods import first_container, pod_dir, process_env

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, CLOSE_CHANNEL = 0, 1, 2, 3, 255
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_GRACE = 2.0  # seconds to wait for the client's close frame


class WebSocket:
    """Server side RFC 6455 framing on a request's rfile/wfile (no extensions)."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        self.rfile, self.wfile = rfile, wfile
        self._lock = threading.Lock()

    def send(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        with self._lock:
            self.wfile.write(header + payload)
            self.wfile.flush()

    def send_channel(self, channel: int, data: bytes) -> None:
        self.send(OP_BINARY, bytes([channel]) + data)

    def _read_exact(self, size: int) -> bytes:
        data = self.rfile.read(size) if size else b""
        if len(data) < size:
            raise EOFError("connection closed")
        return data

    def _read_frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read_exact(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._read_exact(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read_exact(8))
        mask = self._read_exact(4) if second & 0x80 else b""
        payload = self._read_exact(size)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    def recv(self) -> tuple[int, bytes]:
        """The next message (opcode, payload), answering pings; EOFError at the end."""
        opcode, parts = None, []
        while True:
            fin, op, payload = self._read_frame()
            if op == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if op in (OP_CLOSE, OP_PONG):
                return op, payload
            opcode = op if opcode is None else opcode
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)

    def close(self, code: int = 1000) -> None:
        self.send(OP_CLOSE, struct.pack("!H", code))


def status_json(exit_code: int, command: list[str]) -> dict[str, Any]:
    """The Status the kubelet sends on channel 3 for a finished command."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(command)}], exit code {exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}


def _send_status(handler: BaseHTTPRequestHandler, code: int, reason: str, message: str) -> None:
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": reason,
                       "code": code}).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body)


def refusal(handler: BaseHTTPRequestHandler, pod: dict[str, Any],
            command: list[str]) -> str | None:
    """Why exec cannot start (answered 400 before any upgrade), or None."""
    if "websocket" not in handler.headers.get("Upgrade", "").lower():
        return "Upgrade request required"
    if not handler.headers.get("Sec-WebSocket-Key"):
        return "missing Sec-WebSocket-Key header"
    if not command:
        return "you must specify at least one command for the container"
    name = (pod.get("metadata") or {}).get("name", "")
    phase = (pod.get("status") or {}).get("phase", "Pending")
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if phase != "Running" or not statuses or "running" not in (statuses[0].get("state") or {}):
        container = first_container(pod).get("name", "")
        return (f"unable to upgrade connection: container {container!r} in pod {name!r} "
                f"is not running (pod phase {phase})")
    return None


def choose_protocol(handler: BaseHTTPRequestHandler) -> tuple[bool, str | None]:
    """(acceptable, subprotocol): the client's first offer we speak; none offered is v1."""
    offered = [p.strip() for header in handler.headers.get_all("Sec-WebSocket-Protocol") or []
               for p in header.split(",") if p.strip()]
    if not offered:
        return True, None
    chosen = next((p for p in offered if p in PROTOCOLS), None)
    return chosen is not None, chosen


def handshake(handler: BaseHTTPRequestHandler, protocol: str | None) -> None:
    key = handler.headers["Sec-WebSocket-Key"].strip()
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    if protocol:
        handler.send_header("Sec-WebSocket-Protocol", protocol)
    handler.end_headers()
    handler.wfile.flush()


def serve_exec(handler: BaseHTTPRequestHandler, pod: dict[str, Any], command: list[str],
               stdout: bool, stderr: bool, stdin: bool, tty: bool) -> None:
    """Answer one exec request on `handler`; the connection is closed afterwards."""
    handler.close_connection = True
    problem = refusal(handler, pod, command)
    acceptable, protocol = choose_protocol(handler)
    if problem is None and not acceptable:
        problem = f"unable to upgrade: none of the offered subprotocols is one of {PROTOCOLS}"
    if problem is not None:
        _send_status(handler, 400, "BadRequest", problem)
        return
    handler.connection.settimeout(None)  # a long command is not an idle client
    handshake(handler, protocol)
    ws = WebSocket(handler.rfile, handler.wfile)  # type: ignore[arg-type]
    ExecSession(ws, pod, command, stdout=stdout, stderr=stderr, stdin=stdin, tty=tty).run()


class ExecSession:
    """One running command and the WebSocket it talks over."""

    def __init__(self, ws: WebSocket, pod: dict[str, Any], command: list[str], *,
                 stdout: bool, stderr: bool, stdin: bool, tty: bool) -> None:
        self.ws, self.pod, self.command = ws, pod, command
        self.want_stdout, self.want_stderr = stdout, stderr
        self.want_stdin, self.tty = stdin, tty
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_closed = threading.Event()

    def run(self) -> None:
        try:
            exit_code = self._execute()
            self.ws.send_channel(STATUS, json.dumps(status_json(exit_code, self.command)).encode())
            self.ws.close()
            self.client_closed.wait(CLOSE_GRACE)
        except OSError:
            pass  # the client went away; the process was killed by the reader
        finally:
            self._kill()

    def _start(self) -> subprocess.Popen[bytes]:
        with _RUNNING_LOCK:
            proc = self._popen()
            _RUNNING.add(proc)
        return proc

    def _popen(self) -> subprocess.Popen[bytes]:
        directory = pod_dir(self.pod)
        out = subprocess.PIPE if self.want_stdout else subprocess.DEVNULL
        err: int = subprocess.PIPE if self.want_stderr else subprocess.DEVNULL
        if self.tty:
            err = subprocess.STDOUT
        return subprocess.Popen(
            self.command, env=process_env(self.pod), start_new_session=True,
            cwd=str(directory) if directory and directory.is_dir() else None,
            stdin=subprocess.PIPE if self.want_stdin else subprocess.DEVNULL,
            stdout=out, stderr=err)

    def _execute(self) -> int:
        try:
            self.proc = self._start()
        except (FileNotFoundError, NotADirectoryError):
            return self._start_failed(127, "executable file not found in $PATH")
        except PermissionError:
            return self._start_failed(126, "permission denied")
        threading.Thread(target=self._read_client, daemon=True).start()
        pumps = [threading.Thread(target=self._pump, args=(stream, channel), daemon=True)
                 for stream, channel in ((self.proc.stdout, STDOUT), (self.proc.stderr, STDERR))
                 if stream is not None]
        for pump in pumps:
            pump.start()
        code = self.proc.wait()
        for pump in pumps:
            pump.join()
        return code if code >= 0 else 128 - code  # killed by signal N → 128+N

    def _start_failed(self, exit_code: int, why: str) -> int:
        """Say why on stderr, as the runtime does, and answer `exit_code`."""
        threading.Thread(target=self._read_client, daemon=True).start()
        if self.want_stderr or self.tty:
            message = f'exec: "{self.command[0]}": {why}\n'.encode()
            self.ws.send_channel(STDOUT if self.tty else STDERR, message)
        return exit_code

    def _pump(self, stream: BinaryIO, channel: int) -> None:
        while True:
            data = os.read(stream.fileno(), 65536)
            if not data:
                return
            self.ws.send_channel(channel, data)

    def _read_client(self) -> None:
        """Feed stdin from channel 0; on the client's close or EOF, stop everything."""
        try:
            while True:
                opcode, payload = self.ws.recv()
                if opcode == OP_CLOSE:
                    break
                if opcode in (OP_BINARY, OP_TEXT) and payload:
                    self._client_message(payload)
        except (EOFError, OSError, ValueError):
            pass
        self.client_closed.set()
        self._close_stdin()
        self._kill()

    def _client_message(self, payload: bytes) -> None:
        channel, data = payload[0], payload[1:]
        if channel == CLOSE_CHANNEL and data[:1] == bytes([STDIN]):
            self._close_stdin()
        elif channel == STDIN and data and self.proc and self.proc.stdin:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # the command stopped reading: drop the input, as a pipe would

    def _close_stdin(self) -> None:
        if self.proc and self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _kill(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
            with _RUNNING_LOCK:
                _RUNNING.discard(self.proc)


_RUNNING: set[subprocess.Popen[bytes]] = set()  # exec'd commands still running
_RUNNING_LOCK = threading.Lock()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@atexit.register
def _kill_all() -> None:
    """A sandbox that exits mid-exec leaves no exec'd command behind."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for proc in running:
        _kill_group(proc)
