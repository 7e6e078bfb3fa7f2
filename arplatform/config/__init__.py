"""Typed configuration: dataclasses validated on construction. Hydra composes YAML into a dict;
`from_dict` makes these of it, naming any unknown key or wrong type; Ray workers get `to_dict`."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field

from ..core.data import INVALID_CODE_POLICIES
from ..core.errors import ConfigError
from ..core.loop import PRECISIONS, OptimConfig
from ..core.model import GPTConfig
from ..core.sampling import CFG_SCHEDULES, SamplingDefaults
from ..core.vae import DOWNSAMPLES, RECONSTRUCTION_LOSSES, VAEConfig
from ..core.vq import VQConfig
from ..data.datasets import DATASETS, MAX_PIXELS
from .files import check_config_dir, check_config_name, no_environment_resolver

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _check_choice(path: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(str, choices))}")


def check_range(path: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    """A finite number in [lo, hi] (open at an end where asked); None passes (optional keys)."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
    ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        kind = "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a finite number"
        if lo is not None and hi is not None:
            want = f"{kind} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        elif lo is not None:
            want = f"{kind} {'>' if lo_open else '>='} {lo}"
        else:
            want = f"{kind} {'<' if hi_open else '<='} {hi}"
        raise ConfigError(f"{path}: {value!r} is out of range; allowed: {want}")


def check_ranges(prefix: str, obj, **rules) -> None:
    """check_range for several fields of `obj`: field=(lo, hi[, lo_open, hi_open])."""
    for name, rule in rules.items():
        check_range(f"{prefix}{name}", getattr(obj, name), *rule)


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(value, path: str = "device") -> None:
    if not isinstance(value, str) or not DEVICE.fullmatch(value):
        raise ConfigError(f"{path}: {value!r} is not one of auto, cpu, cuda, cuda:<index>")


def check_name(path: str, value: str) -> str:
    """A name that becomes one path component: letters, digits, '.', '_', '-'; never '.', '..' or empty."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or value in (".", ".."):
        raise ConfigError(f"{path}: {value!r} is not a safe name (1-128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit; no path separators)")
    return value


def root_path(path: str, value) -> str:
    """An output root: a local folder or a URI (`file:///dir` is /dir, here once). Empty is
    refused: it would mean wherever a command happens to run."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {value!r} is empty; name a folder (e.g. experiments) or a bucket URI")
    local = value[len("file://"):] if value.startswith("file://") else value
    if "://" not in local and not os.path.abspath(local.strip() or "/").strip("/"):
        raise ConfigError(f"{path}: {value!r} names the filesystem's root (or nothing); "
                          "name a folder (e.g. experiments) or a bucket URI")
    return local


