import types

import leotwin


def test_all_matches_exports():
    exported = {name for name, value in vars(leotwin).items()
                if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    exported.discard("annotations")
    assert set(leotwin.__all__) == exported | {"__version__"}
    for name in leotwin.__all__:
        assert hasattr(leotwin, name), name


def test_all_is_unique():
    assert len(set(leotwin.__all__)) == len(leotwin.__all__)


def test_defaults_have_units_and_sources():
    table = leotwin.defaults_table()
    assert {"name", "value", "unit", "source"} <= set(table.columns)
    assert table["source"].str.len().min() > 10
    assert table["unit"].str.len().min() > 0
