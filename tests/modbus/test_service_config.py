import pytest

from collector.modbus.service import compile_site
from edge.errors import ConfigError

from .conftest import make_site, meter


def test_compile_site_builds_plans_with_tags_and_shared_connections():
    site = make_site([meter("a", "chint-dtsu666", 5020, unit=1), meter("b", "DTSU666", 5020, unit=2),
                      meter("c", "eastron-sdm630", 5021, registers=["voltage_l1_v", "active_energy_import_kwh"])])
    plans = compile_site(site)
    assert [p.meter.id for p in plans] == ["a", "b", "c"]
    assert plans[0].connection_key == plans[1].connection_key != plans[2].connection_key
    assert plans[1].profile.id == "chint-dtsu666"
    assert len(plans[2].reads) == 2 and plans[2].naive_requests == 2


@pytest.mark.parametrize("m, field, words", [
    (meter("x1", "no-such-meter", 5020), "profile", "unknown profile 'no-such-meter'"),
    (meter("x2", "chint-dtsu666", 5020, registers=["voltage_l1_v", "volts"]), "registers", "unknown register 'volts'"),
    (meter("x3", "tuf2000m-water", 5020), "carrier", "measures 'water'"),
])
def test_compile_site_names_meter_and_field(m, field, words):
    with pytest.raises(ConfigError) as ei:
        compile_site(make_site([m]))
    e = ei.value
    assert e.obj == f"meter {m['id']}" and e.field == field and words in str(e)
