"""Tuned default recipes, one per dataset: every hyperparameter in one place, each with its reason,
and THE config resolution every entry point uses (`resolve_config`).

``cifarlab train --dataset cifar10`` with no other flag uses ``RECIPES["cifar10"]``. Values not
named here take `cifarlab.config.TrainConfig`'s defaults. The measured results of these
recipes are in BENCHMARKS.md.

Precedence, lowest first (timm's ``train.py`` habit: YAML sets defaults, flags override them):

1. `TrainConfig`'s built-in defaults;
2. the recipe of the dataset and model (`recipe_config`), or the named recipe that the
   upper levels' ``recipe`` key chooses (`NAMED_RECIPES`);
3. a config file's values: *every* key the file holds, default-valued or not, so a run's saved
   ``config.yaml`` reproduces that run exactly;
4. overrides: command-line flags and ``--set key=value`` (the CLI), keyword arguments (the
   Python API), or a suite's ``--set`` (suites pass ``defaults`` + a run's keys as the file level).
"""
from __future__ import annotations

import difflib
import os
import textwrap
import warnings

from .config import ConfigError, TrainConfig, parse_dataset, read_config_file

RECIPES: dict[str, dict] = {
    # Keller Jordan's airbench94_muon (github.com/KellerJordan/cifar10-airbench; 94.01% mean of 200 GPU
    # runs in 8 epochs, fp16) with 11 epochs, the count that holds 94% on a CPU in bf16 and in fp32.
    # Measured: BENCHMARKS.md, tables "main-job" and "recipes", rows `cifar10`.
    "cifar10": dict(
        model="airbench94",      # whitened 2x2 stem + 3 conv groups (64/256/256), 1.97M params (airbench)
        epochs=11.0,             # 8 in the GPU recipe; 10 gave 94.03% (one seed) on a CPU, 11 for margin
        batch_size=2000,         # airbench's batch; on a CPU a step costs the same per image at 1000 or 2000
        optimizer="muon",        # Muon on conv filters (orthogonalised updates), Nesterov SGD elsewhere
        lr=0.24,                 # Muon lr for the filters (airbench94_muon)
        muon_momentum=0.6,       # airbench94_muon
        bias_lr=0.053,           # BatchNorm biases and the whitening bias (airbench94_muon)
        head_lr=0.67,            # linear classifier (airbench94_muon)
        momentum=0.85,           # Nesterov momentum of the SGD groups (airbench94_muon)
        weight_decay=0.004,      # 2e-6 per image x batch 2000, decoupled from lr (airbench)
        label_smoothing=0.2,     # airbench's value; 0.1 and 0.3 were level on validation (docs/recipe-search.md)
        schedule="linear",       # linear decay to zero, no warmup (airbench94_muon)
        whiten_bias_epochs=3.0,  # the stem bias trains for 3 epochs, then freezes (airbench)
        flip="alternating",      # every image seen in both orientations in two epochs (airbench)
        translate=2,             # +-2 pixel shifts with reflect padding (airbench)
        tta=2,                   # mirror + 1-pixel translations at test: about +0.8 points (airbench)
        val_size=0,              # all 50 000 training images; --val-size for model selection
        channels_last=True,      # 1.3-2.3x faster than NCHW for this net in bf16 on a 2-core Xeon
    ),
    # The airbench machinery with airbench_res, sized to train in 20 minutes in 3 GiB on a 2-core CPU with
    # native bf16 (721 training images/s, 2.2 GiB at batch 1000). No width, depth, augmentation,
    # smoothing, batch, EMA or schedule change beat it at equal compute (docs/recipe-search.md).
    # Measured: BENCHMARKS.md, table "recipes", rows `cifar100`.
    "cifar100": dict(
        model="airbench_res",    # airbench groups with a third conv and a skip connection
        model_kwargs={"widths": [64, 256, 256], "depth": 2, "residual": True},  # the best of 7 networks within 3 GiB
        epochs=16.0,             # the passes 20 minutes buy at 721 images/s; 100 classes need more than 11
        batch_size=1000,         # batch 2000 would exceed 3 GiB of peak memory
        eval_batch_size=500,     # TTA evaluation memory
        optimizer="muon",        # as cifar10
        lr=0.17,                 # 0.24 / sqrt(2): twice the steps of the batch-2000 recipe
        muon_momentum=0.6,       # as cifar10
        bias_lr=0.053,           # per-example scale (sum-reduced loss): unchanged with batch size
        head_lr=0.67,            # as bias_lr
        momentum=0.85,           # as cifar10
        weight_decay=0.002,      # 2e-6 per image x batch 1000 (airbench's rule)
        label_smoothing=0.2,     # 0.1 and 0.3 scored lower on validation
        schedule="linear",       # a cosine schedule was level at the end
        whiten_bias_epochs=3.0,  # as cifar10
        flip="alternating",      # as cifar10
        translate=2,             # +-4 px and cutout were level or lower
        tta=2,                   # selective TTA (tta_fraction < 1) costs 0.66 points here: every image
        val_size=0,              # as cifar10
        channels_last=True,      # as cifar10
    ),
}


