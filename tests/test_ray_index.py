"""`pixdex index --ray`: the library embedded and tagged as a Ray Data job on a real two-node cluster
(`ray.cluster_utils.Cluster`, as Ray's own tests simulate several nodes), with the stand-in models, compared with
the local pipeline; a node taken away and replaced mid-job; a re-run that redoes nothing; the catalog filled
from the sidecars with no model call."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PIXDEX, Env, gradient, noise

from pixdex.daemon import cli
from pixdex.daemon.commands.distributed import wants_ray
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.faults import CRASH_ENV, CRASH_MODEL_ENV, HOLD_DIR_ENV, HOLD_ENV

SWAP = "swap-node-here"  # the decode of this image waits while the test swaps a node
CRASH = "crash-decoder-here"  # the decode of this image kills its worker process (SIGSEGV), wherever it runs
CRASH_MODEL = "crash-model-here"  # a batch with this image kills the model actor that runs it (SIGSEGV)


@contextlib.contextmanager
def faults(holds: Path) -> Iterator[None]:
    """The hold (`faults.hold`) and the crash (`faults.crash_on`) for the nodes started meanwhile: their workers
    inherit the environment."""
    patch = pytest.MonkeyPatch()
    patch.setenv(HOLD_ENV, f"decode:{SWAP}")
    patch.setenv(HOLD_DIR_ENV, str(holds))
    patch.setenv(CRASH_ENV, CRASH)
    patch.setenv(CRASH_MODEL_ENV, CRASH_MODEL)
    try:
        yield
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path]]:
    """A head and a second node, 1 CPU each, with the faults set (`faults`)."""
    pytest.importorskip("ray")  # the `ray` extra (in dev)
    from ray.cluster_utils import Cluster

    holds = tmp_path_factory.mktemp("ray-holds")
    with faults(holds):
        started = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        worker = started.add_node(num_cpus=1)
        started.wait_for_nodes()
    yield started, worker, holds
    started.shutdown()


def write_library(root: Path, count: int) -> list[Path]:
    paths = []
    for n in range(count):
        path = root / f"roll{n % 4}" / (f"img_{n:03d}-{SWAP}.jpg" if n == count // 3 else f"img_{n:03d}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        (gradient(n) if n % 2 else noise(n)).save(path)
        paths.append(path)
    return paths


def configure(model_dir: Path, folder: Path, data: Path) -> Path:
    """A config with the vocabulary tags on (the stand-in's words: the bundle ships the vocabulary cache)."""
    config = data / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[library]\nfolders = {json.dumps([str(folder)])}\n"
                      f"[paths]\nmodel_dir = {json.dumps(str(model_dir))}\ndata_dir = {json.dumps(str(data / 'db'))}\n"
                      '[models]\nclip = "pixdex-standin-clip"\ntagger = "pixdex-standin-tagger"\nbatch_size = 4\n')
    return config


def sidecar(image: Path) -> dict[str, Any]:
    from pixdex.indexer.sidecars.read import read_sidecar

    return read_sidecar(image.with_name(image.name + ".xmp"))


def embedding(xmp: dict[str, Any]) -> Any:
    from pixdex.indexer.sidecars.embedding import read_embedding
    from pixdex.indexer.sidecars.keys import EMBEDDING_MODEL, EMBEDDING_OF

    return read_embedding(xmp, str(xmp[EMBEDDING_MODEL]), str(xmp[EMBEDDING_OF]))


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    status = cli.main(["--config", str(config), "index", "--json", *args])
    out, err = capsys.readouterr()
    assert status == 0, err
    return dict(json.loads(out))


def swap_node_mid_job(cluster: tuple[Any, Any, Path], job: subprocess.Popen[str]) -> str:
    """Once the job is mid-way (the marked image's decode is held), kill the worker process running that decode
    task (lost as with its node, wherever Ray placed it), take the second node away with what runs there, add a
    new one, and let the decode go on (in the test's main thread: Ray starts nodes from there only). The new
    node's id."""
    started, worker, holds = cluster
    held = holds / "held-decode"
    deadline = time.monotonic() + 240
    while not (held.exists() and held.read_text()):
        assert time.monotonic() < deadline, "the marked image was never held: the job did not get there"
        if job.poll() is not None:
            pytest.fail(f"the job ended (status {job.returncode}) before the swap: {job.communicate()[1][-3000:]}")
        time.sleep(0.05)
    os.kill(int(held.read_text()), signal.SIGKILL)
    started.remove_node(worker)
    with faults(holds):
        added = started.add_node(num_cpus=1)
    started.wait_for_nodes()
    (holds / "release-decode").touch()
    return str(added.node_id)


