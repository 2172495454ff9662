"""The harness of the oidc tests: panva's ``oidc-provider`` (Node) on 127.0.0.1.

The npm package is pinned in ``package.json`` / ``package-lock.json`` next to this file and
installed with ``npm ci`` into this folder on first use (``nox -s oidc`` does it first).
Needs Node 20 or later on the PATH.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).parent
BASE_URL = "https://app.example.com"
CALLBACK = f"{BASE_URL}/api/auth/oauth/{{}}/callback"
CLIENT_SECRET = "real-op-secret:with spaces+and%signs-DO-NOT-LEAK"
METHODS = ("client_secret_basic", "client_secret_post", "none")
CLIENT_IDS = {
    "client_secret_basic": "basic-client",
    "client_secret_post": "post-client",
    "none": "public-client",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_key() -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    """A fresh RSA key and its private JWK (``kid``, ``alg`` RS256, ``use`` sig)."""
    private = rsa.generate_private_key(65537, 2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private, as_dict=True)
    return private, {**jwk, "kid": secrets.token_urlsafe(8), "alg": "RS256", "use": "sig"}


def npm_ci() -> None:
    if (HERE / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    assert npm, "the oidc tests need Node 20+ and npm on the PATH"
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)], check=True, timeout=300
    )


class RealProvider:
    """``node server.js`` with a fresh configuration; restartable with new keys.

    :param methods: the client authentication methods the server accepts, with one client
        registered for each.

    Attributes:
        issuer: ``http://127.0.0.1:{port}``.
        key: The private key signing ID tokens now, and ``kid`` its id.
    """

    def __init__(self, workdir: Path, methods: tuple[str, ...] = METHODS) -> None:
        self.workdir = workdir
        self.methods = methods
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.key, self.jwk = new_key()

    @property
    def kid(self) -> str:
        return str(self.jwk["kid"])

    def config(self) -> dict[str, Any]:
        redirects = [CALLBACK.format("op"), CALLBACK.format("mixup")]
        return {
            "issuer": self.issuer,
            "port": self.port,
            "keys": [self.jwk],
            "cookieKeys": [secrets.token_urlsafe(32)],
            "clientAuthMethods": list(self.methods),
            "clients": [
                {
                    "client_id": CLIENT_IDS[method],
                    **({"client_secret": CLIENT_SECRET} if method != "none" else {}),
                    "token_endpoint_auth_method": method,
                    "redirect_uris": redirects,
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                }
                for method in self.methods
            ],
        }

    def start(self) -> None:
        path = self.workdir / "op.json"
        path.write_text(json.dumps(self.config()))
        node = shutil.which("node")
        assert node, "the oidc tests need Node 20+ on the PATH"
        self.process = subprocess.Popen(
            [node, str(HERE / "server.js"), str(path)],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NODE_ENV": "test"},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()  # blocks until ready or exit
        assert line.startswith("ready "), f"oidc-provider did not start: {line!r}"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def rotate(self) -> None:
        """Restart on the same port, signing with a new key (a new ``kid``) only."""
        self.stop()
        self.key, self.jwk = new_key()
        deadline = time.monotonic() + 10
        while True:  # bounded: the port is free again within moments
            try:
                self.start()
                return
            except AssertionError:
                self.stop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)




Browser = Callable[[str], Awaitable[dict[str, str]]]
