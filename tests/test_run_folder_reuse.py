"""What a new run removes from a used run folder: only a previous gradkit run's outputs, only inside the folder
(hand-made folders: a user's files, links out of the folder, a folder no gradkit run used)."""

from pathlib import Path

from gradkit.integrations.ultralytics.callback import RUN_OUTPUTS, _remove_previous_outputs


def _previous_run(folder: Path) -> None:
    (folder / "weights").mkdir(parents=True, exist_ok=True)
    (folder / "gradkit.yaml").write_text("clip: {mode: stock}\n")
    for name in ("report.md", "gradients.csv", "gradkit_summary.json"):
        (folder / name).write_text("old")
    (folder / "report_val").mkdir()
    (folder / "report_val" / "x.png").write_bytes(b"")


def test_a_previous_gradkit_run_s_outputs_are_removed(tmp_path):
    _previous_run(tmp_path)
    (tmp_path / "weights" / "last.gradkit.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("mine")  # not a gradkit output
    _remove_previous_outputs(tmp_path)
    assert not any((tmp_path / name).exists() for name in RUN_OUTPUTS)
    assert not (tmp_path / "weights" / "last.gradkit.pt").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_folder_no_gradkit_run_used_keeps_every_file(tmp_path):
    (tmp_path / "report.md").write_text("the user's own")
    _remove_previous_outputs(tmp_path)
    assert (tmp_path / "report.md").read_text() == "the user's own"


def test_nothing_outside_the_folder_is_removed_through_a_link(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    _previous_run(run)
    (elsewhere / "weights").mkdir(parents=True)
    (elsewhere / "weights" / "last.gradkit.pt").write_bytes(b"keep")
    (elsewhere / "gallery").mkdir()
    (elsewhere / "gallery" / "a.png").write_bytes(b"keep")
    (elsewhere / "summary.json").write_text("keep")
    import shutil

    shutil.rmtree(run / "weights")
    (run / "weights").symlink_to(elsewhere / "weights")
    (run / "report_gallery").symlink_to(elsewhere / "gallery")
    (run / "gradkit_summary.json").unlink()
    (run / "gradkit_summary.json").symlink_to(elsewhere / "summary.json")
    _remove_previous_outputs(run)
    assert (elsewhere / "weights" / "last.gradkit.pt").read_bytes() == b"keep"
    assert (elsewhere / "gallery" / "a.png").read_bytes() == b"keep"
    assert (elsewhere / "summary.json").read_text() == "keep"
    assert not (run / "report.md").exists()  # the folder's own file went