@pytest.mark.slow
@pytest.mark.timeout(600)  # a local run and a Ray job over 200 images, on two shared cores
def test_ray_job_matches_the_local_pipeline_survives_a_node_swap_and_fills_the_catalog(
        env: Env, model_dir: Path, cluster: tuple[Any, Any, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from pixdex.indexer.sidecars.keys import MACHINE, SUBJECT
    from pixdex.indexer.sidecars.merge import edit_person

    library = env.root / "library"
    images = write_library(library, 200)
    (library / "roll0" / "broken.jpg").write_bytes(b"not an image" * 20)
    edit_person(images[7], ["Grandma"], [], None, "pixdex")  # a person's keyword, in a sidecar before the job
    reference = env.root / "reference"
    shutil.copytree(library, reference)
    local = run(configure(model_dir, reference, env.root / "local"), capsys, str(reference))
    assert local["embedded"] == 200

    config = configure(model_dir, library, env.root / "ray")
    # As a person runs it: the `pixdex` command, in its own process, a driver joining the cluster.
    job_process = subprocess.Popen([str(PIXDEX), "--config", str(config), "index", "--ray", cluster[0].address,
                                    str(library), "--json"], env=env.environ, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    try:
        added = swap_node_mid_job(cluster, job_process)
        out, err = job_process.communicate(timeout=600)
    finally:
        job_process.kill()
    assert job_process.returncode == 0, err
    result = json.loads(out)
    job, catalog = result["ray"], result["catalog"]

    assert (job["images"], job["rows"], job["duplicates"]) == (201, 201, 0)
    assert (job["indexed"], job["skipped"], job["failed"]) == (200, 0, 1)
    assert job["failures"][0][0].endswith("broken.jpg") and "Pillow" in job["failures"][0][1]
    assert len(job["nodes"]) >= 2, job["nodes"]
    assert any(added[:8] in label for label in job["nodes"]), (added, job["nodes"])  # the new node took work
    for image in images:
        mine, theirs = sidecar(image), sidecar(reference / image.relative_to(library))
        cosine = float(np.dot(embedding(mine), embedding(theirs)))
        assert cosine >= 0.9999, (image, cosine)
        assert mine[MACHINE] == theirs[MACHINE] and mine[MACHINE], image
        assert len(set(mine[SUBJECT])) == len(mine[SUBJECT]), image  # nothing merged twice by a retried write
    assert "Grandma" in sidecar(images[7])[SUBJECT]

    assert (catalog["new"], catalog["failed"]) == (201, 1)
    assert (catalog["from_sidecars"], catalog["inference_calls"], catalog["decoded"]) == (200, 0, 0)
    capsys.readouterr()
    assert cli.main(["--config", str(config), "failures", "--json"]) == 0
    assert [Path(f["path"]).name for f in json.loads(capsys.readouterr().out)] == ["broken.jpg"]
    assert cli.main(["--config", str(config), "similar", str(images[3]), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits and all(Path(h["path"]).is_relative_to(library) for h in hits)

    # A re-run (a killed driver, or new files) redoes only what changed: the sidecars of the rest hold the current
    # model's embedding for their current content.
    before = {image: image.with_name(image.name + ".xmp").read_bytes() for image in images}
    noise(999).save(images[11])
    again = run(config, capsys, "--ray", cluster[0].address, str(library))["ray"]
    assert (again["indexed"], again["skipped"], again["failed"]) == (1, 199, 1)
    changed = [i for i in images if i.with_name(i.name + ".xmp").read_bytes() != before[i]]
    assert changed == [images[11]]


@pytest.mark.slow
def test_a_file_that_crashes_its_decoder_is_its_failure_and_the_rest_is_indexed(
        env: Env, model_dir: Path, cluster: tuple[Any, Any, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A segfault in a decoder kills a Ray worker process, not a Python exception: the file's own task is run
    again, then the file is blamed and its batch (and the job) go on."""
    library = env.root / "crashing"
    library.mkdir()
    for n in range(6):
        gradient(n).save(library / f"ok_{n}.jpg")
    crashing = [library / f"a-{CRASH}.jpg", library / f"b-{CRASH}.jpg"]
    for n, path in enumerate(crashing):
        noise(n).save(path)
    monkeypatch.setenv(CRASH_ENV, CRASH)  # the same file crashes this machine's decoders too, in the fill
    result = run(configure(model_dir, library, env.root / "crash"), capsys, "--ray", cluster[0].address,
                 str(library))
    job = result["ray"]
    assert (job["indexed"], job["failed"], job["rows"]) == (6, 2, 8)
    assert sorted(Path(path).name for path, _ in job["failures"]) == sorted(p.name for p in crashing)
    for _, reason in job["failures"]:
        assert reason.startswith("the decoder process died on this file each of the 3 times it ran"), reason
    assert all(sidecar(library / f"ok_{n}.jpg") for n in range(6))
    manifest_agrees_with_the_sidecars(job)
    assert (result["catalog"]["from_sidecars"], result["catalog"]["failed"]) == (6, 2)
    capsys.readouterr()
    assert cli.main(["--config", str(env.root / "crash" / "config.toml"), "failures", "--json"]) == 0
    failures = json.loads(capsys.readouterr().out)
    assert sorted(Path(f["path"]).name for f in failures) == sorted(p.name for p in crashing)
    assert all("died" in f["reason"] for f in failures), failures


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_batch_that_kills_every_model_actor_stops_the_job_and_a_rerun_goes_on(
        env: Env, model_dir: Path, cluster: tuple[Any, Any, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Ray restarts a model actor that died and runs its batch again; a batch that kills each actor it reaches
    stops the job after a bounded number of tries (Ray Data's default retries it for ever), with one line; the
    sidecars written stay, and a re-run indexes the rest."""
    library = env.root / "model-crash"
    library.mkdir()
    for n in range(7):
        gradient(n).save(library / f"ok_{n}.jpg")
    bad = library / f"z-{CRASH_MODEL}.jpg"
    noise(3).save(bad)
    config = configure(model_dir, library, env.root / "model-crash-data")
    capsys.readouterr()
    status = cli.main(["--config", str(config), "index", "--ray", cluster[0].address, str(library)])
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    line = err.splitlines()[-1]
    assert line.startswith("pixdex: error: ray: the job stopped after "), err[-3000:]
    assert "a model actor died on the same batch each of the 3 times it ran" in line
    assert "a re-run skips their images" in line and "job.log" in line
    assert not sidecar(bad)
    deaths = (cluster[2] / "model-crashes").read_text().split()
    assert len(deaths) == 3 and len(set(deaths)) == 3, deaths  # three actors, each dead on it
    written = [p for p in library.glob("ok_*.jpg") if sidecar(p)]
    bad.rename(library / "z-fine.jpg")  # the same image, no longer a crash for the actors
    result = run(config, capsys, "--ray", cluster[0].address, str(library))
    job = result["ray"]
    assert (job["indexed"], job["skipped"], job["failed"]) == (8 - len(written), len(written), 0), job
    assert result["catalog"]["from_sidecars"] == 8


def manifest_agrees_with_the_sidecars(job: dict[str, Any]) -> None:
    """The job's Parquet manifest holds what its sidecars hold: embedding, content hash, model, machine keywords;
    and its failures, as the summary and the log say them."""
    from pixdex.indexer.distributed.manifest import read_manifest
    from pixdex.indexer.sidecars.keys import EMBEDDING_MODEL, EMBEDDING_OF, MACHINE

    rows = {os.fsdecode(r["path"]): r for r in read_manifest(Path(job["manifest"]))}
    assert len(rows) == job["rows"]
    for path, row in rows.items():
        if row["status"] == "failed":
            assert row["embedding"] is None and [path, row["reason"]] in job["failures"]
            continue
        assert row["status"] == "indexed", row
        xmp = sidecar(Path(path))
        assert (row["clip_model"], row["digest"]) == (xmp[EMBEDDING_MODEL], xmp[EMBEDDING_OF])
        # The sidecar stores the embedding as float16 (sidecars/embedding.py); the manifest as the model gave it.
        assert np.allclose(row["embedding"], embedding(xmp), atol=1e-3), path
        assert row["tags"] and sorted(row["tags"]) == sorted(xmp[MACHINE]), (row["tags"], xmp[MACHINE])
    log = Path(job["log"]).read_text()
    assert all(f"failed: {path}: {reason}" in log for path, reason in job["failures"])


@pytest.mark.slow
def test_beside_a_daemon_a_folder_it_does_not_watch_becomes_a_collection_once_the_job_is_done(
        tmp_path: Path, model_dir: Path, cluster: tuple[Any, Any, Path]) -> None:
    """The daemon owns the catalog: the job's folder is added to its watched folders after the job (not before:
    it would embed the images itself meanwhile), and it takes the sidecars up with no model call."""
    from served import Served, wait_for

    pics, archive = tmp_path / "pics", tmp_path / "archive"
    pics.mkdir()
    noise(1).save(pics / "first.jpg")
    (archive / "scans").mkdir(parents=True)
    for n in range(5):
        gradient(n).save(archive / "scans" / f"scan_{n}.jpg")
    daemon = Served(tmp_path / "home", model_dir, [pics]).start()
    try:
        wait_for(lambda: len(daemon.listed()) == 1, what="the watched folder indexed")
        before = daemon.status()["progress"]["inference_calls"]
        job = subprocess.run([str(PIXDEX), "--config", str(daemon.config), "index", "--ray", cluster[0].address,
                              str(archive), "--json"], env=daemon.environ, capture_output=True, text=True,
                             timeout=280)
        assert job.returncode == 0, job.stderr[-3000:]
        result = json.loads(job.stdout)
        assert (result["ray"]["indexed"], result["catalog"]) == (5, None)
        assert [(w["name"], w["path"]) for w in result["watching"]] == [("archive", str(archive))]
        watches = {w["name"]: w["path"] for w in daemon.get("/watches")}
        assert watches["archive"] == str(archive)
        found = wait_for(lambda: len(daemon.listed(archive)) == 5 and daemon.listed(archive),
                         timeout=120, what="the archive taken up from its sidecars")
        assert sorted(Path(p).name for p in found) == [f"scan_{n}.jpg" for n in range(5)]
        progress = daemon.status()["progress"]
        assert progress["inference_calls"] == before and progress["from_sidecars"] >= 5
        hits = daemon.get("/search", q="in:archive", k=50)["hits"]
        assert len(hits) == 5

        # A folder the daemon watches already is left as it is.
        again = subprocess.run([str(PIXDEX), "--config", str(daemon.config), "index", "--ray", cluster[0].address,
                                str(archive / "scans"), "--json"], env=daemon.environ, capture_output=True,
                               text=True, timeout=280)
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads(again.stdout)["watching"] == []
    finally:
        daemon.stop()


@pytest.mark.slow
def test_a_node_that_cannot_read_the_library_stops_the_job_before_it_starts(
        cluster: tuple[Any, Any, Path], tmp_path: Path) -> None:
    import ray

    from pixdex.indexer.distributed.cluster import check_readable, connect, nodes

    seen = tmp_path / "seen.jpg"
    noise(1).save(seen)
    connect(cluster[0].address)
    try:
        check_readable([os.fsencode(seen)], nodes())
        with pytest.raises(PixdexError, match=r"^node .* cannot read .*unseen\.jpg .*same path") as caught:
            check_readable([os.fsencode(seen), os.fsencode(tmp_path / "unseen.jpg")], nodes())
        assert "\n" not in str(caught.value)
    finally:
        ray.shutdown()


@pytest.mark.parametrize(("argv", "address", "dirs"), [
    (["--ray", "/photos"], "auto", ["/photos"]),
    (["--ray", "head:6379", "/photos"], "head:6379", ["/photos"]),
    (["--ray", "ray://head:10001", "/a", "/b"], "ray://head:10001", ["/a", "/b"]),
    (["/photos", "--ray"], "auto", ["/photos"]),
])
def test_ray_takes_an_address_or_leaves_the_folder_alone(argv: list[str], address: str, dirs: list[str]) -> None:
    from pixdex.daemon.commands.distributed import add_arguments

    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="*", type=Path)
    add_arguments(parser)
    args = parser.parse_args(argv)
    assert wants_ray(args)
    assert (args.ray, [str(d) for d in args.dirs]) == (address, dirs)


def test_ray_options_need_ray() -> None:
    from pixdex.daemon.commands.distributed import add_arguments

    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="*", type=Path)
    add_arguments(parser)
    with pytest.raises(PixdexError, match="--ray-actors needs --ray"):
        wants_ray(parser.parse_args(["/photos", "--ray-actors", "2"]))
    assert not wants_ray(parser.parse_args(["/photos"]))


def test_a_bundle_lands_once_per_node_under_its_digest(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from pixdex.indexer.distributed.bundle import materialise, pack

    clip = tmp_path / "models" / "clip" / "some-clip"
    (clip / "visual").mkdir(parents=True)
    (clip / "visual" / "model.onnx").write_bytes(b"graph")
    (clip / "config.json").write_text("{}")
    vocabulary = tmp_path / "cache" / "some-clip-1234.npy"
    vocabulary.parent.mkdir()
    vocabulary.write_bytes(b"matrix")
    bundle = pack(clip, None, vocabulary)
    root = tmp_path / "node"
    first = materialise(bundle, root)
    assert (first / "clip" / "some-clip" / "visual" / "model.onnx").read_bytes() == b"graph"
    assert (first / "vocabulary" / "some-clip-1234.npy").read_bytes() == b"matrix"
    assert materialise(bundle, root) == first and [p.name for p in root.iterdir()] == [first.name]  # no partials
    (clip / "visual" / "model.onnx").write_bytes(b"another graph")
    assert pack(clip, None, vocabulary).digest != bundle.digest  # other files, another folder


def test_an_address_where_no_cluster_listens_is_one_line_at_once(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    start = time.monotonic()
    status, out, err = env.cli("index", "--ray", "127.0.0.1:1", str(env.pics), capsys=capsys)
    assert status == 2 and out == ""
    assert err.startswith("pixdex: error: --ray 127.0.0.1:1: cannot reach a Ray cluster there") and err.count("\n") == 1
    assert time.monotonic() - start < 60  # ray.init alone keeps trying for minutes


def test_defaults_leave_each_node_a_cpu_for_decoding_and_gpus_get_cuda_first() -> None:
    pytest.importorskip("ray")
    from pixdex.indexer.distributed.actor import ActorSpec
    from pixdex.indexer.distributed.cluster import JobSettings, Node, resolve
    from pixdex.indexer.sections import ClipTagSettings, Runtime, TaggerSettings

    def nodes(count: int, cpus: float, gpus: float = 0) -> list[Node]:
        return [Node(f"{n:056x}", "10.0.0.1", cpus, gpus) for n in range(count)]

    assert resolve(JobSettings(), nodes(2, 1), 16) == JobSettings(None, 0.0, 16, 1)  # the test cluster's shape
    assert resolve(JobSettings(), nodes(10, 16), 16).actors == 10
    assert resolve(JobSettings(gpus=1), nodes(2, 8, 2), 16).actors == 4
    assert resolve(JobSettings(actors=3, batch_size=64), nodes(1, 2), 16) == JobSettings(None, 0.0, 64, 3)
    with pytest.raises(PixdexError, match=r"--ray-gpus 1: the cluster has 0 GPU\(s\)"):
        resolve(JobSettings(gpus=1), nodes(2, 8), 16)
    spec = ActorSpec(TaggerSettings(), ClipTagSettings(), 0, 60.0, Runtime(), 224, None)
    assert spec.with_gpu().runtime.providers == ("cpu",)
    gpu = dataclasses.replace(spec, gpus=1.0).with_gpu()
    assert gpu.runtime.providers == ("cuda", "cpu") and gpu.with_gpu() == gpu
