"""``benchmarks/defect_quality.py``'s ``last_trained_size``: the size a run is scored at, read from its own files
(untrusted), by hand-made run folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from defect_quality import last_trained_size


def _run(tmp_path: Path, final_size=None, summary_text: str | None = None, args_text: str = "imgsz: 448\n") -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.yaml").write_text(args_text, encoding="utf-8")
    if summary_text is not None or final_size is not None:
        text = summary_text if summary_text is not None else json.dumps({"final_size": final_size})
        (run / "gradkit_summary.json").write_text(text, encoding="utf-8")
    return run


@pytest.mark.parametrize(("final_size", "size"), [
    (None, 448),  # a run without the option
    ({"imgsz": 448, "final_imgsz": 672, "from_epoch": 46}, 672),  # switched at epoch 46
    ({"imgsz": 448, "final_imgsz": 672, "from_epoch": None}, 448),  # ended before the switch
])
def test_a_run_is_scored_at_the_size_it_trained_last(tmp_path, final_size, size):
    assert last_trained_size(_run(tmp_path, final_size=final_size, summary_text=None if final_size else "{}")) == size


@pytest.mark.parametrize(("summary", "args", "named"), [
    ('{"final_size": {"final_imgsz": "672", "from_epoch": 3}}', "imgsz: 448\n", "gradkit_summary.json"),
    ("{not json", "imgsz: 448\n", "gradkit_summary.json"),
    ("{}", "imgsz: [448, 448]\n", "args.yaml"),
    ("{}", "imgsz: [unclosed\n", "args.yaml"),
])
def test_a_bad_file_is_refused_naming_it(tmp_path, summary, args, named):
    with pytest.raises(SystemExit, match=rf"{named}: "):
        last_trained_size(_run(tmp_path, summary_text=summary, args_text=args))
