"""One seam with third-party internals: only ``integrations/ultralytics/seams.py`` patches or reads them.

Every module of ``plugin/gradkit`` is parsed with ``ast``; outside the seam, none may touch a name
below or assign to an object it imported from Ultralytics or faster-coco-eval. Planting each kind
of patch the package used to make elsewhere (taken from the code before the move) shows the check
catches it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugin" / "gradkit"
#: The modules allowed to patch and read third-party internals (paths under plugin/gradkit).
SEAM_MODULES = {"integrations/ultralytics/seams.py"}
#: Packages whose objects gradkit may not patch outside the seam.
THIRD_PARTY = ("ultralytics", "faster_coco_eval")

#: Names no module but the seam may read, write, import or pass to getattr/setattr, and why each is internal.
PRIVATE = {
    "_handle_nan_recovery": "BaseTrainer's private NaN recovery; wrapped to reload gradkit's state with last.pt",
    "_get_warmup_iterations": "BaseTrainer's private warmup length, read to plan the optimizer steps",
    "_do_train": "BaseTrainer's private training loop, read by the checks of call order",
    "_prepare_batch": "DetectionValidator's private per-image batch preparation, called to record predictions",
    "_prepare_pred": "DetectionValidator's private per-image prediction preparation, called to record predictions",
    "scale_preds": "a step inside DetectionValidator.pred_to_json, valid only on _prepare_pred's output",
    "jdict": "DetectionValidator's internal list of COCO-json predictions (filled only with save_json=True)",
    "default_callbacks": "Ultralytics' process-global callback registry, copied into every model",
    "check_det_dataset": "Ultralytics' dataset resolver, replaced in every module that imported it (runs download:)",
    "ARGV": "Ultralytics' alias of sys.argv, from which the yolo entrypoint reads its arguments",
    "entrypoint": "the yolo CLI: it takes its arguments only from sys.argv, which the seam rewrites",
    "computeIoU": "faster-coco-eval's (pycocotools') per-image IoU step inside evaluate(), overridden",
    "_gradkit_step": "gradkit's mark on a trainer whose class the seam swapped",
    "_gradkit_step_class": "gradkit's mark on the trainer classes the seam made",
    "_gradkit_augment": "gradkit's mark on a dataset whose transforms the seam replaced",
    "_gradkit_recorder": "gradkit's prediction recorder hung on a validator",
    "_gradkit_cells": "gradkit's mark on a detection loss branch whose assigner the seam restricted",
    "_gradkit_recorded": "gradkit's mark on an assigner whose assignments monitor.taught records",
    "_gradkit_overlap": "gradkit's mark on an assigner whose overlap assign.nwd replaced (with its own and the scale)",
    "_gradkit_stock_apply_bboxes": "the warp's own apply_bboxes, kept on it by the seam that follows it",
}
#: Public names that may be read (or called) anywhere but replaced or mutated only in the seam, and why.
PATCHED = {
    "optimizer_step": "BaseTrainer.optimizer_step, replaced by gradkit's step",
    "build_transforms": "the training dataset's pipeline builder, wrapped to edit the Albumentations stage",
    "transforms": "the dataset's built pipeline, rebuilt through the wrapped builder",
    "update_metrics": "DetectionValidator.update_metrics, wrapped to record predictions",
    "tune": "Model.tune, refused while gradkit is attached",
    "lr": "trainer.lr, the dict Ultralytics logs after on_train_epoch_end; gradkit adds its epoch columns",
    "__class__": "a trainer's class, swapped to chain a user's optimizer_step override",
    "argv": "sys.argv, rewritten in place for the yolo entrypoint",
    "criterion": "a detection model's loss, built by the seam before monitor.taught or an assign option patches it",
    "select_candidates_in_gts": "TaskAlignedAssigner's candidate rule, wrapped by assign.defect_cells",
    "iou_calculation": "TaskAlignedAssigner's overlap of a prediction and a box, wrapped by assign.nwd",
    "init_criterion": "DetectionModel's loss builder, called by the seam when the loss is not built yet",
    "box_candidates": "RandomPerspective's box filter, replaced on a training pipeline's warps to keep thin boxes",
    "apply_bboxes": "RandomPerspective's box warp, followed to learn each box before it is clipped",
}
#: Methods that change the object they are called on.
MUTATORS = {"update", "append", "insert", "extend", "pop", "clear", "setdefault", "remove", "__setitem__"}


def _third_party_names(tree: ast.AST) -> set[str]:
    """Names a module binds to Ultralytics or faster-coco-eval objects (at any depth: lazy imports too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith(THIRD_PARTY)}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(THIRD_PARTY):
            names |= {a.asname or a.name for a in node.names}
    return names


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node


