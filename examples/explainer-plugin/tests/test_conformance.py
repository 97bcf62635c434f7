"""The plugin's own tests: fexbench's conformance kit, one test case per check."""
import pytest

from fexbench.testing import explainer_checks
from fexbench_nearest import NearestWords


@pytest.mark.parametrize("check", explainer_checks(NearestWords), ids=str)
def test_conformance(check):
    check()


def test_bad_option_is_refused():
    with pytest.raises(ValueError, match="top_fraction"):
        NearestWords(top_fraction=0)
