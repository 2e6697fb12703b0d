"""The stand-in models made by the real export code: ONNX Runtime against open_clip itself.

These prove the export path, the preprocessing and the numerics (parity with open_clip), not
search quality: the weights are random."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import Env, gradient, noise
from PIL import Image

from pixdex.indexer import embedder
from pixdex.indexer.embedder import ClipModel
from pixdex.indexer.errors import ModelError
from pixdex.indexer.export import STANDIN_CLIP, STANDIN_CLIP_CONFIG, import_open_clip
from pixdex.indexer.preprocess import ClipTransform, clip_preprocess, wd14_preprocess
from pixdex.indexer.sections import Runtime, TaggerSettings
from pixdex.indexer.tagger import Tagger, display_name

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def open_clip_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, object]:
    """The same tiny open_clip model the stand-in was exported from (same config, same seed)."""
    open_clip = import_open_clip()
    cfg_dir = tmp_path_factory.mktemp("cfg")
    (cfg_dir / f"{STANDIN_CLIP}.json").write_text(json.dumps(STANDIN_CLIP_CONFIG))
    open_clip.add_model_config(str(cfg_dir))
    torch.manual_seed(0)
    model, _, transform = open_clip.create_model_and_transforms(STANDIN_CLIP)
    return model.eval(), transform, open_clip.get_tokenizer(STANDIN_CLIP)


@pytest.fixture(scope="module")
def clip(model_dir: Path) -> ClipModel:
    return ClipModel(model_dir / "clip" / STANDIN_CLIP)


SIZES = [(64, 64), (300, 200), (200, 300), (65, 1000), (17, 23), (640, 481)]


@pytest.mark.parametrize("size", SIZES)
def test_clip_preprocess_matches_open_clip_transform(open_clip_model: tuple[object, ...], clip: ClipModel,
                                                     size: tuple[int, int]) -> None:
    _, transform, _ = open_clip_model
    image = noise(size[0] * 7 + size[1], size)
    ours = clip_preprocess(image, clip.transform)
    theirs = transform(image).numpy()  # type: ignore[operator]
    assert ours.shape == theirs.shape == (3, 64, 64)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_squash_resize_mode_matches_a_plain_resize() -> None:
    t = ClipTransform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", "squash")
    image = gradient(3, (100, 40))
    expected = (np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC), np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(clip_preprocess(image, t), expected.transpose(2, 0, 1), atol=1e-6)


def test_unknown_resize_mode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="resize_mode 'longest'"):
        ClipTransform.from_cfg({"size": 224, "mean": [0, 0, 0], "std": [1, 1, 1], "resize_mode": "longest"})


def test_image_tower_parity_with_open_clip(open_clip_model: tuple[object, ...], clip: ClipModel) -> None:
    model, transform, _ = open_clip_model
    images = [noise(i, (80 + i, 70)) for i in range(5)]
    batch = np.stack([clip.preprocess(im) for im in images])
    ours = clip.embed_images(batch)
    with torch.no_grad():
        theirs = model.encode_image(torch.stack([transform(im) for im in images]), normalize=True).numpy()  # type: ignore[attr-defined,operator]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


TEXTS = ["a photo of a dog", "Beach + SUNSET, at 6pm!", "  lots   of\twhitespace  ", "café déjà vu",
         "고양이가 소파에서", "it's a long " + "very " * 100 + "long text", "&amp; html &lt;escaped&gt;", ""]


def test_tokenizer_matches_open_clip(open_clip_model: tuple[object, ...], clip: ClipModel) -> None:
    _, _, tokenizer = open_clip_model
    ours = clip.tokenize(TEXTS)
    theirs = tokenizer(TEXTS).numpy()  # type: ignore[operator]
    assert ours.shape == theirs.shape == (len(TEXTS), 77)
    np.testing.assert_array_equal(ours, theirs)


def test_text_tower_parity_with_open_clip(open_clip_model: tuple[object, ...], clip: ClipModel) -> None:
    model, _, tokenizer = open_clip_model
    ours = clip.embed_texts(TEXTS)
    with torch.no_grad():
        theirs = model.encode_text(tokenizer(TEXTS), normalize=True).numpy()  # type: ignore[attr-defined,operator]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_inference_calls_are_counted(clip: ClipModel) -> None:
    before = (clip.visual.calls, clip.visual.items)
    clip.embed_images(np.zeros((3, 3, 64, 64), np.float32))
    assert (clip.visual.calls, clip.visual.items) == (before[0] + 1, before[1] + 3)


def test_a_query_text_typed_again_costs_no_text_tower_run(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = ClipModel(model_dir / "clip" / STANDIN_CLIP)
    monkeypatch.setattr(embedder, "QUERY_CACHE", 3)
    first = clip.embed_query_texts(["a dog", "a cat"])
    assert clip.textual.calls == 1 and np.allclose(first, clip.embed_texts(["a dog", "a cat"]), atol=1e-6)
    calls = clip.textual.calls
    again = clip.embed_query_texts(["a cat", "a dog", "a cat"])  # any order, repeats: rows as asked
    assert clip.textual.calls == calls and np.array_equal(again, first[[1, 0, 1]])
    items = clip.textual.items
    clip.embed_query_texts(["a dog", "a bird"])  # only the new text runs
    assert (clip.textual.calls, clip.textual.items) == (calls + 1, items + 1)
    clip.embed_query_texts(["a fish", "a tree"])  # three kept: the least recently asked go ("a cat", then "a dog")
    calls = clip.textual.calls
    clip.embed_query_texts(["a bird", "a fish", "a tree"])
    assert clip.textual.calls == calls
    clip.embed_query_texts(["a dog"])
    assert clip.textual.calls == calls + 1


def test_tagger_layout_thresholds_and_exclude(model_dir: Path) -> None:
    directory = model_dir / "tagger" / "pixdex-standin-tagger"
    images = np.stack([wd14_preprocess(noise(i), 64) for i in range(6)])
    loose = Tagger(directory, TaggerSettings(general_threshold=0.0, character_threshold=1.0, max_tags=1000))
    probs = loose.session.run(images)
    everything = loose.tag(images)
    general = sum(1 for c in loose.categories if c == 0)
    assert all(len(tags) == general for tags in everything)  # ratings never, characters not at 1.0
    strict = Tagger(directory, TaggerSettings(general_threshold=0.3, exclude=[everything[0][0].name.replace(" ", "_")]))
    for row, tags in zip(probs, strict.tag(images), strict=False):
        names = [t.name for t in tags]
        assert everything[0][0].name not in names
        assert all(t.confidence >= 0.3 for t in tags)
        assert [t.confidence for t in tags] == sorted((t.confidence for t in tags), reverse=True)
        expected = {loose.names[i] for i, p in enumerate(row) if p >= 0.3 and loose.categories[i] == 0}
        assert set(names) == expected - {everything[0][0].name}
    capped = Tagger(directory, TaggerSettings(general_threshold=0.0, max_tags=2))
    assert all(len(t) == 2 for t in capped.tag(images))


def test_wd14_preprocess_pads_on_white_and_swaps_to_bgr() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    array = wd14_preprocess(image, 40)
    assert array.shape == (40, 40, 3) and array.dtype == np.float32
    assert array[0, 0].tolist() == [255.0, 255.0, 255.0]  # padding is white
    assert array[20, 20].tolist() == [0.0, 0.0, 255.0]  # red in BGR order


def test_tag_names_lose_underscores_but_kaomoji_keep_them() -> None:
    assert display_name("long_hair") == "long hair"
    assert display_name("^_^") == "^_^" and display_name("(o)_(o)") == "(o)_(o)"


def test_missing_model_names_the_directory_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing config.json.*pixdex models standin"):
        ClipModel(tmp_path / "clip" / "ViT-B-32__openai")
    broken = tmp_path / "tagger" / "broken"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not onnx")
    (broken / "selected_tags.csv").write_text("tag_id,name,category,count\n1,dog,0,5\n")
    tagger = Tagger(broken, TaggerSettings())
    with pytest.raises(ModelError, match="cannot load this model"):
        tagger.tag(np.zeros((1, 448, 448, 3), np.float32))


def test_standin_names_the_config_file_in_use(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _out, err = env.cli("models", "standin", "--dir", str(tmp_path / "m"), capsys=capsys)
    assert status == 0 and f"config file: {env.config};" in err


def test_every_export_is_checked_against_open_clip_and_a_wrong_one_installs_nothing(
        open_clip_model: tuple[object, ...], model_dir: Path, tmp_path: Path) -> None:
    """The export's own parity check: the stand-in passed it (its figures are recorded); the same check on
    towers that no longer match open_clip (one weight changed after the export) fails with the figures."""
    import copy
    import shutil

    from pixdex.indexer.export import ExportError, check_parity, staged_dir

    record = json.loads((model_dir / "clip" / STANDIN_CLIP / "pixdex-model.json").read_text())
    assert record["parity"]["image_cosine_min"] >= 0.9999 and record["parity"]["text_cosine_min"] >= 0.9999
    model, transform, tokenizer = open_clip_model
    figures = check_parity(model, transform, tokenizer, model_dir / "clip" / STANDIN_CLIP)
    assert figures["images"] >= 8 and figures["texts"] >= 8

    drifted = copy.deepcopy(model)
    with torch.no_grad():
        proj = drifted.visual.proj  # type: ignore[attr-defined]  # the image tower's last projection
        proj.add_(torch.randn(proj.shape, generator=torch.Generator().manual_seed(1)) * proj.std())
    final = tmp_path / "clip" / "drifted"
    refused = (r"^drifted: the ONNX export does not reproduce open_clip .*image 0 "
               r"\(224×224\) -?0\.\d+.*lowest: images -?0\.\d+, texts (?:1\.0|0\.9999)")
    with pytest.raises(ExportError, match=refused), staged_dir(final) as stage:
        shutil.copytree(model_dir / "clip" / STANDIN_CLIP, stage, dirs_exist_ok=True)
        check_parity(drifted, transform, tokenizer, stage, name="drifted")
    assert not final.exists() and not list((tmp_path / "clip").iterdir())


def test_asked_providers_fall_back_to_the_cpu_with_a_warning(model_dir: Path, caplog: pytest.LogCaptureFixture,
                                                             tmp_path: Path) -> None:
    import onnxruntime as ort

    from pixdex.indexer import session
    from pixdex.indexer.settings import ConfigError, load_config

    assert "CUDAExecutionProvider" not in ort.get_available_providers()  # this machine: CPU only
    session._warned.discard("cuda")
    with caplog.at_level("WARNING", logger="pixdex.indexer.session"):
        clip = ClipModel(model_dir / "clip" / STANDIN_CLIP, runtime=Runtime(("cuda", "cpu")))
        vectors = clip.embed_texts(["a dog"])
    assert clip.textual.used == ["CPUExecutionProvider"] and vectors.shape == (1, clip.dim)
    assert "asks for cuda, but this onnxruntime has no CUDAExecutionProvider" in caplog.text
    assert "onnxruntime-gpu" in caplog.text
    bad = tmp_path / "bad.toml"
    bad.write_text('[models]\nproviders = ["gpu"]\n')
    refused = r"models.providers = \['gpu'\] is not allowed; expected a list of one of 'cpu'"
    with pytest.raises(ConfigError, match=refused):
        load_config(bad)


def test_an_fp16_export_is_accepted(model_dir: Path, clip: ClipModel, tmp_path: Path) -> None:
    """A half-precision image tower (as Immich and others publish for GPUs) takes the float32 batch pixdex
    makes, cast to its input type, and agrees with the float32 tower."""
    import shutil

    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = tmp_path / "half"
    shutil.copytree(model_dir / "clip" / STANDIN_CLIP, half)
    model = convert_float_to_float16(onnx.load(str(half / "visual" / "model.onnx")), keep_io_types=False)
    onnx.save(model, str(half / "visual" / "model.onnx"))
    fp16 = ClipModel(half, runtime=Runtime(optimization="extended"))  # see [models] optimization
    assert fp16.visual.input.type == "tensor(float16)"
    batch = np.stack([clip.preprocess(noise(i, (90, 70))) for i in range(3)])
    cosine = np.sum(fp16.embed_images(batch) * clip.embed_images(batch), axis=1)
    assert (cosine > 0.999).all(), cosine


def test_a_model_that_crashes_onnx_runtime_is_a_model_error_not_a_file_failure(env: Env, model_dir: Path,
                                                                              tmp_path: Path) -> None:
    """onnxruntime 1.31's full optimizer segfaults on a converted fp16 ViT: the model worker dies at load.
    That is reported as the model's problem, with the setting that fixes it; no image is blamed."""
    import shutil

    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    models = tmp_path / "models"
    shutil.copytree(model_dir, models)
    visual = models / "clip" / STANDIN_CLIP / "visual" / "model.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(visual)), keep_io_types=False), str(visual))
    env.config.write_text(env.config.read_text().replace(str(model_dir), str(models)))
    noise(1).save(env.pics / "a.png")
    crashed = env.run("index", check=False)
    assert crashed.returncode == 2, crashed.stderr
    assert 'the model worker died loading the models' in crashed.stderr
    assert '[models] optimization = "extended"' in crashed.stderr and "Traceback" not in crashed.stderr
    env.config.write_text(env.config.read_text().replace("[models]\n", '[models]\noptimization = "extended"\n'))
    done = env.run("index", "--json")
    assert json.loads(done.stdout)["embedded"] == 1


