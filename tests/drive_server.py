"""A local stand-in for Google Drive, so tests drive the real gdown client offline.

dfpir sends Google's requests here when ``DFPIR_DRIVE_ENDPOINT`` names this server; each path then
starts with the host it was meant for. It answers the way Drive does for a public folder:

- ``/drive.google.com/embeddedfolderview?id=FOLDER``: the folder page gdown reads (title, one link per file
  ``https://drive.google.com/file/d/ID/view``, one per sub-folder ``.../drive/folders/ID``).
- ``/drive.google.com/uc?id=ID``: a 303 to ``drive.usercontent.google.com/download``, which answers the
  "cannot scan this file for viruses" page with its ``download-form``; submitting the form (``confirm=t``)
  sends the file with ``Content-Disposition`` and ``Content-Length``. ``Range`` requests get a 206.

Faults: ``quota`` (ids answered with Drive's "Too many users have viewed or downloaded this file" page) and
``truncate_at[id] = n`` (every transfer of that file stops after byte ``n`` of it).
"""

from __future__ import annotations

import html
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeDrive:
    folder_id: str
    folder_name: str = "DFPIR"
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (name, bytes)
    subfolders: dict[str, tuple[str, dict[str, tuple[str, bytes]]]] = field(default_factory=dict)  # id -> (name, files)
    quota: set[str] = field(default_factory=set)
    truncate_at: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    endpoint: str = ""

    def add_file(self, name: str, data: bytes, folder: str | None = None) -> str:
        file_id = f"1{'x' * 20}{len(self.all_files()):04d}{abs(hash(name)) % 10**6:06d}"
        (self.subfolders[folder][1] if folder else self.files)[file_id] = (name, data)
        return file_id

    def add_folder(self, name: str) -> str:
        folder_id = f"1{'f' * 24}{len(self.subfolders):04d}"
        self.subfolders[folder_id] = (name, {})
        return folder_id

    def all_files(self) -> dict[str, tuple[str, bytes]]:
        merged = dict(self.files)
        for _, files in self.subfolders.values():
            merged.update(files)
        return merged

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.endpoint

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _folder_page(name: str, files: dict[str, tuple[str, bytes]], folders: dict[str, str]) -> bytes:
    rows = [f'<div class="flip-entry"><a href="https://drive.google.com/file/d/{file_id}/view?usp=drive_web">'
            f'<div class="flip-entry-title">{html.escape(file_name)}</div></a></div>'
            for file_id, (file_name, _) in files.items()]
    rows += [f'<div class="flip-entry"><a href="https://drive.google.com/drive/folders/{folder_id}">'
             f'<div class="flip-entry-title">{html.escape(folder_name)}</div></a></div>'
             for folder_id, folder_name in folders.items()]
    return (f"<!DOCTYPE html><html><head><title>{html.escape(name)}</title></head><body>"
            f'<div class="flip-entries">{"".join(rows)}</div></body></html>').encode()


def _scan_warning(file_id: str, name: str) -> bytes:
    form = ('<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
            f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" value="download">'
            '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0f0f">'
            '<input type="submit" value="Download anyway"></form>')
    return (f"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>\n"
            f"<p>{html.escape(name)} is too large for Google Drive to scan for viruses.</p>\n{form}\n</body></html>").encode()


QUOTA_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>\n"
              b'<p class="uc-error-caption">Sorry, you can&#39;t view or download this file at this time.</p>\n'
              b'<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try '
              b"accessing the file again later. If the file you are trying to access is particularly large or is "
              b"shared with many people, it may take up to 24 hours to be able to view or download the file.</p>\n"
              b"</body></html>")


def _handler(drive: FakeDrive) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
            pass

        def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            drive.requests.append(url.path + (f"?{url.query}" if url.query else ""))
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            host, _, path = url.path.lstrip("/").partition("/")
            html_type = {"Content-Type": "text/html; charset=utf-8"}
            if host == "drive.google.com" and path == "embeddedfolderview":
                return self.folder(query.get("id", ""))
            if host == "drive.google.com" and path == "uc":
                return self.send(303, b"", {"Location": "https://drive.usercontent.google.com/download?id="
                                            f"{query.get('id', '')}&export=download"})
            if host == "drive.usercontent.google.com" and path == "download":
                file_id = query.get("id", "")
                found = drive.all_files().get(file_id)
                if found is None:
                    return self.send(404, b"<html><title>Not Found</title></html>", html_type)
                if file_id in drive.quota:
                    return self.send(200, QUOTA_PAGE, html_type)
                if query.get("confirm") != "t":
                    return self.send(200, _scan_warning(file_id, found[0]), html_type)
                return self.file(file_id, *found)
            self.send(404, b"<html><title>Not Found</title></html>", html_type)

        def folder(self, folder_id: str) -> None:
            html_type = {"Content-Type": "text/html; charset=utf-8"}
            if folder_id == drive.folder_id:
                folders = {key: name for key, (name, _) in drive.subfolders.items()}
                return self.send(200, _folder_page(drive.folder_name, drive.files, folders), html_type)
            if folder_id in drive.subfolders:
                name, files = drive.subfolders[folder_id]
                return self.send(200, _folder_page(name, files, {}), html_type)
            self.send(404, b"<html><title>Not Found</title></html>", html_type)

        def file(self, file_id: str, name: str, data: bytes) -> None:
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Disposition", f'attachment; filename="{name}"')
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            cut = drive.truncate_at.get(file_id)
            if cut is not None and start + len(body) > cut:
                self.wfile.write(body[: max(cut - start, 0)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler
