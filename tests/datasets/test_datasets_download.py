"""Downloads end to end against a local HTTP server on 127.0.0.1: resume, checksums, safe unpacking."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cnnbase.config import DatasetConfig
from cnnbase.datasets.download import DownloadError, download_dataset, fetch, file_specs, unpack
from cnnbase.datasets.mit67 import read_mit67
from cnnbase.errors import ConfigError, DatasetError


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        data = srv.files.get(self.path)  # type: ignore[attr-defined]
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and srv.ranges:  # type: ignore[attr-defined]
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))  # type: ignore[union-attr]
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if srv.cuts > 0:  # type: ignore[attr-defined]
            srv.cuts -= 1  # type: ignore[attr-defined]
            self.wfile.write(body[: max(1, len(body) // 3)])  # promise everything, send a third, hang up
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log, srv.cuts, srv.ranges = {}, [], 0, True  # type: ignore[attr-defined]
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _payload(n: int = 200_000) -> bytes:
    return bytes((i * 7919) % 251 for i in range(n))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ----------------------------------------------------------------------------------------------------- fetch


def test_fetch_and_verify(server, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.bin"] = data
    path, sha, skipped = fetch(server.url + "/a.bin", tmp_path / "a.bin", sha256=_sha(data), md5=hashlib.md5(data).hexdigest(), backoff=0)
    assert path.read_bytes() == data and sha == _sha(data) and not skipped
    assert not (tmp_path / "a.bin.part").exists()
    assert fetch(server.url + "/a.bin", tmp_path / "a.bin", sha256=_sha(data))[2] is True  # already there
    assert len(server.log) == 1


def test_checksum_mismatch_keeps_no_bad_file(server, tmp_path: Path) -> None:
    server.files["/a.bin"] = _payload()
    with pytest.raises(DownloadError, match=r"checksum mismatch \(sha256 [0-9a-f]{64}, expected sha256 0{64}\); the bad file was deleted"):
        fetch(server.url + "/a.bin", tmp_path / "a.bin", sha256="0" * 64, backoff=0)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()
    with pytest.raises(DownloadError, match="expected md5 0{32}"):
        fetch(server.url + "/a.bin", tmp_path / "a.bin", md5="0" * 32, backoff=0)


def test_cut_connection_resumes_with_range(server, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.bin"] = data
    server.cuts = 2
    path, sha, _ = fetch(server.url + "/a.bin", tmp_path / "a.bin", sha256=_sha(data), retries=3, backoff=0)
    assert path.read_bytes() == data
    ranges = [r for _, r in server.log]
    assert ranges[0] is None and len(ranges) == 3
    first = len(data) // 3
    assert ranges[1] == f"bytes={first}-"  # resumed where the cut left it, not from zero
    assert ranges[2] == f"bytes={first + (len(data) - first) // 3}-"


def test_interrupted_download_resumes_on_the_next_run(server, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.bin"] = data
    server.cuts = 1
    with pytest.raises(DownloadError, match="rerun the same command to resume"):
        fetch(server.url + "/a.bin", tmp_path / "a.bin", sha256=_sha(data), retries=0, backoff=0)
    part = tmp_path / "a.bin.part"
    assert part.stat().st_size == len(data) // 3 and not (tmp_path / "a.bin").exists()
    fetch(server.url + "/a.bin", tmp_path / "a.bin", sha256=_sha(data), retries=0, backoff=0)
    assert (tmp_path / "a.bin").read_bytes() == data and not part.exists()
    assert server.log[-1][1] == f"bytes={len(data) // 3}-"


def test_server_without_range_support_restarts(server, tmp_path: Path) -> None:
    data = _payload(5000)
    server.files["/a.bin"] = data
    server.ranges = False
    (tmp_path / "a.bin.part").write_bytes(b"garbage that is not the start of the file")
    fetch(server.url + "/a.bin", tmp_path / "a.bin", sha256=_sha(data), backoff=0)
    assert (tmp_path / "a.bin").read_bytes() == data


def test_complete_part_and_416(server, tmp_path: Path) -> None:
    data = _payload(3000)
    server.files["/a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data)  # crashed after the last byte, before the rename
    fetch(server.url + "/a.bin", tmp_path / "a.bin", sha256=_sha(data), backoff=0)
    assert (tmp_path / "a.bin").read_bytes() == data


def test_http_errors(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"/missing\.bin: HTTP 404"):
        fetch(server.url + "/missing.bin", tmp_path / "m.bin", backoff=0)
    with pytest.raises(DownloadError, match="connection failed 1 times"):
        fetch("http://127.0.0.1:9/nothing", tmp_path / "n.bin", retries=0, timeout=2, backoff=0)


def test_progress_bar(server, tmp_path: Path) -> None:
    from rich.console import Console

    from cnnbase.datasets.download import progress_bar

    data = _payload(70_000)
    server.files["/a.bin"] = data
    out = io.StringIO()
    with progress_bar(Console(file=out, force_terminal=False)) as bar:
        fetch(server.url + "/a.bin", tmp_path / "a.bin", progress=bar, backoff=0)
    assert bar.tasks[0].completed == len(data) and bar.tasks[0].total == len(data)


# ---------------------------------------------------------------------------------------------------- unpack


def _tar(members: dict[str, bytes], *, links: dict[str, str] | None = None, mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def test_unpack_tar_and_zip(tmp_path: Path) -> None:
    (tmp_path / "a.tar.gz").write_bytes(_tar({"VOCdevkit/VOC2007/x.txt": b"x", "VOCdevkit/VOC2007/sub/y.txt": b"y"}, links={"VOCdevkit/l": "VOC2007/x.txt"}))
    assert unpack(tmp_path / "a.tar.gz", tmp_path / "out", strip_components=1) == 2
    assert (tmp_path / "out" / "VOC2007" / "sub" / "y.txt").read_bytes() == b"y"
    assert (tmp_path / "out" / "l").resolve() == (tmp_path / "out" / "VOC2007" / "x.txt").resolve()
    (tmp_path / "b.zip").write_bytes(_zip({"paris_120310/defense_1_query.txt": b"q", "paris_120310/": b""}))
    assert unpack(tmp_path / "b.zip", tmp_path / "z") == 1
    assert (tmp_path / "z" / "paris_120310" / "defense_1_query.txt").read_bytes() == b"q"


@pytest.mark.parametrize(
    "archive",
    [
        _tar({"ok.txt": b"1", "../evil.txt": b"x"}),
        _tar({"/tmp/evil_abs.txt": b"x"}),
        _tar({"a/../../evil.txt": b"x"}, mode="w"),
        _tar({"ok.txt": b"1"}, links={"link": "../../etc/passwd"}),
        _tar({"ok.txt": b"1"}, links={"link": "/etc/passwd"}),
        _zip({"../evil.txt": b"x"}),
        _zip({"/abs/evil.txt": b"x"}),
    ],
)
def test_unpack_refuses_escaping_members(tmp_path: Path, archive: bytes) -> None:
    src = tmp_path / ("a.zip" if archive[:2] == b"PK" else "a.tar.gz")
    src.write_bytes(archive)
    target = tmp_path / "deep" / "target"
    with pytest.raises(DownloadError, match="outside|refusing"):
        unpack(src, target)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_unpack_never_writes_through_an_outside_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "jpg").symlink_to(outside)
    (tmp_path / "a.tar").write_bytes(_tar({"jpg/x.jpg": b"x"}, mode="w"))
    with pytest.raises(DownloadError, match="through a link"):
        unpack(tmp_path / "a.tar", target)
    assert not (outside / "x.jpg").exists()


def test_unpack_bad_archive(tmp_path: Path) -> None:
    (tmp_path / "a.tgz").write_bytes(b"<html>302 Found</html>")
    with pytest.raises(DownloadError, match="not a readable tar or zip archive"):
        unpack(tmp_path / "a.tgz", tmp_path / "out")


# ----------------------------------------------------------------------------------------- whole datasets


def _mit67_archive(fake, tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    fake.make_mit67(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(src / "Images", arcname="Images")
    return buf.getvalue()


def _cfg(tmp_path: Path, files: list[dict], **download: object) -> DatasetConfig:
    return DatasetConfig(
        name="mit67", adapter="mit67", task="classification", root=tmp_path / "data" / "mit67", metric="mean_class_accuracy",
        download={"files": files, **download},
    )


def test_download_dataset_end_to_end(server, tmp_path: Path, fake) -> None:
    archive = _mit67_archive(fake, tmp_path)
    server.files["/indoorCVPR_09.tar.gz"] = archive
    server.files["/lists/TrainImages.txt"] = (tmp_path / "src" / "TrainImages.txt").read_bytes()
    server.files["/lists/TestImages.txt"] = (tmp_path / "src" / "TestImages.txt").read_bytes()
    server.cuts = 1  # the archive transfer breaks once and resumes
    files = [
        {"url": server.url + "/indoorCVPR_09.tar.gz", "sha256": _sha(archive)},
        {"url": server.url + "/lists/TrainImages.txt"},
        {"url": server.url + "/lists/TestImages.txt", "sha256": _sha(server.files["/lists/TestImages.txt"])},
    ]
    cfg = _cfg(tmp_path, files)
    results = download_dataset(cfg, backoff=0)
    assert [r.pinned for r in results] == [True, False, True]
    assert results[0].unpacked_into == cfg.root and (cfg.root / "downloads" / "indoorCVPR_09.tar.gz").is_file()
    ds = read_mit67(cfg.root)
    assert len(ds.splits["train"]) == 4 and all(s.path.is_file() for s in ds.splits["train"])
    assert any(r == f"bytes={len(archive) // 3}-" for _, r in server.log)
    n = len(server.log)
    again = download_dataset(cfg, backoff=0)  # everything is there: no request, no unpack
    assert all(r.skipped for r in again) and len(server.log) == n


def test_download_dataset_checksum_mismatch(server, tmp_path: Path) -> None:
    server.files["/x.tar.gz"] = _tar({"a.txt": b"a"})
    cfg = _cfg(tmp_path, [{"url": server.url + "/x.tar.gz", "md5": "0" * 32}])
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset(cfg, backoff=0)
    assert not (cfg.root / "downloads" / "x.tar.gz").exists() and not (cfg.root / "a.txt").exists()


def test_file_specs_validation(tmp_path: Path) -> None:
    assert file_specs(_cfg(tmp_path, [{"url": "https://h/x/CUB_200_2011.tgz?download=1", "filename": "CUB_200_2011.tgz", "md5": "a" * 32}]))[0].is_archive
    assert file_specs(_cfg(tmp_path, [{"url": "https://h/a%20b.mat"}]))[0].filename == "a b.mat"
    for bad, match in [
        ({"url": "ftp://h/x.tar"}, "only http"),
        ({"url": "https://h/x.tar", "sha256": "xyz"}, "sha256 must be 64 hex"),
        ({"url": "https://h/x.tar", "dest": "../up"}, "inside the dataset root"),
        ({"url": "https://h/x.tar", "colour": "red"}, "unknown field"),
        ({"md5": "a" * 32}, "needs a 'url'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            file_specs(_cfg(tmp_path, [bad]))
    with pytest.raises(DatasetError, match="no official download location; get it from ME at .*mit67"):
        download_dataset(_cfg(tmp_path, [], instructions="get it from ME at ROOT"))


def test_cli_download(server, tmp_path: Path, fake, yaml_file) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from cnnbase.cli import app

    archive = _mit67_archive(fake, tmp_path)
    server.files["/indoorCVPR_09.tar.gz"] = archive
    for name in ("TrainImages.txt", "TestImages.txt"):
        server.files[f"/{name}"] = (tmp_path / "src" / name).read_bytes()
    entry = {
        "adapter": "mit67", "task": "classification", "root": str(tmp_path / "nowhere"), "metric": "mean_class_accuracy",
        "published": {"splits": {"train": 4, "test": 2}, "classes": 3},
        "download": {"files": [
            {"url": server.url + "/indoorCVPR_09.tar.gz", "sha256": _sha(archive)},
            {"url": server.url + "/TrainImages.txt"},
            {"url": server.url + "/TestImages.txt"},
        ]},
    }  # fmt: skip
    yml = yaml_file({"mit67": entry})
    root = tmp_path / "mit"
    r = CliRunner().invoke(app, ["datasets", "download", "mit67", "--root", str(root), "--datasets", str(yml)])
    assert r.exit_code == 0, r.output
    assert f"sha256 {_sha(archive)}" in r.output and "no checksum pinned" in r.output
    r = CliRunner().invoke(app, ["datasets", "verify", "mit67", "--root", str(root), "--datasets", str(yml), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
    entry["download"]["files"][0]["sha256"] = "f" * 64
    (root / "downloads" / "indoorCVPR_09.tar.gz").unlink()
    yml = yaml_file({"mit67": entry})
    r = CliRunner().invoke(app, ["datasets", "download", "mit67", "--root", str(root), "--datasets", str(yml)])
    assert r.exit_code == 1 and "error:" in r.output and "checksum mismatch" in r.output
