"""``init.prior: defect``: the shipped prior, what it copies into a model and its EMA, what it refuses, and a
real Ultralytics run that starts from it (oracle: the file's own tensors, and planted weights that must stay)."""

from __future__ import annotations

import pickle
import re

import pytest
import torch

from gradkit.config import ConfigError
from gradkit.integrations.ultralytics.prior import CLASS_OUTPUT, PRIORS, check_start, class_rows, load_prior, read_prior

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _model(yaml_name: str = "yolo26n-half.yaml", nc: int = 2, channels: int = 3):
    from ultralytics.nn.tasks import DetectionModel

    from gradkit.integrations.ultralytics.models import resolved_model

    return DetectionModel(resolved_model(yaml_name), ch=channels, nc=nc, verbose=False)


def _raw(output) -> list[torch.Tensor]:
    """The raw head outputs of an eval-mode detector's ``(decoded, raw)`` pair, every tensor in a fixed order."""
    found: list[torch.Tensor] = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            found.append(x)
        elif isinstance(x, dict):
            for k in sorted(x):
                walk(x[k])
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)

    walk(output[1])
    return found


def _planted(model, value: float = 0.5):
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.fill_(value)
    return model


def test_the_shipped_prior_is_every_tensor_of_the_half_width_with_its_class_names():
    path, trained_as = PRIORS["defect"]
    prior = read_prior(path)
    assert prior.names == ("scratch", "crack", "pit", "stain")  # gradkit synth's classes, in its order
    own = _model(trained_as, nc=len(prior.names)).state_dict()
    assert set(prior.weights) == set(own)
    assert all(prior.weights[k].shape == own[k].shape for k in own)
    assert sum(map(bool, map(CLASS_OUTPUT.search, own))) == 12  # 3 levels x 2 branches x (weight, bias)
    assert all(torch.isfinite(v).all() for v in prior.weights.values() if v.is_floating_point())
    # trained, not a fresh initialisation: batch norm has seen data (a fresh one holds variances of exactly 1)
    variances = [v for k, v in prior.weights.items() if k.endswith("running_var")]
    assert variances and not any(torch.all(v == 1) for v in variances)
    assert torch.load(path, map_location="cpu", weights_only=True)["meta"]["model"] == trained_as


def test_the_prior_goes_into_the_model_and_its_ema_and_the_class_outputs_stay():
    prior = read_prior(PRIORS["defect"][0]).weights
    model, ema = _planted(_model()), _planted(_model(), 0.25)
    loaded = load_prior(model, ema, "defect")
    assert loaded.tensors == len(prior) - 12 and loaded.classes == ()
    for target, planted in ((model, 0.5), (ema, 0.25)):
        for k, v in target.state_dict().items():
            if CLASS_OUTPUT.search(k):
                assert torch.all(v == planted), k  # Ultralytics' initialisation of the run's own classes
            else:
                assert torch.equal(v, prior[k]), k


@pytest.mark.parametrize(("run", "prior", "rows"), [
    (["stain", "dent", " Scratch "], ["scratch", "crack", "pit", "stain"], [(0, 3), (2, 0)]),
    (["scratches", "CRACK"], ["scratch", "crack"], [(1, 1)]),  # a plural is another name
    (["crack", "Crack"], ["scratch", "crack"], [(0, 1), (1, 1)]),  # a data YAML may name two classes alike
    (["a", "b"], ["scratch"], []),
])
def test_class_rows_pair_the_classes_named_alike(run, prior, rows):
    assert class_rows(run, prior) == rows


def test_by_name_the_rows_of_classes_named_alike_come_from_the_prior_and_the_others_stay():
    """The run's classes [stain, dent, Scratch]: row 0 takes the prior's stain row (3), row 2 its scratch row (0),
    row 1 (a class the prior does not know) keeps the planted initialisation; in the model and in its EMA."""
    prior = read_prior(PRIORS["defect"][0]).weights
    model, ema = _planted(_model(nc=3)), _planted(_model(nc=3), 0.25)
    loaded = load_prior(model, ema, "defect", class_names=["stain", "dent", "Scratch"])
    assert loaded.classes == ("stain", "Scratch") and loaded.tensors == len(prior) - 12
    for target, planted in ((model, 0.5), (ema, 0.25)):
        outputs = {k: v for k, v in target.state_dict().items() if CLASS_OUTPUT.search(k)}
        assert len(outputs) == 12
        for k, v in outputs.items():
            assert torch.equal(v[0], prior[k][3]) and torch.equal(v[2], prior[k][0]), k
            assert torch.all(v[1] == planted), k


