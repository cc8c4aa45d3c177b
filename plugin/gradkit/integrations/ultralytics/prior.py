"""``init.prior``: start training from gradkit's defect prior instead of Ultralytics' initialisation.

The prior is a plain state dict (``torch.load(..., weights_only=True)``: tensors only, no code; it ships
with gradkit and is still read as untrusted input) of ``yolo26n-half.yaml`` trained on ``gradkit synth``'s
defects by ``benchmarks/defect_prior.py``, with the names of the classes its class outputs (the last convolution
of every class branch of Ultralytics' Detect head) score, row by row. A run with any classes takes the features,
the box regression and the batch statistics; its class outputs keep Ultralytics' initialisation, or with
``init.classes: by_name`` take the prior's rows of the classes its data names alike. On one-channel data (a data
YAML's ``channels: 1``) the first convolution takes the sum of the prior's over its three input channels
(:func:`fit_input_channels`).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gradkit.config import ConfigError
from gradkit.integrations.ultralytics.models import is_gradkit_variant
from gradkit.integrations.ultralytics.seams import SeamError
from gradkit.plan import GRAY_CHANNELS, MODEL_HALF, PRIOR_CHANNELS, PRIOR_INPUT_CHANNELS

#: The priors gradkit ships: ``init.prior`` value -> file, and the model yaml it was trained as.
PRIORS = {"defect": (Path(__file__).resolve().parents[2] / "priors" / "defect-half.pt", MODEL_HALF)}
#: State-dict keys of a Detect head's class outputs (Ultralytics 8.4: ``cv3[i][2]`` of the one-to-many branch and
#: ``one2one_cv3[i][2]`` of YOLO26's one-to-one branch): the layers whose shape is the number of classes.
CLASS_OUTPUT = re.compile(r"\.(one2one_)?cv3\.\d+\.2\.")


@dataclass(frozen=True)
class Prior:
    """A prior file's tensors by name, and the class each row of its class outputs scores."""

    weights: dict[str, torch.Tensor]
    names: tuple[str, ...]