def _convert(path: str, value, tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # e.g. str | bool: a value of one of them, checked by the dataclass itself
            if not isinstance(value, tuple(inner)):
                raise ConfigError(f"{path}: expected {' or '.join(a.__name__ for a in inner)}, got {value!r}")
            return value
        return _convert(path, value, inner[0])
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        (inner, *_) = typing.get_args(tp) or (typing.Any,)
        return origin(_convert(f"{path}[{i}]", v, inner) for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls, data: dict, path: str = ""):
    """Build dataclass `cls` from a dict, strictly."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    if unknown := sorted(set(data) - set(fields)):
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown key {where}{unknown[0]}; valid keys{' of ' + path if path else ''}: "
                          f"{', '.join(fields)}")
    kwargs = {k: _convert(f"{path}.{k}" if path else k, v, hints[k]) for k, v in data.items()}
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path + '.' if path else ''}{missing[0]}: required (it has no default)")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        # the core's own checks say "OptimConfig.lr …": name the key as the user wrote it
        message = str(e).replace(f"{cls.__name__}.", f"{path}." if path else "")
        if not (path and message.startswith(f"{path}.")):
            message = f"{path or cls.__name__}: {message}"
        raise ConfigError(message) from e


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} → {'a.b': 1}, for MLflow params."""
    out = {}
    for k, v in d.items():
        out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


@dataclass
class TrackingConfig:
    enabled: bool = True
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<output_root>/mlflow.db
    experiment: str = "arplatform"


@dataclass
class TrainTrackingConfig(TrackingConfig):
    """A training job's tracking: the store, and the model it logs there."""

    log_model: bool = True  # a finished training run logs best.pt + codebook + VAE as an MLflow model
    register: bool = False  # … and registers it as a new version of `model_name`
    model_name: str | None = None  # default: arplatform-<job name>

    def __post_init__(self):
        if self.model_name is not None and not SAFE_NAME.fullmatch(str(self.model_name)):
            raise ConfigError(f"tracking.model_name: {self.model_name!r} is not a safe name (letters, digits, . _ -)")


# The tokenizer stage


@dataclass
class ImageDataConfig:
    dataset: str  # required: mnist_sample, digits, mnist, fashion_mnist, cifar10, folder or npz
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None  # folder datasets: resize to this square size
    channels: int = 1  # folder datasets: 1 (grey) or 3 (RGB)
    limit: int = 0  # keep the first N images (0 = all)
    val_fraction: float = 0.1
    seed: int = 0
    max_pixels: int = MAX_PIXELS  # folder datasets: larger image files are refused before decoding
    bad_images: str = "error"  # folder datasets: an unreadable image stops the run | skip: skipped and counted
    crop: str = "none"  # folder datasets with image_size: none (resize the whole image) | center (its centred square)

    def __post_init__(self):
        _check_choice("data.dataset", self.dataset, DATASETS)
        _check_choice("data.channels", self.channels, (1, 3))
        _check_choice("data.bad_images", self.bad_images, ("error", "skip"))
        _check_choice("data.crop", self.crop, ("none", "center"))
        check_ranges("data.", self, image_size=(4, 4096), limit=(0, None), val_fraction=(0, 1, True, True),
                     seed=(0, None), max_pixels=(1, None))


@dataclass
class TokenizerVAEConfig:
    # the network's fields: the core's VAEConfig holds their defaults
    latent_dim: int = VAEConfig.latent_dim
    channels: int = VAEConfig.channels  # width of the first stage; the second has twice as many
    recon_loss: str = VAEConfig.recon_loss
    beta: float = VAEConfig.beta
    res_blocks: int = VAEConfig.res_blocks  # residual blocks per resolution (colour photographs need them)
    downsample: int = VAEConfig.downsample  # image side / code grid side: 4 or 8
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 50
    precision: str = "auto"

    def __post_init__(self):
        _check_choice("vae.recon_loss", self.recon_loss, RECONSTRUCTION_LOSSES)
        _check_choice("vae.downsample", self.downsample, DOWNSAMPLES)
        check_ranges("vae.", self, latent_dim=(1, 1024), channels=(1, 4096), beta=(0, None), epochs=(1, None),
                     res_blocks=(0, 16), batch_size=(1, None), lr=(0, 1, True), warmup_steps=(0, None))
        _check_choice("vae.precision", self.precision, PRECISIONS)


@dataclass
class CodebookConfig:
    num_codes: int = 256
    mode: str = "kmeans"  # kmeans | medoid
    iters: int = 50
    tol: float = 1e-4
    seed: int = 0
    fit_images: int = 50_000  # k-means on the latents of at most this many training images (a seeded sample)

    def __post_init__(self):
        _check_choice("codebook.mode", self.mode, ("kmeans", "medoid"))
        # codes are stored as int32 and the GPT's vocabulary grows with K: 65,536 is already huge
        check_ranges("codebook.", self, num_codes=(2, 65536), iters=(1, None), tol=(0, None), seed=(0, None),
                     fit_images=(1, None))


@dataclass
class TokenizerVQConfig:
    """kind=vq: a pretrained VQ in LlamaGen's format (`core/vq.py`); the architecture keys are
    LlamaGen's `ModelArgs` (VQ-16 by default) and must match the file."""

    checkpoint: str | None = None  # the published file, e.g. vq_ds16_c2i.pt
    sha256: str | None = None  # when given, the file's SHA-256 must be this
    codebook_size: int = VQConfig.codebook_size
    codebook_embed_dim: int = VQConfig.codebook_embed_dim
    codebook_l2_norm: bool = VQConfig.codebook_l2_norm
    encoder_ch_mult: list[int] = field(default_factory=lambda: VQConfig().encoder_ch_mult)
    decoder_ch_mult: list[int] = field(default_factory=lambda: VQConfig().decoder_ch_mult)
    z_channels: int = VQConfig.z_channels
    channels: int = VQConfig.channels  # LlamaGen's `ch`, the first level's width

    def __post_init__(self):
        sha = self.sha256
        if sha is not None and not (isinstance(sha, str) and re.fullmatch("[0-9a-fA-F]{64}", sha)):
            raise ConfigError(f"vq.sha256: {self.sha256!r} is not a SHA-256 (64 hex digits)")
        check_ranges("vq.", self, codebook_size=(2, 65536), codebook_embed_dim=(1, 1024), z_channels=(32, 4096),
                     channels=(32, 4096))
        for key in ("encoder_ch_mult", "decoder_ch_mult"):
            if not 1 <= len(getattr(self, key)) <= 8:
                raise ConfigError(f"vq.{key}: {list(getattr(self, key))} must list 1 to 8 channel multipliers "
                                  "(VQ-16: [1, 1, 2, 2, 4])")
        try:
            self.model_config(image_size=self.downsample)
        except ValueError as e:
            raise ConfigError(str(e).replace("VQConfig.", "vq.").replace("VQConfig:", "vq:")) from e

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)

    def model_config(self, image_size: int, in_channels: int = 3) -> VQConfig:
        keys = ("codebook_size", "codebook_embed_dim", "codebook_l2_norm", "encoder_ch_mult", "decoder_ch_mult",
                "z_channels", "channels")
        return VQConfig(**{k: getattr(self, k) for k in keys}, image_size=image_size, in_channels=in_channels)


