"""scripts/serve.py serves the site and nothing else: no symlink out of it, no directory
listings, ``nosniff`` on every response, the site under a base path only, and revalidation
that never answers "not modified" for a file of another build. No browser needed.
"""

from __future__ import annotations

import http.client
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from serve import make_server


class Served:
    def __init__(self, server) -> None:
        self.server = server
        self.port = server.server_address[1]

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()


def serving(directory: Path, base: str = "/") -> Iterator[Served]:
    server = make_server(directory, 0, quiet=True, base=base)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A site folder with symlinks into and out of it, next to a secret."""
    site = tmp_path / "site"
    (site / "vendor").mkdir(parents=True)
    (site / "index.html").write_text("<p>the site</p>")
    (site / "app.js").write_text("console.log('app');")
    (site / "vendor" / "lib.js").write_text("export {};")
    (tmp_path / "secret.txt").write_text("the secret")
    (site / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (site / "up").symlink_to(tmp_path, target_is_directory=True)
    (site / "alias.js").symlink_to(site / "app.js")
    return site


@pytest.fixture
def served(tree: Path) -> Iterator[Served]:
    yield from serving(tree)


def test_the_server_never_follows_a_symlink_out_of_the_site(served):
    for path in ("/leak.txt", "/up/secret.txt"):
        status, _, body = served.get(path)
        assert status == 404, path
        assert b"the secret" not in body
    # A symlink that stays inside the site is part of it.
    assert served.get("/alias.js")[0] == 200


def test_the_server_lists_no_directory(served):
    status, _, body = served.get("/vendor/")
    assert status == 403
    assert b"lib.js" not in body
    # A folder with an index.html serves it.
    assert served.get("/")[2] == b"<p>the site</p>"


def test_every_response_of_the_server_says_nosniff(served):
    etag = served.get("/app.js")[1]["etag"]
    answers = {
        "/app.js": served.get("/app.js"),
        "/missing.js": served.get("/missing.js"),
        "/leak.txt": served.get("/leak.txt"),
        "/vendor/": served.get("/vendor/"),
        "/vendor": served.get("/vendor"),
        "/app.js not modified": served.get("/app.js", {"If-None-Match": etag}),
    }
    assert [status for status, _, _ in answers.values()] == [200, 404, 404, 403, 301, 304]
    for what, (_, headers, _) in answers.items():
        assert headers.get("x-content-type-options") == "nosniff", what
        assert headers.get("cache-control") == "no-cache", what


def test_under_a_base_path_the_server_serves_the_site_there_only(tree):
    for served in serving(tree, base="/myproject/"):
        assert served.get("/myproject/")[2] == b"<p>the site</p>"
        assert served.get("/myproject/app.js")[0] == 200
        assert served.get("/app.js")[0] == 404
        status, headers, _ = served.get("/")
        assert (status, headers["location"]) == (302, "/myproject/")
        assert served.get("/myproject/leak.txt")[0] == 404


def test_a_file_of_another_build_is_never_answered_not_modified(tree, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("<p>another build</p>")
    (other / "app.js").write_text("console.log('another build');")
    # The other build's file is older: If-Modified-Since would call it "not modified".
    old = time.time() - 3600
    os.utime(other / "app.js", (old, old))
    for served in serving(tree):
        status, headers, _ = served.get("/app.js")
        assert status == 200
        again = {"If-None-Match": headers["etag"], "If-Modified-Since": headers["last-modified"]}
        assert served.get("/app.js", again)[0] == 304
        served.server.directory = other
        status, _, body = served.get("/app.js", again)
        assert (status, body) == (200, b"console.log('another build');")




def test_a_path_the_file_system_cannot_take_is_404_not_a_dropped_connection(served):
    # A NUL byte, bytes that are not UTF-8, a name or a path too long for the file system:
    # each used to raise inside the handler, and the browser saw the connection close with
    # no answer at all.
    odd = ["/%00", "/app.js%00.html", "/%ff", "/%c0%ae%c0%ae/", "/" + "a" * 300, "/" + "a/" * 3000, "/vendor/%00/"]
    for path in odd:
        status, headers, body = served.get(path)
        assert status == 404, path
        assert headers.get("x-content-type-options") == "nosniff", path
    # The server goes on serving.
    assert served.get("/app.js")[0] == 200


def test_a_browser_that_drops_a_download_midway_prints_no_traceback(tree, capfd):
    # A page reloaded while it boots drops its downloads (the snapshot, a wheel); the server
    # used to print "Exception occurred during processing of request" and a traceback of
    # ConnectionResetError or BrokenPipeError for each one.
    (tree / "big.bin").write_bytes(b"\0" * (16 * 1024 * 1024))
    for served in serving(tree):
        before = threading.active_count()
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1)
            # Close with a reset, as a browser aborting a fetch does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        deadline = time.monotonic() + 10
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler threads end once their write fails
        assert served.get("/app.js")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
