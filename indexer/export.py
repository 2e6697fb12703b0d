"""open_clip / torch → ONNX, in the model directory layout the indexer loads.

Needs the ``export`` extra (torch, open-clip-torch, onnx); nothing else in pixdex imports torch.
`export_clip` is the one exporter, used both for real open_clip models (`pixdex models export`)
and for the stand-ins (`pixdex models standin`): a tiny open_clip config with random weights
and a tiny torch multi-label classifier in the WD14 layout. Stand-ins prove the code path and
the numerics, never search quality.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import sys
import tempfile
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import PixdexError
from pixdex.indexer.files import staged_dir
from pixdex.indexer.layout import STANDIN_MARKER

log = logging.getLogger(__name__)

STANDIN_CLIP = "pixdex-standin-clip"
STANDIN_TAGGER = "pixdex-standin-tagger"
STANDIN_NOTE = ("STAND-IN MODEL: random weights (fixed seed) in the real format. It exists to test pixdex's "
                "code paths; its tags and rankings are meaningless.\n")
STANDIN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
STANDIN_TAGGER_SIZE = 64
STANDIN_GENERAL_TAGS = (
    "outdoors", "indoors", "sky", "cloud", "tree", "grass", "water", "beach", "sunset", "night", "snow",
    "mountain", "flower", "dog", "cat", "bird", "car", "building", "city", "road", "food", "cup", "book",
    "text", "red_theme", "blue_theme", "green_theme", "monochrome", "portrait", "landscape", "window",
    "chair", "table", "lamp", "bicycle", "boat", "bridge", "river", "forest", "^_^",
)
STANDIN_CHARACTERS = ("hatsune_miku", "pikachu")
RATINGS = ("general", "sensitive", "questionable", "explicit")


def import_open_clip() -> Any:
    """Import open_clip, working around a torchvision build whose C++ ops cannot load.

    A CUDA build of torchvision beside a CPU build of torch fails at import while registering fake
    kernels for ``torchvision::nms``; pixdex never calls those ops, so declaring their schemas
    lets the pure-Python parts that open_clip uses import.
    """
    import torch

    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")  # kept alive by torch's registry
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_open_clip._library = library  # type: ignore[attr-defined]
        import torchvision  # noqa: F401
    import open_clip

    return open_clip


def _onnx_export(module: Any, example: Any, path: Path, input_name: str) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    # nn.MultiheadAttention's inference fast path (aten::_native_multi_head_attention, taken by
    # full-size ViTs in eval mode) has no ONNX symbolic: trace the plain path instead.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _trace(module, example, path, input_name)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _trace(module: Any, example: Any, path: Path, input_name: str) -> None:
    import torch

    with warnings.catch_warnings(), redirect_stdout(open(os.devnull, "w")):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=[input_name], output_names=["embedding"],
                          dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}})


def write_clip_tokenizer(textual_dir: Path) -> None:
    """open_clip's BPE vocabulary (shipped in its package) as a `tokenizers` tokenizer.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    open_clip = import_open_clip()
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as handle:
        merges = [(first, second) for first, second in
                  (line.split() for line in handle.read().split("\n")[1:49152 - 256 - 2 + 1])]
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [t + "</w>" for t in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token="<|endoftext|>")
    tokenizer = Tokenizer(bpe)
    tokenizer.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                                 normalizers.Lowercase()])
    pattern = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", vocab["<|startoftext|>"]), ("<|endoftext|>", vocab["<|endoftext|>"])])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(textual_dir / "tokenizer.json"))
    (textual_dir / "tokenizer_config.json").write_text(json.dumps({"pad_token": "!"}))
    del open_clip