@dataclass
class TokenizerConfig:
    name: str  # required: names the tokenizer's outputs (codebook/<name>, …)
    data: ImageDataConfig  # required: at least data.dataset
    output_root: str = "experiments"
    shards: int = 0  # also write codes-00000.npy … in this many shards (0 = none; engine=ray always shards)
    device: str = "auto"
    engine: str = "local"  # local: encode here | ray: Ray Data actors encode and write code shards in parallel
    actors: int = 2  # engine=ray: encoding actors (one GPU each where the cluster has GPUs)
    cpus_per_actor: float = 1.0
    use_gpu: str = "auto"  # auto | true | false (engine=ray)
    kind: str = "vae"  # vae: train a VAE, fit a codebook | vq: encode with a pretrained VQ (the vq: section)
    vae: TokenizerVAEConfig = field(default_factory=TokenizerVAEConfig)
    vq: TokenizerVQConfig = field(default_factory=TokenizerVQConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self):
        self.output_root = root_path("output_root", self.output_root)
        check_name("name", self.name)
        check_range("shards", self.shards, 0, 100_000)
        check_device(self.device)
        _check_choice("engine", self.engine, ("local", "ray"))
        _check_choice("use_gpu", self.use_gpu, ("auto", "true", "false"))
        check_ranges("", self, actors=(1, 4096), cpus_per_actor=(0, 1024, True))
        _check_choice("kind", self.kind, ("vae", "vq"))
        size, section = self.data.image_size, self.vae if self.kind == "vae" else self.vq
        if size is not None and size % section.downsample:
            step = f"vae.downsample={section.downsample}" if self.kind == "vae" else \
                f"the VQ's downsampling, {section.downsample} (2 ** (len(vq.encoder_ch_mult) - 1))"
            raise ConfigError(f"data.image_size: {size} is not a multiple of {step}")
        if self.kind == "vq" and not self.vq.checkpoint:
            raise ConfigError("vq.checkpoint: kind=vq encodes with a pretrained VQ; name its checkpoint file "
                              "(LlamaGen's vq_ds16_c2i.pt format)")