def _edited_prior(tmp_path, monkeypatch, edit):
    """The shipped prior with ``edit(loaded)`` applied, saved and made ``init.prior: defect``; its path."""
    from gradkit.integrations.ultralytics import prior as P

    path, trained_as = PRIORS["defect"]
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    edit(loaded)
    bad = tmp_path / "bad.pt"
    torch.save(loaded, bad)
    monkeypatch.setitem(P.PRIORS, "defect", (bad, trained_as))
    return bad


@pytest.mark.parametrize(("edit", "refused"), [
    (lambda f: f["meta"].update(names=["scratch", "crack"]), "lists 2 class names in meta['names'] and its class "
                                                             "outputs have 4 rows"),
    (lambda f: f["meta"].pop("names"), "has no meta['names']: it must list the class of each class-output row"),
    (lambda f: f["meta"].update(names=torch.zeros(4)), "has meta['names'] of type Tensor"),
    (lambda f: f["meta"].update(names=["scratch", "crack", "Scratch", "stain"]), "lists a class name twice"),
])
def test_a_prior_whose_class_names_do_not_fit_is_refused_in_one_line(tmp_path, monkeypatch, edit, refused):
    bad = _edited_prior(tmp_path, monkeypatch, edit)
    with pytest.raises(ConfigError, match=re.escape(refused)) as caught:
        read_prior(bad)
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=re.escape(refused)):
        load_prior(_model(), None, "defect", class_names=["scratch"])


def test_by_name_from_a_prior_short_of_class_outputs_names_the_file(tmp_path, monkeypatch):
    def strip(f):  # the one-to-one branch's class outputs left out
        f["state_dict"] = {k: v for k, v in f["state_dict"].items() if ".one2one_cv3." not in k or
                           not CLASS_OUTPUT.search(k)}

    bad = _edited_prior(tmp_path, monkeypatch, strip)
    model = _planted(_model())
    assert load_prior(model, None, "defect").classes == ()  # fresh: the file still serves every other layer
    with pytest.raises(ConfigError, match=rf"{re.escape(str(bad))} has no class output "
                                          r"model\.23\.one2one_cv3\.0\.2\.weight with rows of this model's shape"):
        load_prior(model, None, "defect", class_names=["scratch"])
    assert all(torch.all(v == 0.5) for k, v in model.state_dict().items() if CLASS_OUTPUT.search(k))  # none copied


def _prior_loaded_by_callback(classes: str, names: dict, caplog) -> str:
    """gradkit's callback loading the prior into a fresh 2-class half width, as at on_pretrain_routine_end, with
    the data's ``names``: what it logged."""
    from types import SimpleNamespace

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics.callback import GradkitCallback

    callback = GradkitCallback(load_config({"init": {"prior": "defect", "classes": classes}}))
    trainer = SimpleNamespace(data={"names": names}, ema=None, args=SimpleNamespace(model=None))
    with caplog.at_level("INFO"):
        callback._load_prior(trainer, _model(nc=len(names)))
    return caplog.text


@pytest.mark.parametrize(("classes", "names", "said"), [
    ("fresh", {0: "Crack", 1: "dent"}, "the class outputs from Ultralytics' initialisation"),
    ("by_name", {0: "dent", 1: "Crack"}, "the class outputs of Crack from the prior's (init.classes: by_name), of "
                                        "dent from Ultralytics' initialisation"),
    ("by_name", {0: "pit", 1: "Crack"}, "the class outputs of pit, Crack from the prior's (init.classes: by_name)\n"),
    ("by_name", {0: "dent", 1: "bump"}, "init.classes: by_name: none of this data's classes (dent, bump) is named "
                                       "as a class of the prior (scratch, crack, pit, stain)"),
])
def test_the_callback_says_where_each_class_output_came_from(classes, names, said, caplog):
    assert said in _prior_loaded_by_callback(classes, names, caplog)


def test_by_name_without_a_prior_is_refused_when_the_config_is_read():
    from gradkit.config import load_config

    with pytest.raises(ConfigError, match=r"classes=by_name takes class outputs from a prior"):
        load_config({"init": {"classes": "by_name"}})


