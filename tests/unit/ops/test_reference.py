"""The generated references (docs/configuration.md, docs/redis-keys.md) match the code."""

import inspect
from pathlib import Path

import pytest

from ops import reference
from schemas import naming
from schemas.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[3]
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("rel", sorted(reference.TARGETS))
def test_committed_reference_is_what_the_code_generates(rel):
    committed = (ROOT / rel).read_text(encoding="utf-8")
    assert committed == reference.TARGETS[rel](), (
        f"{rel} drifted from the code: run `python -m ops.reference` and commit the result"
    )


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_a_description(field):
    assert Settings.model_fields[field].description, f"Settings.{field} needs Field(description=...)"
    assert f"| `{ENV_PREFIX}{field.upper()}` |" in CONFIGURATION


def test_every_setting_is_in_exactly_one_group():
    grouped = [name for _, names in reference.settings_groups() for name in names]
    assert sorted(grouped) == sorted(Settings.model_fields)


def test_every_key_builder_is_in_the_key_table():
    """A new key builder in schemas/naming.py must say what its key holds (REDIS_KEYS)."""
    builders = {
        name
        for name, fn in inspect.getmembers(naming, inspect.isfunction)
        if fn.__module__ == naming.__name__ and (name.endswith(("_key", "_channel", "_keys")))
    }
    documented = {doc.builder.__name__ for doc in naming.REDIS_KEYS}
    assert builders == documented
    tenant_parts = sorted(doc.part for doc in naming.REDIS_KEYS if doc.builder is naming.tenant_keys)
    assert tenant_parts == list(range(len(naming.tenant_keys(Settings.model_construct(), "t"))))


def test_every_topic_and_folder_builder_is_listed():
    builders = {
        name
        for name, fn in inspect.getmembers(naming, inspect.isfunction)
        if fn.__module__ == naming.__name__ and name.endswith(("_topic", "_queue", "_index", "_dir"))
    }
    assert builders == {doc.builder.__name__ for doc in naming.OTHER_NAMES}


def test_key_patterns_come_from_the_builders():
    keys = reference.redis_keys_md()
    assert "| `<p>:result:<scoped id>` | hash |" in keys
    assert "| `<p>:tenant:<tenant>:sizes` | hash |" in keys
    assert "| `<p>.model.<model>` | Celery queue |" in keys


def test_drift_is_reported_per_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "configuration.md").write_text(reference.configuration_md(), encoding="utf-8")
    (tmp_path / "docs" / "redis-keys.md").write_text("stale\n", encoding="utf-8")
    assert reference.drifted(tmp_path) == ["docs/redis-keys.md"]


def test_inferq_ops_reference_check_passes_on_the_committed_files(capsys):
    from ops import cli  # imports the bench and drills (torch): only here

    assert cli.main(["reference", "--check"]) == 0
    assert "drifted" not in capsys.readouterr().out
