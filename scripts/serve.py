"""Serve the built site/ on 127.0.0.1 (never on other interfaces).

    python3 scripts/serve.py [--port 8000] [--dir site] [--base /myproject/]

A plain static server: the site needs no special headers (the opfs-sahpool VFS works without
COOP/COEP), only correct MIME types. Responses say ``Cache-Control: no-cache`` so a rebuilt
site is picked up on reload (the browser revalidates; unchanged files cost a 304), and
``X-Content-Type-Options: nosniff`` so a file is only ever used as the type it is served as.

It serves files inside the site folder and nothing else: a symlink that leads out of it is
404, like a missing file, and a folder without an ``index.html`` is 403 (no listings).
``--base /myproject/`` serves the site under that path, as GitHub Pages serves a project
site; anything outside it is 404, and ``/`` redirects to it.
"""

from __future__ import annotations

import argparse
import http.server
import os
import posixpath
import sys
import urllib.parse
from http import HTTPStatus
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MIME_TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".json": "application/json",
    ".map": "application/json",
    ".py": "text/x-python; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


def normalise_base(base: str) -> str:
    """``myproject`` or ``/myproject`` -> ``/myproject/``; ``/`` stays ``/``."""
    parts = [p for p in base.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"--base {base!r}: a base path cannot contain . or ..")
    return "/" + "".join(f"{p}/" for p in parts)


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
    server: SiteServer
    # HTTP/1.1: browsers revalidate with the ETag only on HTTP/1.1 responses. One request per
    # connection (Connection: close), so a stopped server leaves no open connection behind.
    protocol_version = "HTTP/1.1"

    etag: str | None = None

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.etag:
            self.send_header("ETag", self.etag)
        if not self.close_connection:
            self.send_header("Connection", "close")
        super().end_headers()

    def send_head(self):  # type: ignore[no-untyped-def]
        base = self.server.base
        path = urllib.parse.urlsplit(self.path).path
        if base != "/" and path in ("/", base.rstrip("/")):
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", base)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if not path.startswith(base):
            self.send_error(HTTPStatus.NOT_FOUND, f"not found: this server serves the site under {base}")
            return None
        root = Path(self.server.directory).resolve()
        try:
            real = Path(self.translate_path(self.path)).resolve()
            st = real.stat() if real.is_file() else None
        except (OSError, RuntimeError, ValueError):
            # No such file can exist: a symlink loop, a NUL byte or bytes that are not UTF-8
            # in the path, a name or path too long for the file system. Answer, rather than
            # drop the connection with the exception.
            self.send_error(HTTPStatus.NOT_FOUND, "file not found")
            return None
        if real != root and root not in real.parents:
            # A symlink out of the site: the file may exist, but it is not part of the site.
            self.send_error(HTTPStatus.NOT_FOUND, "file not found")
            return None
        if st is not None:
            # Revalidation by ETag, not by date: a file of another build (a rollback, or two
            # builds in the same second) can carry an older or equal modification time, and
            # If-Modified-Since would answer 304 for it. The ETag changes with any new file.
            self.etag = f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'
            del self.headers["If-Modified-Since"]
            if self.etag in (t.strip() for t in self.headers.get("If-None-Match", "").split(",")):
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self.end_headers()
                return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        # The folder is the server's, read per request: a test can switch the server to
        # another build (a new deploy) on the same port, so the origin stays the same.
        # The request path without the base, mapped into the site folder; ".." never climbs
        # out (SimpleHTTPRequestHandler drops such segments too).
        path = urllib.parse.urlsplit(path).path
        base = self.server.base
        if path.startswith(base):
            path = "/" + path[len(base) :]
        trailing_slash = path.endswith("/")
        path = posixpath.normpath(urllib.parse.unquote(path, errors="surrogatepass"))
        result = str(self.server.directory)
        for word in filter(None, path.split("/")):
            if os.path.dirname(word) or word in (os.curdir, os.pardir):
                continue
            result = os.path.join(result, word)
        if trailing_slash:
            result += os.sep
        return result

    def list_directory(self, path):  # type: ignore[no-untyped-def]
        self.send_error(HTTPStatus.FORBIDDEN, "directory listings are off")
        return None

    def log_message(self, format: str, *args: object) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


class SiteServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    quiet = False
    #: The folder served; may be replaced while serving (the next request uses the new one).
    directory: Path
    #: The path the site is served under, e.g. "/" or "/myproject/".
    base = "/"

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        # A browser that goes away mid-download (a page reloaded while it boots) resets the
        # connection: nothing is wrong, so no traceback. Anything else is printed as before.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def make_server(directory: Path, port: int = 0, quiet: bool = False, base: str = "/") -> SiteServer:
    """A server for ``directory`` on 127.0.0.1:``port`` (0: a free port) under the path
    ``base``; not yet serving."""
    server = SiteServer(("127.0.0.1", port), SiteHandler, bind_and_activate=False)
    server.directory = Path(directory)
    server.base = normalise_base(base)
    server.quiet = quiet
    try:
        server.server_bind()
        server.server_activate()
    except OSError:
        server.server_close()
        raise
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dir", type=Path, default=ROOT / "site")
    parser.add_argument("--base", default="/", help="serve the site under this path, e.g. /myproject/ (default /)")
    args = parser.parse_args(argv)
    if not (args.dir / "index.html").is_file():
        print(f"{args.dir} has no index.html: build the site first (npm run build)", file=sys.stderr)
        return 2
    try:
        base = normalise_base(args.base)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        server = make_server(args.dir, args.port, base=base)
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"serving {args.dir} on http://127.0.0.1:{server.server_address[1]}{base} (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
