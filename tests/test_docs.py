"""README's configuration reference is generated from the schema and must match it."""

from pathlib import Path

from gradkit.docs import BEGIN, END, config_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == config_reference(), "run: python -m gradkit.docs README.md"


def test_readme_has_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