def test_mcut_keeps_the_group_that_stands_apart() -> None:
    from pixdex.indexer.tagger import mcut

    scores = np.array([0.91, 0.88, 0.80, 0.31, 0.30, 0.12, 0.05], np.float32)
    assert mcut(scores) == pytest.approx((0.80 + 0.31) / 2)
    assert mcut(np.array([0.2, 0.19, 0.18], np.float32)) == pytest.approx(0.195)
    assert mcut(np.array([0.5], np.float32)) == 1.0  # nothing to cut: nothing kept


def test_mcut_replaces_the_fixed_thresholds_when_asked(model_dir: Path) -> None:
    tagger_dir = model_dir / "tagger" / "pixdex-standin-tagger"
    fixed = Tagger(tagger_dir, TaggerSettings(general_threshold=0.99, character_threshold=0.99))
    auto = Tagger(tagger_dir, TaggerSettings(general_threshold=0.99, character_threshold=0.99, mcut=True))
    batch = np.stack([fixed.preprocess(noise(i, (80, 80))) for i in range(4)])
    assert all(not tags for tags in fixed.tag(batch))  # nothing reaches 0.99
    found = auto.tag(batch)
    assert all(found) and all(t.category != "rating" for tags in found for t in tags)


def test_export_of_an_unknown_model_or_tag_is_a_one_line_error(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    status, _out, err = env.cli("models", "export", "ViT-Q-99", "openai", capsys=capsys)
    assert status == 2 and "ViT-Q-99: not an open_clip model" in err and "Traceback" not in err
    status, _out, err = env.cli("models", "export", "ViT-B-32", "no_such_weights", capsys=capsys)
    assert status == 2 and "open_clip cannot load these weights" in err and "list_pretrained_tags_by_model" in err
    status, _out, err = env.cli("models", "export", "ViT-B-32", capsys=capsys)
    assert status == 2 and "needs the pretrained tag" in err
