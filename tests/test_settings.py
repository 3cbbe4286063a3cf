import pytest

from cellstudy import settings, simulate


def test_every_profile_has_a_simulation_and_quick_is_smaller():
    configs = {profile: settings.simulation_config(profile) for profile in settings.PROFILES}
    assert configs["quick"].image_size < configs["default"].image_size
    assert configs["quick"].n_genes < configs["default"].n_genes
    assert configs["default"] == simulate.SimulationConfig()


def test_unknown_profile_is_named():
    with pytest.raises(ValueError, match="'huge'"):
        settings.simulation_config("huge")