# The training job (Ray Train)


@dataclass
class CodeDataConfig:
    """The codes: a tokenizer output folder, or files (`codes`: a .npy or a folder of shards
    codes-*.npy with labels-*.npy). Held out: val_codes/val_labels, else a seeded `val_fraction`."""

    codebook_dir: str | None = None
    codes: str | None = None
    labels: str | None = None
    val_codes: str | None = None
    val_labels: str | None = None
    codebook: str | None = None  # codebook.pt: its K is the base vocabulary
    num_codes: int | None = None  # when there is no codebook.pt
    num_classes: int | None = None  # default: from the codebook config or the labels
    invalid_codes: str = "unk"
    val_fraction: float = 0.1
    # true: the rows are read on the driver and held whole in Ray's object store (a job starts
    # seconds sooner: no Ray Data actors); false: Ray Data streams them from the files;
    # auto: true when the rows take at most a quarter of Ray's object store (code_data.holds_rows)
    materialize: str | bool = "auto"

    def __post_init__(self):
        _check_choice("data.invalid_codes", self.invalid_codes, INVALID_CODE_POLICIES)
        if not (self.materialize == "auto" or isinstance(self.materialize, bool)):
            raise ConfigError(f"data.materialize must be auto, true or false, got {self.materialize!r}")
        check_ranges("data.", self, num_codes=(1, 65536), num_classes=(0, 100_000), val_fraction=(0, 1, True, True))


# Named sizes: LlamaGen's GPT-B, -L, -XL (untied output layer) and two small tied ones (`small`:
# the core GPTConfig's own). docs/design.md lists their parameter counts.
TIED = {"tie_embeddings": True}
MODEL_PRESETS = {
    "tiny": {"embed_dim": 128, "num_layers": 2, "num_heads": 4, **TIED},
    "small": {"embed_dim": GPTConfig.embed_dim, "num_layers": GPTConfig.num_layers, "num_heads": GPTConfig.num_heads,
              **TIED},
    "B": {"embed_dim": 768, "num_layers": 12, "num_heads": 12, "tie_embeddings": False},
    "L": {"embed_dim": 1024, "num_layers": 24, "num_heads": 16, "tie_embeddings": False},
    "XL": {"embed_dim": 1280, "num_layers": 36, "num_heads": 20, "tie_embeddings": False},
}


@dataclass
class ModelConfig:
    preset: str | None = None  # a named size (MODEL_PRESETS); null: small
    seq_len: int | None = None  # context in tokens; None = the whole sequence
    embed_dim: int | None = None  # null: the preset's
    num_layers: int | None = None  # null: the preset's
    num_heads: int | None = None  # null: the preset's
    tie_embeddings: bool | None = None  # output layer = token embedding; null: the preset's (B, L, XL untied)
    mlp_ratio: int = GPTConfig.mlp_ratio
    dropout: float = GPTConfig.dropout
    activation_checkpointing: bool = False  # recompute each block's activations in the backward: less memory

    def __post_init__(self):
        _check_choice("model.preset", self.preset, (None, *MODEL_PRESETS))
        if self.seq_len is not None and (not isinstance(self.seq_len, int) or self.seq_len < 2):
            raise ConfigError(f"model.seq_len must be null (the whole sequence) or an int >= 2, got {self.seq_len!r}")
        self.gpt_config(vocab_size=1, seq_len=self.seq_len or 2)  # the core's own checks, named by key

    def sizes(self) -> dict:
        """The sizes set here, the rest the preset's (null in the config: a trial naming another
        preset gets its sizes)."""
        preset = MODEL_PRESETS[self.preset or "small"]
        return {k: preset[k] if getattr(self, k) is None else getattr(self, k) for k in preset}

    def gpt_config(self, vocab_size: int, seq_len: int) -> GPTConfig:
        """The core model's config: this section plus what the data decides."""
        try:
            return GPTConfig(vocab_size=vocab_size, seq_len=seq_len, mlp_ratio=self.mlp_ratio, dropout=self.dropout,
                             **self.sizes())
        except ValueError as e:
            message = str(e).replace("GPTConfig.", "model.").replace("GPTConfig:", "model:")
            raise ConfigError(message if message.startswith("model") else f"model: {message}") from e


