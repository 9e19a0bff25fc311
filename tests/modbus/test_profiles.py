import pytest

from collector.modbus.profiles import SHIPPED_DIR, find_profile, load_profile_file, load_profiles
from edge.errors import ProfileError

SHIPPED = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def test_every_shipped_profile_loads_and_covers_the_required_models():
    profiles = load_profiles()
    assert set(SHIPPED) == set(profiles)
    models = {p.model for p in profiles.values()}
    assert {"DTSU666", "ADL400", "SDM630", "SDM120", "iEM3255", "EM340"} <= models
    assert {p.carrier for p in profiles.values()} == {"electricity", "water", "gas", "heat"}
    assert profiles["tuf2000m-water"].register("water_volume_m3").counter
    assert profiles["fx-gas-corrector"].register("gas_volume_m3").unit == "m3"
    assert profiles["belimo-energy-valve-heat"].register("heat_energy_kwh").unit == "kWh"


def test_profiles_found_by_model_name_case_insensitive():
    assert find_profile(load_profiles(), "dtsu666").id == "chint-dtsu666"


def test_dtsu666_phase_voltage_is_not_line_to_line():
    """mbmd reads 0x2000 as L1 voltage; the manual says 0x2000 is Uab. We follow the manual."""
    p = load_profiles()["chint-dtsu666"]
    assert p.register("voltage_l1_v").address == 0x2006
    assert p.register("voltage_l1_l2_v").address == 0x2000


def test_iem3255_manual_numbering_is_one_based():
    p = load_profiles()["schneider-iem3255"]
    r = p.register("voltage_l1_v")
    assert (r.address, r.vendor_address) == (3027, "3028")
    assert p.register("active_energy_import_kwh").type == "int64"


def _write(tmp_path, regs: str, name="bad.yaml"):
    f = tmp_path / name
    f.write_text("vendor: X\nmodel: Y\ncarrier: electricity\nregisters:\n" + regs, encoding="utf-8")
    return f


@pytest.mark.parametrize("regs, register, words", [
    ("  - {name: a_v, address: 10, type: float32}\n  - {name: b_v, address: 11}\n", "b_v", "overlaps register a_v"),
    ("  - {name: a_v, address: 10, type: float16}\n", "a_v", "unknown type"),
    ("  - {name: a_v, address: 65535, type: uint32}\n", "a_v", "past 65535"),
    ("  - {name: a_v, address: 70000}\n", "a_v", "past 65535"),
    ("  - {name: a_v, address: 1, word_order: XYZW}\n", "a_v", "word_order"),
    ("  - {name: a_v, address: 1, ratio: kt}\n", "a_v", "ratio"),
])
def test_bad_profile_is_refused_naming_file_and_register(tmp_path, regs, register, words):
    f = _write(tmp_path, regs)
    with pytest.raises(ProfileError) as ei:
        load_profile_file(f)
    msg = str(ei.value)
    assert str(f) in msg and f"register {register}" in msg and words in msg


def test_same_address_in_other_function_is_not_an_overlap(tmp_path):
    f = _write(tmp_path, "  - {name: a_v, address: 0, type: float32}\n  - {name: b_v, address: 0, function: input}\n")
    assert len(load_profile_file(f).registers) == 2


def test_site_profiles_dir_overrides_and_adds(tmp_path):
    _write(tmp_path, "  - {name: a_v, address: 0}\n", name="my-meter.yaml")
    profiles = load_profiles(tmp_path)
    assert "my-meter" in profiles and "chint-dtsu666" in profiles