# The crop recipe's keys, shared by airbench94_muon_crop and its batch-1000 variant.
_CROP_8EP = dict(epochs=8.0, img_sizes=[[0, 24], [4, 32]], downsize="crop")

# Named recipes: a dataset's recipe with some keys changed, chosen with ``--recipe NAME`` (config key
# ``recipe``), listed by ``cifarlab config recipes``. Each names the dataset recipe it changes
# (``base``), why it exists (``reason``, with its source) and, in one line, what it gives and where
# that is recorded (``measured``). Flags, --set and config files still win over it.
NAMED_RECIPES: dict[str, dict] = {
    "airbench94_muon": dict(
        base="cifar10",
        reason="The published airbench94_muon configuration (Keller Jordan, github.com/KellerJordan/cifar10-airbench, "
               "94.01% mean of 200 GPU runs in 8 epochs): the cifar10 recipe with 8 epochs. The reference every "
               "cheaper CIFAR-10 recipe is timed against, on the same machine.",
        measured="93.94 +- 0.14% test top-1 over 8 seeds: BENCHMARKS.md, table 'recipes', rows airbench94_muon.",
        values=dict(epochs=8.0),
    ),
    "airbench94_muon_progressive": dict(
        base="cifar10",
        reason="Progressive resizing (Howard et al. 2018, fast.ai's DAWNBench runs; the last epochs at the test size, "
               "Touvron et al. 2019): airbench94_muon with its first 4 of 8 epochs on batches resized to 24 px on "
               "the device, 0.78x its training compute.",
        measured="93.53% and 93.73% test top-1 (2 seeds, 45 000 training images, fp32) against the reference's "
                 "93.71%: docs/recipe-search.md, row 'progressive resizing'.",
        values=dict(epochs=8.0, img_sizes=[[0, 24], [4, 32]]),
    ),
    "airbench94_muon_crop": dict(
        base="cifar10",
        reason="airbench94_muon with random 24-px crops instead of resized images in its first 4 of 8 epochs, so "
               "objects keep their test-time size (Touvron et al. 2019): 0.78x the reference's training compute. "
               "Selective TTA (Hiverge's 2025 CIFAR-10 record, github.com/hiverge/cifar10-speedrun): the level-2 "
               "views only for the 25% of each test batch the network is least sure of.",
        measured="93.79 +- 0.17% test top-1 over 8 seeds at 0.77x the reference's wall time: BENCHMARKS.md, table "
                 "'recipes', rows airbench94_muon_crop.",
        values=dict(_CROP_8EP, tta_fraction=0.25),
    ),
    "quick": dict(
        base="cifar10",
        reason="A first run in about two minutes on a laptop CPU: the cifar10 recipe for 3 epochs on a class-balanced "
               "10 000 of the training images, scored without test-time views. A named recipe rather than a flag, so "
               "its config.yaml says what it was and any key can still be changed.",
        measured="68.0% test top-1 in 153 s (2-core CPU without native bf16) and in 52 s (with it): BENCHMARKS.md, "
                 "table 'first-run'.",
        values=dict(epochs=3.0, train_size=10000, tta=0),
    ),
    "airbench94_muon_crop_bs1000": dict(
        base="cifar10",
        reason="airbench94_muon_crop at batch 1000 (TTA for every test image): twice the optimizer steps for the "
               "same images and 2.5 GiB of peak memory instead of 3.45. Muon lr 0.24/sqrt(2) and weight decay "
               "2e-6 per image x 1000, as the cifar100 recipe scales them.",
        measured="93.74 +- 0.06% test top-1 over 3 seeds at 0.77x the reference's wall time: BENCHMARKS.md, table "
                 "'recipes', row airbench94_muon_crop_bs1000.",
        values=dict(_CROP_8EP, batch_size=1000, lr=0.17, weight_decay=0.002),
    ),
}