@dataclass
class TrainerConfig:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5  # fractional on small machines: see docs/ray.md (CPU deadlocks)
    threads_per_worker: int = 0  # torch threads per worker; 0 = the node's cores / num_workers
    max_failures: int = 2
    worker_start_attempts: int = 3  # each waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s) for resources
    checkpoints_to_keep: int = 2
    num_cpus: int | None = None  # logical CPUs of a local cluster (None = the machine's)
    placement_strategy: str = "PACK"  # Ray's: SPREAD puts workers on different nodes
    strategy: str = "ddp"  # ddp: every worker holds the whole model | fsdp: weights, gradients, optimizer sharded

    def __post_init__(self):
        _check_choice("trainer.strategy", self.strategy, ("ddp", "fsdp"))
        _check_choice("trainer.placement_strategy", self.placement_strategy,
                      ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
        check_ranges("trainer.", self, num_workers=(1, 4096), cpus_per_worker=(0, 1024, True),
                     threads_per_worker=(0, 1024), max_failures=(0, 1000), worker_start_attempts=(1, 1000),
                     checkpoints_to_keep=(1, None), num_cpus=(1, 100_000))


@dataclass
class SampleConfig:
    num_samples: int = 40  # sampled after training for the MLflow artifact grid
    temperature: float = SamplingDefaults.temperature
    top_k: int | None = SamplingDefaults.top_k
    top_p: float | None = SamplingDefaults.top_p
    cfg_scale: float = SamplingDefaults.cfg_scale
    cfg_schedule: str = SamplingDefaults.cfg_schedule  # constant | linear: rising from 1 to cfg_scale over the codes
    precision: str = "auto"  # auto: bf16 only where a decode step is measured faster

    def __post_init__(self):
        _check_choice("sample.precision", self.precision, PRECISIONS)
        _check_choice("sample.cfg_schedule", self.cfg_schedule, CFG_SCHEDULES)
        check_ranges("sample.", self, num_samples=(0, 100_000), temperature=(0, 100), top_k=(1, None),
                     top_p=(0, 1, True), cfg_scale=(-100, 100))


# what a sampler draws with: the keys of a `sample:` section but its grid's size. The one list:
# `jobs.sampling.resolve_sampling` merges them, sampler.json and a command's flags may set them
SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(SampleConfig) if f.name != "num_samples")


def check_sampling(settings, key: str = "sample") -> dict:
    """A mapping of some of SAMPLING_KEYS, each value one a `sample:` section allows."""
    if not isinstance(settings, dict) or set(settings) - set(SAMPLING_KEYS):
        extra = sorted(set(settings) - set(SAMPLING_KEYS)) if isinstance(settings, dict) else settings
        raise ConfigError(f"{key}: {extra!r} is not a sampling setting; allowed: {', '.join(SAMPLING_KEYS)}")
    from_dict(SampleConfig, settings, key)
    return settings


@dataclass
class TrainJobConfig:
    name: str  # required: names the job's outputs (transformer/<name>/…)
    output_root: str = "experiments"
    run_name: str | None = None  # Ray/MLflow run name; default <name>-<timestamp>, unique
    resume: bool = False  # continue the latest run of this config from its last checkpoint
    data: CodeDataConfig = field(default_factory=CodeDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)  # the core loop's own config
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrainTrackingConfig = field(default_factory=TrainTrackingConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self):
        self.output_root = root_path("output_root", self.output_root)
        check_name("name", self.name)
        if self.run_name is not None:
            check_name("run_name", self.run_name)


# Sweeps (Ray Tune over training jobs)

SWEEP_METRICS = ("val/loss", "val/bits_per_token")


