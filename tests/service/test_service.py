"""``icd serve`` through real HTTP: a server process on 127.0.0.1 over a small index of scikit-image photos.

Matches with evidence, pair scores, refused uploads (each with its 4xx and a message naming the upload), the bearer
token, adding and removing references, a bounded load, and kill -9 during an add."""
from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from matcher.api import MatchRows
from matcher.config import MatcherConfig
from matcher.references.disk.store import IndexStore
from matcher.service.client import ServiceClient, encode_multipart, run_load
from matcher.service.process import ServerProcess

CONFIG_OVERRIDES = {"pipeline": {"reference_regions": ["grid2"]}}  # 4 crops per reference keeps the tests fast
CONFIG = MatcherConfig.make(**CONFIG_OVERRIDES)
TOKEN = "test-token-0123456789"
MAX_UPLOAD_MB = 1


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]


PHOTOS = {"astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea, "rocket": data.rocket,
          "ihc": data.immunohistochemistry, "camera": data.camera, "coins": data.coins, "clock": data.clock}


def _jpeg(a: np.ndarray, quality: int = 90, side: int = 320) -> bytes:
    im = Image.fromarray(_rgb(a))
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _copy_of(jpeg: bytes, seed: int = 0) -> bytes:
    """An edited copy: a crop of 80 % of the picture, brightened, re-encoded at quality 60."""
    rng = np.random.default_rng(seed)
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = im.size
    x, y = int(rng.integers(0, w // 5)), int(rng.integers(0, h // 5))
    a = np.asarray(im.crop((x, y, x + int(w * 0.8), y + int(h * 0.8)))).astype(np.float32) * 1.1
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=60)
    return buf.getvalue()


def _png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def _drawing(seed: int) -> bytes:
    """A distinct, well-textured 256 px picture: 40 random rectangles and ellipses."""
    from PIL import ImageDraw

    rng = np.random.default_rng(1000 + seed)
    im = Image.new("RGB", (256, 256), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = (int(v) for v in rng.integers(0, 230, 2))
        x1, y1 = x0 + int(rng.integers(8, 80)), y0 + int(rng.integers(8, 80))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x1, y1), fill=colour)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    """An index of the 8 PHOTOS (ids = their names), built in this process."""
    root = tmp_path_factory.mktemp("service")
    refs = root / "refs"
    refs.mkdir()
    for name, make in PHOTOS.items():
        (refs / f"{name}.jpg").write_bytes(_jpeg(make()))
    with IndexStore.open(root / "index", CONFIG, create=True) as store:
        assert store.add_references(refs).added == len(PHOTOS)
    return root / "index"


@pytest.fixture(scope="module")
def server(index_dir, tmp_path_factory):
    """A server with a token and a 1 MB upload limit, started in an empty folder with its own empty TMPDIR:
    after the tests, neither holds a file (uploads never touch the disk; nothing is written outside the index)."""
    root = tmp_path_factory.mktemp("server")
    cwd, tmp = root / "cwd", root / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    srv = ServerProcess(index_dir, token=TOKEN, args=["--max-upload-mb", str(MAX_UPLOAD_MB)], env=env, cwd=cwd,
                        log=root / "server.log").start()
    try:
        yield srv
    finally:
        code = srv.stop()
    assert code in (0, -signal.SIGTERM), srv.log_text()  # uvicorn shuts down, then re-raises SIGTERM
    assert "Application shutdown complete" in srv.log_text()
    written = sorted(str(p.relative_to(root)) for p in (*cwd.rglob("*"), *tmp.rglob("*")) if not p.is_dir())
    assert written == []
    # loading the models makes torch create its (empty) compile-cache folder in the temporary folder
    assert {p.name for p in cwd.iterdir()} | {p.name for p in tmp.iterdir()} <= {"torchinductor_root"}


@pytest.fixture(scope="module")
def client(server) -> ServiceClient:
    return server.client()


# --------------------------------------------------------------------------------------------------- matching
def test_copy_is_matched_with_evidence(client):
    reply = client.match(_copy_of(_jpeg(data.coffee())), "edited coffee.jpg")
    assert reply.status == 200, reply.text
    body = reply.body
    assert body["query"] == "edited coffee.jpg" and body["references"] == len(PHOTOS)
    best = body["matches"][0]
    assert best["reference_id"] == "coffee" and best["is_copy"] and best["score"] > 0.9
    assert set(MatchRows.columns) <= set(best) and best["n_inliers"] > 20 and best["contributions"]
    assert [m["reference_id"] for m in body["matches"] if m["is_copy"]] == ["coffee"]
    assert set(body["seconds"]) == {"decode", "describe", "match"}
    top = client.match(_copy_of(_jpeg(data.rocket()), seed=1), top_k=1, min_score=0.5).body["matches"]
    assert [m["reference_id"] for m in top] == ["rocket"]