def test_another_model_is_refused_before_anything_is_copied():
    model = _planted(_model("yolo26n.yaml"))
    with pytest.raises(ConfigError, match=r"init.prior=defect holds yolo26n-half.yaml's weights.*differs at \d+ of "
                                          r"the prior's \d+ tensors, first model\.0\.conv\.weight \(\(8, 3, 3, 3\) "
                                          r"in the prior, \(16, 3, 3, 3\) here\)"):
        load_prior(model, None, "defect", "yolo26n.yaml")
    assert all(torch.all(v == 0.5) for v in model.state_dict().values() if v.is_floating_point())


def test_the_prior_s_own_yaml_built_otherwise_is_ultralytics_change_not_the_user_s(tmp_path, monkeypatch):
    from gradkit.integrations.ultralytics.models import variant_path
    from gradkit.integrations.ultralytics.seams import SeamError

    changed = _model("yolo26n.yaml")  # stands in for yolo26n-half.yaml as a changed Ultralytics would build it
    ours = str(variant_path("yolo26n-half.yaml"))
    with pytest.raises(SeamError, match=r"yolo26n-half.yaml as this Ultralytics builds it differs at .*its "
                                        r"yolo26.yaml changed"):
        load_prior(changed, None, "defect", ours)
    monkeypatch.chdir(tmp_path)  # a user's own file of that name: their model, their mistake
    (tmp_path / "yolo26n-half.yaml").write_text("nc: 2\n")
    with pytest.raises(ConfigError, match="this model differs"):
        load_prior(changed, None, "defect", "yolo26n-half.yaml")
    headless = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))  # no class output at all: the head was renamed
    with pytest.raises(SeamError, match="no class output named like"):
        load_prior(headless, None, "defect", ours)


def test_a_prior_tensor_the_model_lacks_is_refused(tmp_path, monkeypatch):
    from gradkit.integrations.ultralytics import prior as P

    path, trained_as = PRIORS["defect"]
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    loaded["state_dict"]["model.99.extra.weight"] = torch.zeros(1)  # a branch this model does not have
    extended = tmp_path / "extended.pt"
    torch.save(loaded, extended)
    monkeypatch.setitem(P.PRIORS, "defect", (extended, trained_as))
    with pytest.raises(ConfigError, match=r"differs at 1 of the prior's \d+ tensors, first model\.99\.extra"):
        load_prior(_model(), None, "defect", "yolo26n-half.yaml")


def test_a_file_that_is_not_plain_weights_is_refused_without_running_it(tmp_path):
    code = tmp_path / "code.pt"
    torch.save({"state_dict": torch.nn.Linear(2, 2)}, code)  # a module: a pickle of a class, not tensors
    with pytest.raises(ConfigError, match="is not a weights file torch's weights-only reader accepts") as refused:
        read_prior(code)
    assert "\n" not in str(refused.value) and "weights_only=False" not in str(refused.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ConfigError, match="is not a weights file"):  # a pickle opcode the reader refuses
        read_prior(junk)
    listed = tmp_path / "list.pt"
    torch.save({"state_dict": [torch.zeros(1)]}, listed)
    with pytest.raises(ConfigError, match="holds no state_dict of named tensors"):
        read_prior(listed)


@pytest.mark.parametrize(("model", "pretrained", "task", "refused"), [
    ("yolo26n.pt", True, "detect", "would replace the weights of model=yolo26n.pt"),
    ("runs/best.PT", False, "detect", "would replace the weights of model=runs/best.PT"),  # Ultralytics: any case
    ("x.yaml", "weights/best.pt", "detect", "would replace the weights of pretrained=weights/best.pt"),
    ("x.yaml", "weights/state.pth", "detect", "pretrained=weights/state.pth"),  # Ultralytics loads any file named
    ("x.yaml", True, "segment", "this run's task is 'segment'"),
    ("yolo26n-half.yaml", True, "detect", None),  # Ultralytics' default pretrained=True names no file
    ("yolo26n-half.yaml", False, "detect", None),
])
def test_a_run_that_starts_from_weights_keeps_them(model, pretrained, task, refused):
    if refused is None:
        check_start("defect", model, pretrained, task)
        return
    with pytest.raises(ConfigError, match=re.escape(refused)):
        check_start("defect", model, pretrained, task)