@dataclass
class SearchConfig:
    algorithm: str = "random"  # random: grid axes expanded, other axes sampled | optuna: TPE (pip install optuna)
    num_samples: int = 4  # samples of the space (each grid point this many times)
    max_concurrent_trials: int = 2
    metric: str = "val/loss"
    mode: str = "min"
    seed: int = 0

    def __post_init__(self):
        _check_choice("search.algorithm", self.algorithm, ("random", "optuna"))
        _check_choice("search.metric", self.metric, SWEEP_METRICS)
        _check_choice("search.mode", self.mode, ("min",))
        check_ranges("search.", self, num_samples=(1, 100_000), max_concurrent_trials=(1, 10_000), seed=(0, None))


@dataclass
class ASHAConfig:
    enabled: bool = True
    grace_period: int = 1  # epochs every trial runs before it can be stopped
    reduction_factor: float = 2.0
    max_epochs: int | None = None  # None: the training job's optim.epochs

    def __post_init__(self):
        check_ranges("asha.", self, grace_period=(1, None), reduction_factor=(1, None, True),
                     max_epochs=(1, None))


@dataclass
class TuneJobConfig:
    name: str  # required
    train_config: str  # required: the training job every trial runs, e.g. transformer/mnist_sample
    space: dict  # required: {model: {embed_dim: {grid: [...]}}, optim: {lr: {loguniform: [a, b]}}}
    train_overrides: list[str] = field(default_factory=list)  # key=value on that job, for every trial
    sweep_name: str | None = None  # default <name>-<time>-<random>, unique
    resume: bool = False  # continue the latest sweep of this config (or sweep_name)
    search: SearchConfig = field(default_factory=SearchConfig)
    asha: ASHAConfig = field(default_factory=ASHAConfig)
    trial_cpus: float = 0.25  # the trial's own process (it drives one Ray Train run)
    register_best: bool = False  # the best trial's best.pt as a registered MLflow model (train.tracking.model_name)
    train: TrainJobConfig | None = None  # composed from train_config + overrides (`tune.build_config`)

    def __post_init__(self):
        check_name("name", self.name)
        if self.sweep_name is not None:
            check_name("sweep_name", self.sweep_name)
        check_range("trial_cpus", self.trial_cpus, 0, 1024, True)
        if not isinstance(self.space, dict) or not self.space:
            raise ConfigError("space: expected a non-empty mapping of training keys to "
                              "{grid|choice|uniform|loguniform: [...]}")


# Generation (local, or Ray Data actors)


@dataclass
class GenerateConfig:
    transformer_ckpt: str = "experiments/transformer/mnist_sample/checkpoints/best.pt"
    codebook_pt: str | None = None  # default: the codebook the checkpoint was trained on
    vae_ckpt: str | None = None  # default: the VAE the codebook names
    num_samples: int = 100
    classes: str = "all"  # all (balanced, index i → class i mod C) | none (unconditional) | "3,5,7"
    # only what a person set: the rest is the checkpoint's own (`jobs.sampling.resolve_sampling`)
    sample: dict = field(default_factory=dict)  # of SAMPLING_KEYS (temperature, top_k, cfg_scale, …)
    seed: int = 0
    batch_size: int = 64
    out: str | None = None  # default <output_root>/samples/<config of the checkpoint>
    output_root: str = "experiments"
    engine: str = "local"  # local: this process | ray: Ray Data actors
    actors: int = 1
    cpus_per_actor: float = 1.0
    use_gpu: str = "auto"  # auto: one GPU per actor when the cluster has GPUs | true | false
    device: str = "auto"  # local engine
    stall_timeout_s: float = 300.0  # Ray engine: fail when no batch finishes for this long
    allow_mismatch: bool = False  # decode with a codebook or VAE other than those the checkpoint trained with
    format: str = "png"  # png: a file per image | tar: a tar of PNGs per batch | npz: an array per batch
    tracking_uri: str | None = None  # the MLflow store of a models:/ or runs:/ transformer_ckpt (default as training)

    def __post_init__(self):
        self.output_root = root_path("output_root", self.output_root)
        check_ranges("", self, num_samples=(1, 10_000_000), seed=(0, 2**62), batch_size=(1, 65536),
                     actors=(1, 4096), cpus_per_actor=(0, 1024, True), stall_timeout_s=(1, None))
        _check_choice("engine", self.engine, ("local", "ray"))
        _check_choice("use_gpu", self.use_gpu, ("auto", "true", "false"))
        _check_choice("format", self.format, ("png", "tar", "npz"))
        check_device(self.device)
        if not isinstance(self.classes, str) or not re.fullmatch(r"all|none|\d+(,\d+)*", self.classes):
            raise ConfigError(f"classes: {self.classes!r} is not all, none or a comma-separated list of class ids")
        for path in ("transformer_ckpt", "codebook_pt", "vae_ckpt", "out"):
            value = getattr(self, path)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{path}: expected a path, got {value!r}")
        check_sampling(self.sample)


