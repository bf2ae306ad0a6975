"""Config keys that a saved ``config.yaml`` may hold and `TrainConfig` does not.

Such a key is accepted at its "off" value, which every saved config holds and which changes nothing,
and refused at any other: ignoring the value would train another run than the file describes.
"""
from __future__ import annotations

_JITTER = ("per-image brightness and contrast jitter scored 0.08 points lower on the airbench94_muon_crop "
           "recipe over 5 seeds (docs/recipe-search.md); --auto-augment trivialaugment includes brightness "
           "and contrast operations.")

#: retired key -> why, and what to use instead
RETIRED: dict[str, str] = {"brightness": _JITTER, "contrast": _JITTER}


def check_retired(key: str, value, source: str, error: type[Exception]) -> None:
    """Return when ``value`` is the retired ``key``'s "off" value (0).

    Raises:
        error: (``ConfigError``, passed by `cifarlab.config`) any other value, in one line naming the
            key, why it is retired and what to use instead.
    """
    try:
        if float(value) == 0:
            return
    except (TypeError, ValueError):
        pass
    raise error(f"Config key {key!r} is retired (set to {value!r} in {source}): {RETIRED[key]} "
                "Remove the key to train without it.")