def export_clip(model: Any, model_cfg: dict[str, Any], out: Path, tokenizer: Any = None) -> None:
    """Write an open_clip model's towers, configs and tokenizer into `out` (Immich's layout). `tokenizer`:
    open_clip's for the model (`get_tokenizer`); a Hugging Face one is saved as it is, else open_clip's BPE."""
    import torch

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: Any) -> Any:
            return self.model.encode_image(image)

    class Textual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, text: Any) -> Any:
            return self.model.encode_text(text)

    model.eval()
    preprocess = dict(model.visual.preprocess_cfg)
    size = preprocess["size"]
    side = size[0] if isinstance(size, list | tuple) else size
    context = model_cfg.get("text_cfg", {}).get("context_length", 77)
    # A real, padded text to trace with: a text tower that masks its padding (Hugging Face ones) would
    # otherwise be traced through the shortcut for inputs without any.
    text = tokenizer(["a photo of a dog"]).to(torch.int32) if tokenizer is not None else \
        torch.zeros(1, context, dtype=torch.int32)
    with torch.no_grad():  # the wrappers in eval mode too: the exporter restores their mode, recursively
        _onnx_export(Visual().eval(), torch.zeros(1, 3, side, side), out / "visual" / "model.onnx", "image")
        _onnx_export(Textual().eval(), text, out / "textual" / "model.onnx", "text")
    (out / "config.json").write_text(json.dumps(model_cfg, indent=2))
    preprocess["size"] = [side, side]
    (out / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess, indent=2))
    if tokenizer is not None and hasattr(tokenizer, "tokenizer"):  # a Hugging Face text tower (XLM-RoBERTa…)
        write_hf_tokenizer(tokenizer.tokenizer, out / "textual")
    else:
        write_clip_tokenizer(out / "textual")


def write_hf_tokenizer(tokenizer: Any, textual_dir: Path) -> None:
    """A Hugging Face fast tokenizer (open_clip's HFTokenizer holds one) as tokenizer.json + its pad token, the
    files Immich's exports of such models carry; pixdex pads and truncates to the context length itself."""
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(textual_dir / "tokenizer.json"))
    (textual_dir / "tokenizer_config.json").write_text(json.dumps({"pad_token": tokenizer.pad_token}))


PARITY_MIN = 0.9999  # cosine between pixdex's ONNX embedding and open_clip's, per image and per text
PARITY_TEXTS = ("a photo of a dog", "Beach + SUNSET, at 6pm!", "café déjà vu", "고양이가 소파에서 자고 있다",
                "ein Hund am Strand", "  lots   of\twhitespace  ", "receipt from the bakery, 3 croissants",
                "it's a long " + "very " * 90 + "long text", "")


class ExportError(PixdexError):
    """An export whose ONNX towers do not reproduce open_clip: nothing is installed."""


def check_parity(model: Any, transform: Any, tokenizer: Any, out: Path, minimum: float = PARITY_MIN,
                 name: str = "") -> dict[str, Any]:
    """Embed generated images and texts both ways — pixdex's whole path (its preprocessing, tokenizer and
    the exported ONNX towers) and open_clip in torch — and compare per embedding. Raises ExportError with
    the figures when any cosine is below `minimum`; returns them otherwise."""
    import numpy as np
    import torch
    from PIL import Image

    from pixdex.indexer.embedder import ClipModel

    rng = np.random.default_rng(7)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for w, h in ((224, 224), (300, 200), (180, 320), (64, 64), (640, 427))]
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    images += [Image.fromarray(np.stack([np.tile(ramp, (200, 1)), np.tile(ramp[::-1], (200, 1)),
                                         np.full((200, 256), 90, np.uint8)], axis=2)),
               Image.new("RGB", (120, 90), (250, 250, 250)), Image.new("RGB", (90, 120), (10, 20, 30))]
    model.eval()  # dropout off (text towers from Hugging Face have it), as in the exported graphs
    ours = ClipModel(out)
    mine_images = ours.embed_images(np.stack([ours.preprocess(im) for im in images]))
    mine_texts = ours.embed_texts(list(PARITY_TEXTS))
    del ours  # its sessions, before the folder is renamed
    with torch.no_grad():
        theirs_images = model.encode_image(torch.stack([transform(im) for im in images]), normalize=True).numpy()
        theirs_texts = model.encode_text(tokenizer(list(PARITY_TEXTS)), normalize=True).numpy()
    image_cos = np.sum(mine_images * theirs_images, axis=1)
    text_cos = np.sum(mine_texts * theirs_texts, axis=1)
    figures = {"minimum": minimum, "images": len(images), "texts": len(PARITY_TEXTS),
               "image_cosine_min": float(image_cos.min()), "text_cosine_min": float(text_cos.min())}
    bad = [f"image {i} ({images[i].width}×{images[i].height}) {c:.6f}" for i, c in enumerate(image_cos) if c < minimum]
    bad += [f"text {PARITY_TEXTS[i][:30]!r} {c:.6f}" for i, c in enumerate(text_cos) if c < minimum]
    if bad:
        raise ExportError(f"{name or out.name}: the ONNX export does not reproduce open_clip "
                          f"(cosine must be ≥ {minimum}): " + "; ".join(bad)
                          + f" — lowest: images {image_cos.min():.6f}, texts {text_cos.min():.6f}. "
                          "Nothing was installed.")
    return figures