# Evaluation of a tokenizer folder, or of a samples folder


@dataclass
class TokenizerEvalConfig:
    codebook_dir: str  # required: a tokenizer output folder (codebook.pt, tokenizer_config.json, split.json)
    vae: str | None = None  # default: the VAE the codebook names
    device: str = "auto"

    def __post_init__(self):
        check_device(self.device)


@dataclass
class SamplesEvalConfig:
    samples_dir: str  # required: a folder `arplatform generate` wrote
    output_root: str = "experiments"  # where the classifier is cached (classifiers/)

    def __post_init__(self):
        self.output_root = root_path("output_root", self.output_root)


# Sampler sweeps (Ray Tune over sampling settings of one checkpoint)


def default_sampler_space() -> dict:
    return {"sample": {"temperature": {"uniform": [0.8, 1.1]}, "top_k": {"choice": [None, 16, 32, 64]},
                       "cfg_scale": {"uniform": [1.0, 4.0]}}}


@dataclass
class SamplerSweepConfig:
    name: str  # required
    transformer_ckpt: str  # required: the checkpoint whose sampling settings are swept
    output_root: str = "experiments"
    space: dict = field(default_factory=default_sampler_space)  # sample: {<a key of SAMPLING_KEYS>: …}
    trials: int = 8
    num_samples: int = 200  # generated and scored per trial, balanced over the classes
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    seed: int = 0

    def __post_init__(self):
        self.output_root = root_path("output_root", self.output_root)
        check_name("name", self.name)
        check_ranges("", self, trials=(1, 10_000), num_samples=(10, 1_000_000), max_concurrent_trials=(1, 10_000),
                     cpus_per_trial=(0, 1024, True), seed=(0, 2**62))
        if not isinstance(self.space, dict) or not self.space:
            raise ConfigError("space: expected a mapping such as {sample: {cfg_scale: {uniform: [1, 4]}}}")


# The whole chain (tokenize → train → generate → evaluate → report)


@dataclass
class PipelineConfig:
    name: str  # required
    tokenizer_config: str  # required, e.g. tokenizer/mnist_sample
    train_config: str  # required, e.g. transformer/mnist_sample
    output_root: str = "experiments"
    tokenizer_overrides: list[str] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    num_samples: int = 500  # generated and evaluated, balanced over the classes
    generate_engine: str = "ray"  # ray: Ray Data actors (the cluster's GPUs where there are) | local
    actors: int = 1
    cpus_per_actor: float = 1.0
    force: list[str] = field(default_factory=list)  # stages to redo even when done with the same config

    def __post_init__(self):
        self.output_root = root_path("output_root", self.output_root)
        check_name("name", self.name)
        check_range("num_samples", self.num_samples, 1, 10_000_000)
        check_ranges("", self, actors=(1, 4096), cpus_per_actor=(0, 1024, True))
        _check_choice("generate_engine", self.generate_engine, ("local", "ray"))
        for stage in self.force:
            _check_choice("force", stage, PIPELINE_STAGES)


PIPELINE_STAGES = ("tokenize", "train", "generate", "evaluate")