@pytest.mark.parametrize("channels", [2, 4])
def test_a_prior_of_three_channels_is_refused_for_other_counts_than_one_or_three_by_its_cause(channels):
    """``channels: 1`` stopped (after its folder was made) with "yolo26.yaml changed since the prior was trained,
    rebuild it": the wrong cause and advice. One channel now takes the prior summed (below); any count but one or
    three has no first layer computing what the prior learnt, and is refused naming it."""
    with pytest.raises(ConfigError, match=rf"channels: {channels}.*init\.prior: none"):
        check_start("defect", "yolo26n-half.yaml", True, "detect", channels=channels)
    for accepted in (1, 3):
        check_start("defect", "yolo26n-half.yaml", True, "detect", channels=accepted)


def test_on_one_channel_the_prior_computes_on_a_gray_image_what_it_computes_on_three_equal_channels():
    """Oracle: the prior loaded into the three-channel model, given a gray image stored as three equal channels
    (how its training images were stored). The one-channel model, given the same image once, must compute the same
    (eval mode: batch norm on the prior's statistics, so a first layer off by any factor shows); its EMA too."""
    three, one, ema = _model(nc=2), _planted(_model(channels=1)), _planted(_model(channels=1), 0.25)
    load_prior(three, None, "defect")
    load_prior(one, ema, "defect")
    head = [k for k in one.state_dict() if CLASS_OUTPUT.search(k)]  # the run's own classes: set alike in both
    with torch.no_grad():
        for k in head:
            for target in (one, ema):
                target.state_dict()[k].copy_(three.state_dict()[k])
    gray = torch.rand(2, 1, 96, 128, generator=torch.Generator().manual_seed(0))
    for model in (three, one, ema):
        model.eval()
    want = _raw(three(gray.expand(-1, 3, -1, -1)))
    assert len(want) >= 6  # both branches' boxes and scores (the top-300 cut of the decoded output is left out)
    for model in (one, ema):
        got = _raw(model(gray))
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want, strict=True):
            assert torch.allclose(g, w, rtol=1e-4, atol=1e-4), (g - w).abs().max()
    first = next(k for k, v in one.state_dict().items() if v.dim() == 4)
    assert one.state_dict()[first].shape[1] == 1
    # every other tensor is the prior's own
    prior = read_prior(PRIORS["defect"][0]).weights
    for target in (one, ema):
        assert all(torch.equal(v, prior[k]) for k, v in target.state_dict().items() if k != first and k not in head)


def test_a_one_channel_model_of_another_shape_is_still_refused_naming_the_tensor():
    """The sum fits a first layer that differs from the prior's only in taking one channel; another model with one
    channel is refused as before, the first differing tensor named."""
    with pytest.raises(ConfigError, match=r"this model differs at \d+ of the prior's \d+ tensors, first model\.0\."):
        load_prior(_model("yolo26n.yaml", channels=1), None, "defect", "yolo26n.yaml")


def test_a_resumed_run_keeps_its_own_weights():
    from types import SimpleNamespace

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics.callback import GradkitCallback

    callback = GradkitCallback(load_config({"init": {"prior": "defect"}}))
    fresh = SimpleNamespace(resume=False, args=SimpleNamespace(resume=False))
    assert callback.prior_due(fresh)
    assert not callback.prior_due(SimpleNamespace(resume=True, args=SimpleNamespace(resume=False)))
    assert not callback.prior_due(SimpleNamespace(args=SimpleNamespace(resume="runs/x/weights/last.pt")))
    assert not GradkitCallback(load_config({})).prior_due(fresh)


