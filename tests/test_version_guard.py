"""The integration refuses Ultralytics versions outside the tested range, loudly."""

import pytest
import ultralytics

from gradkit.integrations.ultralytics import check_ultralytics_version


@pytest.mark.parametrize("version", ["8.3.228", "8.4.189", "8.5.0", "9.0.1"])
def test_untested_versions_are_refused(version):
    with pytest.raises(RuntimeError, match=rf"supports ultralytics>=8\.4\.190,<8\.5\.0, found {version}"):
        check_ultralytics_version(version)


def test_installed_version_is_accepted():
    assert check_ultralytics_version() == ultralytics.__version__
    assert check_ultralytics_version("8.4.999") == "8.4.999"