# Composing a config from the YAML files (Hydra's compose API); arplatform/configs/ is package data
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def strings_in(node, path: str = ""):
    """(key path, value) of every string in a composed config's dicts and lists."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings_in(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings_in(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def refuse_env_interpolations(node) -> None:
    """`${oc.env:…}` written out, refused naming the key (other spellings: `no_environment_resolver`)."""
    for path, value in strings_in(node):
        if "oc.env" in value.replace(" ", "") and "${" in value:
            raise ConfigError(f"{path}: ${{oc.env:…}} is refused (configs are printed and logged to MLflow, so a "
                              "secret would be too); pass the value as key=value, or leave credentials in the "
                              "environment, where the platform reads them")


def refuse_interpolations(node) -> None:
    """A `${` left after resolving (written escaped) would interpolate for the next OmegaConf reader."""
    for path, value in strings_in(node):
        if "${" in value:
            raise ConfigError(f"{path}: {value!r} holds '${{' after resolving; a value may not name an interpolation")


def config_names(config_dir: str, group: str) -> list[str]:
    folder = os.path.join(config_dir, group)
    if not os.path.isdir(folder):
        return []
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml") and f != "base.yaml")


# Each group's defaults are its dataclass's: the ConfigStore holds it as `<group>/schema`, each
# base.yaml starts from it; Hydra refuses unknown keys and wrong types while it composes.
SCHEMAS = {"tokenizer": TokenizerConfig, "transformer": TrainJobConfig, "tune": TuneJobConfig,
           "sampler_tune": SamplerSweepConfig, "pipeline": PipelineConfig, "generate": GenerateConfig,
           "evaluate": TokenizerEvalConfig, "evaluate_samples": SamplesEvalConfig}


def register_schemas() -> None:
    """Every group's dataclass into Hydra's ConfigStore (idempotent; by `compose`, not on import)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, cls in SCHEMAS.items():
        store.store(group=group, name="schema", node=cls, package="_global_")


def hydra_error_line(error: Exception) -> str:
    """Hydra's and OmegaConf's many-line, chained errors as one line that names the key."""
    texts, key, e = [], None, error
    while e is not None:
        key = key or getattr(e, "full_key", None)
        for line in str(e).strip().splitlines():
            line = line.strip()
            found = re.match(r"full_key: (\S+)", line)
            key = key or (found and found.group(1))
            meta = line.startswith(("full_key:", "reference_type=", "object_type=", "To append to your config use")) \
                or "$VALUE" in line  # Hydra's `+key` advice: a key the schema lacks is a typo, not an addition
            if line and line != "None" and not meta and line not in texts:
                texts.append(line)
        e = e.__cause__
    message = ": ".join(t.rstrip(".:") for t in texts)
    return message if not key or message.startswith(key) else f"{key}: {message}"  # the key first


def compose(config_name: str, overrides: list[str], config_dir: str = CONFIG_DIR) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_config_name(config_name)
    check_config_dir(config_dir)  # every file bounded, plain YAML tags only: before Hydra constructs anything
    if not os.path.exists(os.path.join(config_dir, config_name + ".yaml")):
        group = os.path.dirname(config_name)
        names = config_names(config_dir, group)
        if not names:  # no group, or one that does not exist: every config there is
            groups = [g for g in sorted(os.listdir(config_dir)) if os.path.isdir(os.path.join(config_dir, g))]
            group, names = "", [f"{g}/{n}" for g in groups for n in config_names(config_dir, g)]
        raise ConfigError(f"{config_dir}/{config_name}.yaml: no such config; available in {group or config_dir}: "
                          f"{', '.join(names)}")
    register_schemas()
    try:
        with no_environment_resolver(), initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
            refuse_env_interpolations(OmegaConf.to_container(cfg, resolve=False))
            resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as e:
        line = hydra_error_line(e)
        key = line.split(":", 1)[0]
        if key.startswith("space.") and "is not in struct" in line:  # a sweep's space is any mapping: a new axis
            line = f"{key}: not an axis of this space yet; add one with '+{key}=…' (docs/tune.md)"
        raise ConfigError(line) from e
    refuse_interpolations(resolved)  # an escaped `\${…}` resolves to one: nothing may resolve it later
    return resolved