def named_recipe(name: str) -> dict:
    """The entry of `NAMED_RECIPES` called ``name``.

    Raises:
        ConfigError: no such recipe (close names and the full list given).
    """
    if name not in NAMED_RECIPES:
        close = difflib.get_close_matches(name, NAMED_RECIPES, n=2)
        raise ConfigError(f"Unknown recipe {name!r}." + (f" Did you mean {', '.join(close)}?" if close else "")
                          + f" Named recipes: {', '.join(NAMED_RECIPES)} ('cifarlab config recipes' describes "
                          "them); leave recipe unset for the dataset's own.")
    return NAMED_RECIPES[name]


def recipes_text(width: int = 100) -> str:
    """``cifarlab config recipes``: every named recipe, the keys it changes, its reason and its result."""
    out = []
    for name, entry in NAMED_RECIPES.items():
        changes = ", ".join(f"{k}={v}" for k, v in entry["values"].items())
        out.append(f"{name}  (the {entry['base']} recipe with {changes})")
        for label in ("reason", "measured"):
            out.append(textwrap.fill(entry[label], width, initial_indent=f"  {label}: ",
                                     subsequent_indent=" " * (len(label) + 4)))
        out.append("")
    out.append("Use one with: cifarlab train --recipe NAME (flags and --set still override its keys).")
    return "\n".join(out)


# Any other model (timm zoo, lenet, vit_cifar), from scratch or transferred: a conventional recipe.
# Nesterov SGD with one-cycle (Smith & Topin 2017) is the usual robust choice for CNNs and for
# fine-tuning; weight decay 5e-4 at lr 0.05 (the classic CIFAR setting) is 2.5e-5 per step,
# expressed decoupled. Mean-reduced loss, so lrs are per batch as in most references.
GENERIC = dict(
    optimizer="sgd", lr=0.05, bias_lr=0.05, head_lr=0.05, momentum=0.9, weight_decay=2.5e-5,
    loss_reduction="mean", label_smoothing=0.1, schedule="onecycle", batch_size=128, epochs=5.0,
    flip="random", translate=4, tta=1, whiten_bias_epochs=0.0, channels_last=True, val_size=0,
    layer_decay=0.7, freeze_epochs=1.0,
    eval_batch_size=256,  # upsampled ImageNet nets: 2000 images at 128 px held 7 GiB of activations
)

AIRBENCH_MODELS = ("airbench94", "airbench_res")