def test_unrelated_picture_is_no_copy(client):
    reply = client.match(_drawing(-1), "drawing.jpg", min_score=0.5)
    assert reply.status == 200 and reply.body["matches"] == []


def test_score_of_a_pair(client):
    coffee = _jpeg(data.coffee())
    same = client.score(("q.jpg", _copy_of(coffee)), ("r.jpg", coffee))
    assert same.status == 200, same.text
    assert same.body["is_copy"] and same.body["query_id"] == "q.jpg" and same.body["reference_id"] == "r.jpg"
    assert same.body["local"]["n_inliers"] > 20 and "full" in same.body["global"]
    other = client.score(("q.jpg", _copy_of(coffee)), ("r.jpg", _jpeg(data.astronaut())))
    assert other.status == 200 and not other.body["is_copy"]
    body, ctype = encode_multipart(files={"query": ("q.jpg", coffee)})
    missing = client.request("POST", "/score", body=body, content_type=ctype)
    assert missing.status == 400 and missing.body["error"] == "missing_file" and "reference" in missing.body["detail"]


# --------------------------------------------------------------------------------------------------- bad uploads
def _bad_uploads() -> list[tuple[str, bytes, int, str]]:
    coffee = _jpeg(data.coffee())
    rng = np.random.default_rng(0)
    return [
        ("empty.jpg", b"", 400, "empty"),
        ("cut.jpg", coffee[: len(coffee) // 3], 422, "truncated"),
        ("notes.txt", b"this is not a picture\n" * 40, 422, "not_an_image"),
        ("bomb.png", _png_bomb(), 413, "too_many_pixels"),
        ("tiny.jpg", _jpeg(np.full((12, 12, 3), 128, np.uint8)), 422, "too_small"),
        ("huge.jpg", rng.bytes(int(1.5 * MAX_UPLOAD_MB * 2**20)), 413, "too_large"),  # over the body limit: refused
        ("big.jpg", rng.bytes(MAX_UPLOAD_MB * 2**20 + 10_000), 413, "too_large"),  # from its size; over the part limit
    ]


@pytest.mark.parametrize("name,payload,status,error", _bad_uploads(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_upload_is_refused_naming_the_problem(client, name, payload, status, error):
    reply = client.match(payload, name)
    assert (reply.status, reply.body["error"]) == (status, error), reply.text
    assert name in reply.body["detail"] or "request body of" in reply.body["detail"]  # refused before reading it
    assert client.health().status == 200  # and the server carries on


def test_malformed_requests(client):
    raw = client.request("POST", "/match", body=b"\xff\xd8\xff", content_type="image/jpeg")
    assert raw.status == 415 and raw.body["error"] == "not_multipart"
    body, ctype = encode_multipart(files={"file": ("q.jpg", _jpeg(data.coffee()))})
    cut = client.request("POST", "/match", body=body[:-40], content_type=ctype)
    assert cut.status == 400 and cut.body["error"] == "bad_form"
    wrong_field = client.request("POST", "/match", body=body.replace(b'name="file"', b'name="image"'),
                                 content_type=ctype)
    assert wrong_field.status == 400 and wrong_field.body["error"] == "missing_file"
    assert client.match(_jpeg(data.coffee()), top_k=0).status == 422
    assert client.request("GET", "/nowhere").status == 404


# --------------------------------------------------------------------------------------------------- auth
def test_bearer_token(server, client):
    coffee = _jpeg(data.coffee())
    for token in (None, "wrong-token"):
        c = server.client(token=token)
        for reply in (c.match(coffee), c.stats(), c.add("x", coffee), c.remove("coffee")):
            assert reply.status == 401 and reply.body["error"] == "unauthorized"
            assert reply.headers["www-authenticate"] == "Bearer"
    assert client.stats().status == 200
    assert server.client(token=None).health().body == {"status": "ok"}  # open, but says nothing more
    full = client.health().body
    assert full["status"] == "ok" and full["references"] >= len(PHOTOS) and Path(full["index"]).name == "index"
    docs = server.client(token=None)
    assert docs.request("GET", "/docs").status == 200
    spec = docs.request("GET", "/openapi.json").body
    assert {"/match", "/score", "/references", "/references/{ref_id}", "/health", "/stats"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/match"]["post"]["requestBody"]["content"]


# --------------------------------------------------------------------------------------------------- references
def test_add_match_remove_and_add_again(client):
    moto = _jpeg(data.stereo_motorcycle()[0])
    query = _copy_of(moto, seed=2)
    assert "moto" not in [m["reference_id"] for m in client.match(query).body["matches"] if m["is_copy"]]
    added = client.add("moto", moto)
    assert (added.status, added.body["status"]) == (201, "added"), added.text
    assert added.body["references"] == len(PHOTOS) + 1
    best = client.match(query).body["matches"][0]
    assert best["reference_id"] == "moto" and best["is_copy"]
    assert (client.add("moto", moto).status, client.add("moto", moto).body["status"]) == (200, "already")
    conflict = client.add("moto", _jpeg(data.astronaut()))
    assert conflict.status == 409 and conflict.body["error"] == "id_conflict"
    bad = client.add("moto", b"not a picture", "moto.txt")
    assert bad.status == 422 and bad.body["error"] == "not_an_image" and "moto.txt" in bad.body["detail"]
    removed = client.remove("moto")
    assert (removed.status, removed.body["status"], removed.body["references"]) == (200, "removed", len(PHOTOS))
    assert "moto" not in [m["reference_id"] for m in client.match(query, top_k=100).body["matches"]]
    assert client.remove("moto").status == 404
    again = client.add("moto", moto)
    assert again.status == 201 and client.match(query).body["matches"][0]["reference_id"] == "moto"
    assert client.remove("moto").status == 200


@pytest.mark.parametrize("ref_id,status", [("", 400), ("a/b", 400), ("..", 400), ("x" * 201, 400),
                                           (" padded", 400), ("tab\there", 400)])
def test_bad_reference_ids_are_refused(client, ref_id, status):
    reply = client.add(ref_id, _jpeg(data.coffee()), "p.jpg")
    assert reply.status == status and reply.body["error"] == "bad_id", reply.text


def test_stats_count_requests(client):
    client.health()
    body = client.stats().body
    assert body["references"] == len(PHOTOS) and body["uptime_s"] > 0 and body["models"]["descriptor"]
    route = body["routes"]["POST /match"]
    assert route["requests"] >= 5 and route["errors"] >= 5 and route["latency_ms"]["p50"] > 0
    assert body["requests"] >= sum(r["requests"] for r in body["routes"].values()) - 1


# --------------------------------------------------------------------------------------------------- load
@pytest.mark.slow
def test_bounded_load_has_no_errors(client):
    payloads = [(f"{name}.jpg", _copy_of(_jpeg(make()), seed=i)) for i, (name, make) in enumerate(PHOTOS.items())]
    result = run_load(client, payloads, requests=48, concurrency=8)  # 300 in bench/service_load.py
    assert result.failed == 0 and result.errors == [], result.summary()
    assert len(result.latencies) == 48 and result.statuses == {200: 48}


# --------------------------------------------------------------------------------------------------- kill -9
def test_kill_minus_9_during_adds_leaves_a_usable_index(index_dir, tmp_path):
    idx = tmp_path / "index"
    shutil.copytree(index_dir, idx)
    pictures = [(f"t{i:02d}", _drawing(i)) for i in range(40)]
    srv = ServerProcess(idx, log=tmp_path / "server.log").start()
    client = srv.client()
    done: list[str] = []
    failed: list[str] = []

    def add_all() -> None:
        for ref_id, data_ in pictures:
            try:
                if client.add(ref_id, data_).status == 201:
                    done.append(ref_id)
            except OSError as exc:  # the server died under this request
                failed.append(f"{ref_id}: {exc}")
                return

    worker = threading.Thread(target=add_all)
    worker.start()
    try:
        while len(done) < 4 and worker.is_alive():
            threading.Event().wait(0.02)
        srv.kill()
    finally:
        worker.join(60)
    assert 4 <= len(done) < len(pictures) and failed, (done, failed)
    with IndexStore.open(idx) as store:  # opens; every answered add is there, nothing twice
        ids = store.live_ids()
        assert set(done) <= set(ids) and len(ids) == len(set(ids))
        assert set(PHOTOS) <= set(ids) and len(store.global_index) == len(store)
    with ServerProcess(idx, log=tmp_path / "server2.log") as again:  # serves again: matches, and adds
        c = again.client()
        coffee = c.match(_copy_of(_jpeg(data.coffee()))).body["matches"][0]
        assert coffee["reference_id"] == "coffee" and coffee["is_copy"]
        for ref_id in (done[0], done[-1]):  # added before the kill: matched
            best = c.match(_copy_of(dict(pictures)[ref_id])).body["matches"][0]
            assert best["reference_id"] == ref_id and best["is_copy"]
        missing = [(i, d) for i, d in pictures if i not in ids]
        assert c.add(*missing[0]).status == 201