def _record_export(stage: Path, name: str, arch: str, pretrained: str, parity: dict[str, Any]) -> None:
    import time

    (stage / "pixdex-model.json").write_text(json.dumps({
        "name": name, "kind": "clip", "repo": f"open_clip {arch} {pretrained}", "source": "pixdex models export",
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "parity": parity}, indent=1))


def export_pretrained_clip(name: str, pretrained: str, model_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Export open_clip model `name` with weights `pretrained` (downloaded by open_clip) to the model dir,
    checked against open_clip (`check_parity`); returns the folder and the parity figures."""
    open_clip = import_open_clip()
    if name not in open_clip.list_models():
        raise ExportError(f"{name}: not an open_clip model; "
                          "`python -c 'import open_clip; print(open_clip.list_models())'` lists them")
    try:
        model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    except (RuntimeError, OSError, ValueError) as exc:  # an unknown tag, or weights that cannot be downloaded
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{name} {pretrained}: open_clip cannot load these weights ({first}); "
                          f"`python -c 'import open_clip; print(open_clip.list_pretrained_tags_by_model(\"{name}\"))'` "
                          "lists the tags; the weights are downloaded from the Hugging Face hub") from None
    final = model_dir / "clip" / f"{name}__{pretrained}"
    tokenizer = open_clip.get_tokenizer(name)
    with staged_dir(final) as stage:
        export_clip(model, open_clip.get_model_config(name), stage, tokenizer)
        parity = check_parity(model, transform, tokenizer, stage, name=final.name)
        _record_export(stage, final.name, name, pretrained, parity)
    return final, parity


def write_standin_clip(model_dir: Path, seed: int = 0, name: str = STANDIN_CLIP) -> Path:
    """The tiny stand-in CLIP (random weights from `seed`) in `<model_dir>/clip/<name>`."""
    import torch

    open_clip = import_open_clip()
    final = model_dir / "clip" / name
    with staged_dir(final) as stage, tempfile.TemporaryDirectory() as cfg_dir:
        Path(cfg_dir, f"{STANDIN_CLIP}.json").write_text(json.dumps(STANDIN_CLIP_CONFIG))
        open_clip.add_model_config(cfg_dir)
        torch.manual_seed(seed)
        logging.getLogger().disabled, was = True, logging.getLogger().disabled  # "no pretrained weights"
        try:
            model, _, transform = open_clip.create_model_and_transforms(STANDIN_CLIP)
        finally:
            logging.getLogger().disabled = was
        tokenizer = open_clip.get_tokenizer(STANDIN_CLIP)
        export_clip(model, STANDIN_CLIP_CONFIG, stage, tokenizer)
        _record_export(stage, final.name, STANDIN_CLIP, "random weights", check_parity(
            model, transform, tokenizer, stage, name=STANDIN_CLIP))
        (stage / STANDIN_MARKER).write_text(STANDIN_NOTE)
    return final


STANDIN_MULTILINGUAL = "pixdex-standin-multilingual-clip"
# Enough text in a few languages for a tiny SentencePiece-style (Unigram) vocabulary that covers them.
STANDIN_CORPUS = (
    "a photo of a dog on the beach", "a cat sleeping on the sofa", "receipt from the bakery", "sunset over the sea",
    "ein Hund am Strand", "eine Katze schläft auf dem Sofa", "Quittung von der Bäckerei", "Sonnenuntergang am Meer",
    "해변의 개 사진", "고양이가 소파에서 자고 있다", "빵집 영수증", "바다 위의 일몰",
    "un chien sur la plage", "un chat qui dort sur le canapé", "海辺の犬の写真", "ソファで寝ている猫",
)


def write_standin_multilingual_clip(model_dir: Path, seed: int = 0) -> Path:
    """A tiny stand-in of open_clip's multilingual `xlm-roberta-base-ViT-B-32`: a ViT image tower and an
    XLM-RoBERTa text tower (random weights, Hugging Face `transformers` built from a local config) with a
    Unigram tokenizer in XLM-RoBERTa's form (<s> … </s>, <pad> = 1), exported and checked exactly as a real one."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig

    open_clip = import_open_clip()
    final = model_dir / "clip" / STANDIN_MULTILINGUAL
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    with staged_dir(final) as stage, tempfile.TemporaryDirectory() as work:
        text_dir = Path(work, "xlm-roberta-tiny")
        unigram = Tokenizer(models.Unigram())
        unigram.normalizer = normalizers.NFKC()
        unigram.pre_tokenizer = pre_tokenizers.Metaspace()
        unigram.decoder = decoders.Metaspace()
        unigram.train_from_iterator(STANDIN_CORPUS * 4, trainers.UnigramTrainer(
            vocab_size=400, special_tokens=specials, unk_token="<unk>", show_progress=False))
        unigram.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[(t, unigram.token_to_id(t)) for t in ("<s>", "</s>")])
        assert [unigram.token_to_id(t) for t in specials] == [0, 1, 2, 3, 4]
        PreTrainedTokenizerFast(tokenizer_object=unigram, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                mask_token="<mask>").save_pretrained(text_dir)
        XLMRobertaConfig(vocab_size=unigram.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=80,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2).save_pretrained(text_dir)
        cfg = {"embed_dim": 32, "vision_cfg": STANDIN_CLIP_CONFIG["vision_cfg"],
               "text_cfg": {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir),
                            "hf_model_pretrained": False, "hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler",
                            "context_length": 77}}
        Path(work, f"{STANDIN_MULTILINGUAL}.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(work)
        torch.manual_seed(seed)
        logging.getLogger().disabled, was = True, logging.getLogger().disabled
        try:
            model, _, transform = open_clip.create_model_and_transforms(STANDIN_MULTILINGUAL, pretrained_text=False)
        finally:
            logging.getLogger().disabled = was
        tokenizer = open_clip.get_tokenizer(STANDIN_MULTILINGUAL)
        exported = {**cfg, "text_cfg": {**cfg["text_cfg"], "hf_model_name": "xlm-roberta-base (tiny stand-in)",
                                        "hf_tokenizer_name": "xlm-roberta-base (tiny stand-in)"}}
        export_clip(model, exported, stage, tokenizer)
        _record_export(stage, final.name, "xlm-roberta-base-ViT-B-32 (tiny)", "random weights", check_parity(
            model, transform, tokenizer, stage, name=STANDIN_MULTILINGUAL))
        (stage / STANDIN_MARKER).write_text(STANDIN_NOTE)
    return final


def write_standin_tagger(model_dir: Path, seed: int = 0) -> Path:
    """A tiny torch multi-label classifier exported to ONNX in the WD14 layout."""
    import torch

    names = [(n, 9) for n in RATINGS] + [(n, 0) for n in STANDIN_GENERAL_TAGS] + \
            [(n, 4) for n in STANDIN_CHARACTERS]

    class StandinTagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 16, 5, stride=4), torch.nn.ReLU(),
                torch.nn.Conv2d(16, 32, 3, stride=2), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
            self.layout = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
            self.head = torch.nn.Linear(32 + 12, len(names))

        def forward(self, image: Any) -> Any:  # (N, S, S, 3) BGR 0..255, like WD14
            x = image.permute(0, 3, 1, 2) / 127.5 - 1.0
            logits = self.head(torch.cat([self.features(x), 4.0 * self.layout(x)], dim=1))
            # Standardised per image, so each image gets a handful of tags (about 10% pass 0.35).
            z = (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + 1e-6)
            return torch.sigmoid(1.5 * z - 2.5)

    torch.manual_seed(seed)
    module = StandinTagger().eval()
    final = model_dir / "tagger" / STANDIN_TAGGER
    with staged_dir(final) as stage, torch.no_grad():
        example = torch.zeros(1, STANDIN_TAGGER_SIZE, STANDIN_TAGGER_SIZE, 3)
        path = stage / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        with (stage / "selected_tags.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["tag_id", "name", "category", "count"])
            for i, (name, category) in enumerate(names):
                writer.writerow([1000 + i, name, category, 10_000 - i])
        (stage / STANDIN_MARKER).write_text(STANDIN_NOTE)
    return final