def _written(target: ast.AST):
    """Attribute nodes a target writes through: ``a.b = ``, ``a.b[k] = ``, ``a.b.c = `` (the outermost first)."""
    while isinstance(target, ast.Attribute | ast.Subscript):
        if isinstance(target, ast.Attribute):
            yield target
        target = target.value


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return [t for target in node.targets for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
    if isinstance(node, ast.AugAssign | ast.AnnAssign):
        return [node.target]
    if isinstance(node, ast.Delete):
        return list(node.targets)
    return []


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in {"self", "cls"}


def violations(source: str, where: str) -> list[str]:
    """What a module outside the seam does to third-party internals, one line per finding."""
    tree = ast.parse(source)
    third = _third_party_names(tree)
    found = []

    def add(node: ast.AST, what: str) -> None:
        found.append(f"{where}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            add(node, f".{node.attr} ({PRIVATE[node.attr]})")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in PRIVATE:
                    add(node, f"imports {alias.name} ({PRIVATE[alias.name]})")
        elif isinstance(node, ast.ClassDef) and any(_root(base).id in third for base in node.bases
                                                    if isinstance(_root(base), ast.Name)):
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name in PRIVATE | PATCHED.keys():
                    add(fn, f"defines {fn.name} in a subclass of a third-party class, overriding it")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in {"getattr", "setattr", "hasattr", "delattr"} and len(node.args) >= 2:
            name = node.args[1].value if isinstance(node.args[1], ast.Constant) else None
            if name in PRIVATE or (node.func.id in {"setattr", "delattr"} and name in PATCHED):
                add(node, f"{node.func.id}(..., {name!r})")
            if node.func.id in {"setattr", "delattr"} and isinstance(_root(node.args[0]), ast.Name) \
                    and _root(node.args[0]).id in third:
                add(node, f"{node.func.id} on {_root(node.args[0]).id}, imported from a third-party package")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr in PATCHED and not _is_self(owner.value):
                add(node, f"mutates .{owner.attr} ({PATCHED[owner.attr]})")
        for target in _targets(node):
            for attr in _written(target):
                if attr.attr in PATCHED and not _is_self(attr.value):
                    add(node, f"assigns .{attr.attr} ({PATCHED[attr.attr]})")
            root = _root(target)
            if target is not root and isinstance(root, ast.Name) and root.id in third:
                add(node, f"assigns into {root.id}, imported from a third-party package")
    return found


def _modules() -> dict[str, str]:
    return {p.relative_to(PACKAGE).as_posix(): p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


def test_only_the_seam_touches_third_party_internals():
    modules = _modules()
    assert set(modules) >= SEAM_MODULES
    found = [v for path, text in modules.items() if path not in SEAM_MODULES for v in violations(text, path)]
    assert found == [], "third-party internals touched outside the seam:\n" + "\n".join(found)


def test_every_listed_name_is_one_the_seam_handles():
    """A stale list would guard nothing: each name occurs in the seam's code (not only its docstrings)."""
    seam = "".join(ast.unparse(ast.parse((PACKAGE / path).read_text())) for path in SEAM_MODULES)
    assert [name for name in (*PRIVATE, *PATCHED) if name not in seam] == []


# The patches as they stood outside the seam before it held them all, plus the generic forms.
PLANTED = [
    ("def take_over(trainer, step):\n    trainer.optimizer_step = step\n", "assigns .optimizer_step"),
    ("def chain(trainer, cls):\n    trainer.__class__ = cls\n", "assigns .__class__"),
    ("def follow(trainer):\n    handle = trainer._handle_nan_recovery\n", "._handle_nan_recovery"),
    ("def install(dataset, build):\n    dataset.build_transforms = build\n", "assigns .build_transforms"),
    ("def record(validator, batch):\n    return validator._prepare_batch(0, batch)\n", "._prepare_batch"),
    ("def wrap(validator, fn):\n    validator.update_metrics = fn\n", "assigns .update_metrics"),
    ("def boxes(validator):\n    return validator.jdict\n", ".jdict"),
    ("def register(fn):\n    from ultralytics.utils.callbacks import base\n"
     "    base.default_callbacks['on_train_end'].append(fn)\n", ".default_callbacks"),
    ("import sys\n\ndef hand_over(rest):\n    sys.argv[1:] = rest\n", "assigns .argv"),
    ("def publish(trainer, values):\n    trainer.lr.update(values)\n", "mutates .lr"),
    ("def publish(trainer, values):\n    trainer.lr['grad/x'] = 1.0\n", "assigns .lr"),
    ("def guard(fn):\n    import ultralytics.data.utils as data_utils\n    data_utils.check_det_dataset = fn\n",
     ".check_det_dataset"),
    ("def guard(module, fn):\n    setattr(module, 'check_det_dataset', fn)\n", "setattr(..., 'check_det_dataset')"),
    ("from faster_coco_eval import COCOeval_faster\n\nclass Shared(COCOeval_faster):\n"
     "    def computeIoU(self, imgId, catId):\n        return super().computeIoU(imgId, catId)\n",
     "defines computeIoU"),
    ("def refuse(model, fn):\n    model.tune = fn\n", "assigns .tune"),
    ("def plan(trainer):\n    return trainer._get_warmup_iterations(3)\n", "._get_warmup_iterations"),
    ("def quiet():\n    from ultralytics.engine.trainer import BaseTrainer\n    BaseTrainer.log = print\n",
     "assigns into BaseTrainer"),
    ("def quiet():\n    import ultralytics.utils as u\n    setattr(u.LOGGER, 'level', 50)\n", "setattr on u"),
    ("from ultralytics.cfg import entrypoint\n", "imports entrypoint"),
]


@pytest.mark.parametrize(("planted", "expected"), PLANTED, ids=[e for _, e in PLANTED])
def test_a_planted_patch_outside_the_seam_fails(planted, expected):
    path = "integrations/ultralytics/callback.py"  # a real module, clean before the plant
    module = (PACKAGE / path).read_text(encoding="utf-8")
    found = violations(module + "\n\n" + planted, path)
    assert any(expected in f for f in found), found
    assert all(int(f.split(":")[1]) > len(module.splitlines()) for f in found), found  # only the planted lines


def test_own_objects_are_not_flagged():
    """The rule is about third-party objects: gradkit's own attributes of the same names are fine."""
    own = ("class Runner:\n    def __init__(self, transforms):\n        self.transforms = list(transforms)\n"
           "        self.lr = {}\n\n    def add(self, v):\n        self.lr.update(v)\n\n"
           "def rates(group):\n    return group['lr'], group.get('argv')\n")
    assert violations(own, "own.py") == []
