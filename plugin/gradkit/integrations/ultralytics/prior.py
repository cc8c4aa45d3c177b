"""``init.prior``: start training from gradkit's defect prior instead of Ultralytics' initialisation.

The prior is a plain state dict (``torch.load(..., weights_only=True)``: tensors only, no code; it ships
with gradkit and is still read as untrusted input) of ``yolo26n-half.yaml`` trained on ``gradkit synth``'s
defects by ``benchmarks/defect_prior.py``, without its class outputs (the last convolution of every class
branch of Ultralytics' Detect head), so a run with any classes takes the features, the box regression and the
batch statistics, and learns its own classes from Ultralytics' initialisation of that layer.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from gradkit.config import ConfigError
from gradkit.integrations.ultralytics.models import is_gradkit_variant
from gradkit.integrations.ultralytics.seams import SeamError
from gradkit.plan import MODEL_HALF

#: The priors gradkit ships: ``init.prior`` value -> file, and the model yaml it was trained as.
PRIORS = {"defect": (Path(__file__).resolve().parents[2] / "priors" / "defect-half.pt", MODEL_HALF)}
#: State-dict keys of a Detect head's class outputs (Ultralytics 8.4: ``cv3[i][2]`` of the one-to-many branch and
#: ``one2one_cv3[i][2]`` of YOLO26's one-to-one branch): the layers whose shape is the number of classes.
CLASS_OUTPUT = re.compile(r"\.(one2one_)?cv3\.\d+\.2\.")


def read_prior(path: Path) -> dict[str, torch.Tensor]:
    """The prior's tensors by name, checked: a file of anything else is refused with its name."""
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
    return weights


def check_start(name: str, model_arg: object, pretrained: object, task: object = "detect") -> None:
    """Refuse a prior for a task other than detection, or where the run already starts from weights: Ultralytics
    loads ``model=`` ending in ``.pt`` (any case) and any file named by ``pretrained=`` (``BaseTrainer.setup_model``),
    and the prior would silently replace them."""
    if task != "detect":
        raise ConfigError(f"init.prior={name} is a detector's weights; this run's task is {task!r} "
                          "(set init.prior: none)")
    given = [f"{k}={v}" for k, v in (("model", model_arg), ("pretrained", pretrained))
             if isinstance(v, str | Path) and (k == "pretrained" or str(v).lower().endswith(".pt"))]
    if given:
        raise ConfigError(f"init.prior={name} would replace the weights of {given[0]}: start from a model yaml, or "
                          "set init.prior: none to keep them")


def fitting_keys(model: torch.nn.Module, name: str, model_arg: object = None,
                 prior: dict[str, torch.Tensor] | None = None) -> list[str]:
    """The tensors of ``model`` that prior ``name`` (read here unless given) sets, all but the class outputs, or the
    refusal: the user's mistake where ``model_arg`` (the run's ``model=``) is another model, Ultralytics' change
    where it is gradkit's own YAML of the prior's model and still differs."""
    path, trained_as = PRIORS[name]
    prior, own = read_prior(path) if prior is None else prior, model.state_dict()
    keys = [k for k in own if not CLASS_OUTPUT.search(k)]
    differ = [k for k in keys if k not in prior or prior[k].shape != own[k].shape]
    differ += sorted(set(prior) - set(keys))  # a prior tensor the model lacks would be left out unsaid
    own_yaml = is_gradkit_variant(model_arg, trained_as)
    if len(keys) == len(own) and (own_yaml or not differ):
        raise SeamError(f"gradkit: {trained_as} built by this Ultralytics has no class output named like "
                        f"{CLASS_OUTPUT.pattern} (its Detect head changed): init.prior cannot tell its classes apart")
    if differ:
        first = differ[0]
        shapes = (f" ({tuple(prior[first].shape)} in the prior, {tuple(own[first].shape)} here)"
                  if first in prior and first in own else "")
        where = f"differs at {len(differ)} of the prior's {len(prior)} tensors, first {first}{shapes}"
        if own_yaml:
            raise SeamError(f"gradkit: {trained_as} as this Ultralytics builds it {where}: its yolo26.yaml changed "
                            "since the prior was trained (rebuild it with benchmarks/defect_prior.py)")
        raise ConfigError(f"init.prior={name} holds {trained_as}'s weights for detection; this model {where}: train "
                          f"model={trained_as} (task detect) or set init.prior: none")
    return keys


def load_prior(model: torch.nn.Module, ema: torch.nn.Module | None, name: str, model_arg: object = None) -> int:
    """Copy prior ``name`` into ``model`` and its EMA (:func:`fitting_keys`, refused before any is copied); the
    tensors copied."""
    prior = read_prior(PRIORS[name][0])
    keys = fitting_keys(model, name, model_arg, prior)
    with torch.no_grad():
        for target in (model, ema):
            if target is not None:
                state = target.state_dict()
                for k in keys:
                    state[k].copy_(prior[k])
    return len(keys)