def read_prior(path: Path) -> Prior:
    """The prior's tensors and class names, checked: a file of anything else is refused with its name."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:  # weights_only refuses code
        # torch's message runs to many lines and suggests weights_only=False, which would run the file's code
        raise ConfigError(f"init.prior: {path} is not a weights file torch's weights-only reader accepts "
                          f"({type(exc).__name__})") from None
    weights = loaded.get("state_dict") if isinstance(loaded, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in weights.items()):
        raise ConfigError(f"init.prior: {path} holds no state_dict of named tensors")
    return Prior(weights, _class_names(path, loaded.get("meta"), weights))


def _class_names(path: Path, meta: object, weights: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """``meta["names"]``: one distinct class name per row of every class output (said in one line otherwise)."""
    names = meta.get("names") if isinstance(meta, dict) else None
    rows = sorted({v.shape[0] if v.dim() else 0 for k, v in weights.items() if CLASS_OUTPUT.search(k)})
    if not (isinstance(names, list | tuple) and all(isinstance(n, str) for n in names)):
        got = "no meta['names']" if names is None else f"meta['names'] of type {type(names).__name__}"
        raise ConfigError(f"init.prior: {path} has {got}: it must list the class of each class-output row")
    if rows != ([len(names)] if rows or names else []):  # a file without class outputs names no class
        raise ConfigError(f"init.prior: {path} lists {len(names)} class names in meta['names'] and its class outputs "
                          f"have {', '.join(map(str, rows)) or 'no'} rows")
    if len({class_key(n) for n in names}) < len(names):
        raise ConfigError(f"init.prior: {path} lists a class name twice in meta['names'] (case ignored)")
    return tuple(names)


def class_key(name: object) -> str:
    """How two class names are told alike: case and surrounding space ignored (``Scratch`` is ``scratch``)."""
    return str(name).strip().casefold()


def class_rows(run_names: Sequence[str], prior_names: Sequence[str]) -> list[tuple[int, int]]:
    """(the run's class index, the prior's row) for every class of the run the prior names alike (two classes of the
    run named alike both take that row)."""
    prior_row = {class_key(n): j for j, n in enumerate(prior_names)}
    return [(i, prior_row[class_key(n)]) for i, n in enumerate(run_names) if class_key(n) in prior_row]


def check_start(name: str, model_arg: object, pretrained: object, task: object = "detect", channels: int = 3) -> None:
    """Refuse a prior for a task other than detection, for data of other than one or three channels (the priors
    were trained on three; one takes their sum, :func:`fit_input_channels`; any other count has no first layer that
    computes what the prior learnt), or where the run already starts from weights: Ultralytics loads ``model=``
    ending in ``.pt`` (any case) and any file named by ``pretrained=`` (``BaseTrainer.setup_model``), and the prior
    would silently replace them."""
    if task != "detect":
        raise ConfigError(f"init.prior={name} is a detector's weights; this run's task is {task!r} "
                          "(set init.prior: none)")
    if channels not in PRIOR_INPUT_CHANNELS:  # YAML's true passes as 1, as Ultralytics builds it (Conv2d(True, ...))
        raise ConfigError(f"init.prior={name} was trained on three-channel images (one-channel data takes their "
                          f"sum); this run's data says channels: {channels}, so the model's first layer takes "
                          f"{channels} (set init.prior: none)")
    given = [f"{k}={v}" for k, v in (("model", model_arg), ("pretrained", pretrained))
             if isinstance(v, str | Path) and (k == "pretrained" or str(v).lower().endswith(".pt"))]
    if given:
        raise ConfigError(f"init.prior={name} would replace the weights of {given[0]}: start from a model yaml, or "
                          "set init.prior: none to keep them")


def fit_input_channels(prior: Prior, own: dict[str, torch.Tensor]) -> Prior:
    """The prior for a model whose first convolution takes one channel where the prior's takes three: that layer's
    weights summed over their input channels. On a gray image this is exactly the function the prior computes on
    the same image stored as three equal channels (a convolution is linear in its input), which is how the
    prior's training images, gray by default (``gradkit synth``), were stored; every other tensor is the prior's.
    Any other model gets the prior unchanged (:func:`fitting_keys` then names what differs)."""
    first = next((k for k, v in own.items() if v.dim() == 4), None)  # the input layer: the state dict's first conv
    theirs = prior.weights.get(first)
    if theirs is None or theirs.dim() != 4 or theirs.shape[1] != PRIOR_CHANNELS or own[first].shape != (
            theirs.shape[0], GRAY_CHANNELS, *theirs.shape[2:]):
        return prior
    return Prior({**prior.weights, first: theirs.sum(dim=1, keepdim=True)}, prior.names)


def fitting_keys(model: torch.nn.Module, name: str, model_arg: object, prior: Prior) -> list[str]:
    """The tensors of ``model`` that ``prior`` (prior ``name``'s, fitted to the model's first layer by
    :func:`fit_input_channels`) sets, all but the class outputs, or the refusal: the user's mistake where
    ``model_arg`` (the run's ``model=``) is another model, Ultralytics' change where it is gradkit's own YAML of the
    prior's model and still differs."""
    trained_as = PRIORS[name][1]
    own = model.state_dict()
    keys = [k for k in own if not CLASS_OUTPUT.search(k)]
    differ = [k for k in keys if k not in prior.weights or prior.weights[k].shape != own[k].shape]
    # a prior tensor the model lacks would be left out unsaid; the class outputs are compared row by row
    differ += sorted(k for k in set(prior.weights) - set(keys) if not (CLASS_OUTPUT.search(k) and k in own))
    own_yaml = is_gradkit_variant(model_arg, trained_as)
    if len(keys) == len(own) and (own_yaml or not differ):
        raise SeamError(f"gradkit: {trained_as} built by this Ultralytics has no class output named like "
                        f"{CLASS_OUTPUT.pattern} (its Detect head changed): init.prior cannot tell its classes apart")
    if differ:
        first = differ[0]
        shapes = (f" ({tuple(prior.weights[first].shape)} in the prior, {tuple(own[first].shape)} here)"
                  if first in prior.weights and first in own else "")
        where = f"differs at {len(differ)} of the prior's {len(prior.weights)} tensors, first {first}{shapes}"
        if own_yaml:
            raise SeamError(f"gradkit: {trained_as} as this Ultralytics builds it {where}: its yolo26.yaml changed "
                            "since the prior was trained (rebuild it with benchmarks/defect_prior.py)")
        raise ConfigError(f"init.prior={name} holds {trained_as}'s weights for detection; this model {where}: train "
                          f"model={trained_as} (task detect) or set init.prior: none")
    return keys


def _class_outputs(model: torch.nn.Module, name: str, prior: Prior) -> list[str]:
    """The model's class outputs, each also in the prior with rows of the same shape. Every other tensor has matched
    by now (:func:`fitting_keys`), so a class output that does not is the file's fault."""
    own = model.state_dict()
    outputs = [k for k in own if CLASS_OUTPUT.search(k)]
    for k in outputs:
        theirs = prior.weights.get(k)
        if theirs is None or theirs.shape[1:] != own[k].shape[1:]:
            raise ConfigError(f"init.prior: {PRIORS[name][0]} has no class output {k} with rows of this model's "
                              f"shape {tuple(own[k].shape[1:])}: rebuild it with benchmarks/defect_prior.py")
    return outputs


@dataclass(frozen=True)
class Loaded:
    """What :func:`load_prior` copied: the number of tensors, and the classes whose outputs came from the prior (of
    the classes the prior was trained on, ``prior_names``)."""

    tensors: int
    classes: tuple[str, ...]
    prior_names: tuple[str, ...]


def load_prior(model: torch.nn.Module, ema: torch.nn.Module | None, name: str, model_arg: object = None,
               class_names: Sequence[str] | None = None) -> Loaded:
    """Copy prior ``name`` into ``model`` and its EMA (:func:`fitting_keys`, refused before any is copied), and where
    ``class_names`` (the run's, by index) are given, the prior's class-output rows of the classes named alike."""
    prior = fit_input_channels(read_prior(PRIORS[name][0]), model.state_dict())
    keys = fitting_keys(model, name, model_arg, prior)
    rows = class_rows(class_names, prior.names) if class_names is not None else []
    outputs = _class_outputs(model, name, prior) if rows else []
    with torch.no_grad():
        for target in (model, ema):
            if target is not None:
                state = target.state_dict()
                for k in keys:
                    state[k].copy_(prior.weights[k])
                for k in outputs:
                    for i, j in rows:
                        state[k][i].copy_(prior.weights[k][j])
    return Loaded(len(keys), tuple(class_names[i] for i, _ in rows), prior.names)