# The seeds' notebooks use Keras application names; each maps to the timm model with the same
# architecture (and ImageNet weights): Keras VGG16/ResNet50/DenseNet121 = torchvision's, Xception =
# timm's port of the Keras/TF original ("legacy_xception").
KERAS_NAMES = {"VGG16": "vgg16", "VGG19": "vgg19", "ResNet50": "resnet50", "ResNet101": "resnet101",
               "DenseNet121": "densenet121", "EfficientNetB0": "efficientnet_b0", "MobileNetV2": "mobilenetv2_100",
               "InceptionV3": "inception_v3", "Xception": "legacy_xception"}


def keras_to_timm(name: str) -> str:
    """timm's name for a Keras application name (warning with a note), other names unchanged."""
    if name in KERAS_NAMES:
        warnings.warn(f"model {name!r} is Keras's name; using timm's {KERAS_NAMES[name]!r} (same architecture).",
                      stacklevel=3)
        return KERAS_NAMES[name]
    return name


def recipe_config(dataset: str, model: str | None = None, recipe: str | None = None) -> TrainConfig:
    """The tuned `TrainConfig` for ``dataset`` and ``model`` (levels 1 and 2 of the precedence).

    The dataset's speed recipe when ``model`` is None or one of the airbench nets (the recipe's own
    model kept unless ``model`` names the other); `GENERIC` for every other model. Image
    folders, stores and shards get the CIFAR-10 speed recipe (a sound start for small images).
    ``recipe`` names an entry of `NAMED_RECIPES`, whose values then replace the speed recipe's.

    Raises:
        ConfigError: an unknown dataset string or recipe name; a named recipe made for another
            dataset's recipe, or given with a model outside the airbench nets.
    """
    spec = parse_dataset(dataset)
    base = spec.kind if spec.is_cifar else "cifar10"
    if model is None or model in AIRBENCH_MODELS:
        values = dict(RECIPES[base])
        if model is not None and model != values.get("model"):
            values.update(model=model, model_kwargs={})
    else:
        values = dict(GENERIC, model=model)
    if recipe is not None:
        entry = named_recipe(recipe)
        if entry["base"] != base:
            raise ConfigError(f"Recipe {recipe!r} changes the {entry['base']} recipe, and dataset {dataset!r} uses "
                              f"the {base} one. Use --dataset {entry['base']}, or leave recipe unset.")
        if model is not None and model not in AIRBENCH_MODELS:
            raise ConfigError(f"Recipe {recipe!r} is a recipe of the airbench nets, not of {model!r}: leave recipe "
                              "unset (other models train with the generic recipe), or the model at its default.")
        values.update(entry["values"], recipe=recipe)
    values["dataset"] = dataset
    return TrainConfig.from_dict(values, source=f"recipe {recipe or dataset}")


def resolve_config(file_values: dict | str | os.PathLike | None = None, overrides: dict | None = None,
                   source: str = "config file") -> TrainConfig:
    """The run config: defaults < recipe < ``file_values`` < ``overrides`` (see the module docstring).

    The recipe is chosen by the dataset and model that the two upper levels name (``cifar10`` and
    the recipe's own model when neither does).

    Args:
        file_values: a config file's path, or its mapping of keys (every key present is applied).
        overrides: keys that win over everything (flags, ``--set``, API keyword arguments).
        source: how ``file_values`` is named in error messages (a path is named by itself).

    Returns:
        The validated `TrainConfig`.

    Raises:
        ConfigError: unknown keys (close matches named), bad values, unreadable file.
    """
    if isinstance(file_values, (str, os.PathLike)):
        source, file_values = str(file_values), read_config_file(file_values)
    file_values, overrides = dict(file_values or {}), dict(overrides or {})
    for level in (file_values, overrides):
        if str(level.get("model")) in KERAS_NAMES:
            level["model"] = keras_to_timm(level["model"])
    pick = lambda key: overrides.get(key, file_values.get(key))
    recipe = pick("recipe") or None
    dataset = pick("dataset") or (named_recipe(recipe)["base"] if recipe else "cifar10")
    cfg = recipe_config(dataset, pick("model"), recipe)
    return cfg.update(file_values, source=source).update(overrides).validate()