@pytest.mark.e2e
@pytest.mark.parametrize("classes", ["fresh", "by_name"])
def test_a_real_run_starts_from_the_prior(tiny_data, tmp_path, classes):
    """The real trainer, ``init.prior: defect``: at the first batch (after gradkit's set-up and before any step)
    the model and its EMA hold the prior's tensors; the class outputs too with ``by_name`` (gradkit synth's data:
    the prior's classes in its order), Ultralytics' initialisation with ``fresh``; the run then trains."""
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics.models import resolved_model

    prior, seen = read_prior(PRIORS["defect"][0]).weights, {}
    yolo = YOLO(resolved_model("yolo26n-half.yaml"))
    gradkit.attach(yolo, {"init": {"prior": "defect", "classes": classes}}, {"report.enabled": False,
                                                                             "monitor.plot": False})

    def first_batch(trainer):
        if "model" not in seen:
            seen["model"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            seen["ema"] = {k: v.clone() for k, v in trainer.ema.ema.state_dict().items()}

    yolo.add_callback("on_train_start", first_batch)
    yolo.train(data=str(tiny_data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", plots=False, val=False,
               project=str(tmp_path), name="run", exist_ok=True, verbose=False)
    for which in ("model", "ema"):
        assert all(torch.equal(seen[which][k], v) for k, v in prior.items() if not CLASS_OUTPUT.search(k)), which
        carried = [torch.equal(seen[which][k], v) for k, v in prior.items() if CLASS_OUTPUT.search(k)]
        assert len(carried) == 12 and set(carried) == {classes == "by_name"}, which
    assert yolo.gradkit.step > 0


@pytest.mark.e2e
def test_a_real_run_on_one_channel_data_starts_from_the_prior_summed(tiny_data, tmp_path):
    """The real trainer on a ``channels: 1`` data YAML (Ultralytics reads the images gray and builds a first layer of
    one channel): before the first step the model and its EMA hold the prior, its first layer summed over the three
    input channels (oracle: the file's tensor summed here); the run then trains and validates."""
    import yaml
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics.models import resolved_model

    doc = yaml.safe_load(tiny_data.read_text())
    gray = tmp_path / "gray.yaml"
    gray.write_text(yaml.safe_dump({**doc, "path": str(tiny_data.parent), "channels": 1}))
    prior, seen = read_prior(PRIORS["defect"][0]).weights, {}
    yolo = YOLO(resolved_model("yolo26n-half.yaml"))
    gradkit.attach(yolo, {"init": {"prior": "defect"}}, {"report.enabled": False, "monitor.plot": False})

    def first_batch(trainer):
        if "model" not in seen:
            seen["model"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            seen["ema"] = {k: v.clone() for k, v in trainer.ema.ema.state_dict().items()}

    yolo.add_callback("on_train_start", first_batch)
    yolo.train(data=str(gray), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", plots=False,
               project=str(tmp_path), name="run", exist_ok=True, verbose=False)
    first = next(k for k, v in prior.items() if v.dim() == 4)
    for which in ("model", "ema"):
        assert seen[which][first].shape[1] == 1, which
        assert torch.allclose(seen[which][first], prior[first].sum(dim=1, keepdim=True)), which
        assert all(torch.equal(seen[which][k], v) for k, v in prior.items()
                   if k != first and not CLASS_OUTPUT.search(k)), which
    assert yolo.gradkit.step > 0


@pytest.mark.e2e
@pytest.mark.parametrize("channels", [2, 4])
def test_the_prior_on_data_of_channels_it_cannot_take_is_a_one_line_error(tiny_data, tmp_path, gradkit_here, channels):
    """``gradkit train`` with the prior on a data YAML whose ``channels`` is neither 1 nor 3: exit 2 before the first
    step, one line naming the key's value, no traceback."""
    import yaml

    doc = yaml.safe_load(tiny_data.read_text())
    odd = tmp_path / "odd.yaml"
    odd.write_text(yaml.safe_dump({**doc, "path": str(tiny_data.parent), "channels": channels}))
    r = gradkit_here("train", "model=yolo26n-half.yaml", f"data={odd}", "epochs=1", "imgsz=64", "workers=0",
                     "device=cpu", f"project={tmp_path}", "name=run", "gradkit.init.prior=defect", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-800:]
    assert f"this run's data says channels: {channels}," in r.stderr and "set init.prior: none" in r.stderr
    assert not list(tmp_path.rglob("last.pt"))


@pytest.mark.e2e
def test_the_prior_with_another_model_is_a_one_line_error(tiny_data, tmp_path, gradkit_here):
    r = gradkit_here("train", "model=yolo26n.yaml", f"data={tiny_data}", "epochs=1", "imgsz=64", "workers=0",
                     "device=cpu", f"project={tmp_path}", "name=run", "gradkit.init.prior=defect", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-800:]
    assert "init.prior=defect holds yolo26n-half.yaml's weights" in r.stderr
    assert not list(tmp_path.rglob("last.pt"))  # refused before the first step
