"""quiver and the real Feast 0.67, both directions, through their public entry points.

- Feast reads what `quiver apply` wrote: FeatureStore(repo).list_*() report the same objects
  that `quiver list --json` reports, and the same that Feast itself reports for the Python
  twin of the repo (compat/feast_repo).
- quiver reads what `feast apply` wrote: `quiver list --json` equals Feast's own listing.
- `quiver apply` over a registry Feast wrote changes nothing and keeps the on-demand view,
  which Feast still loads afterwards.

Run by .ci/run with the venv from compat/setup-venv.sh:
    QUIVER_BIN=target/debug/quiver $VENV/bin/python -m pytest compat/tests
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "compat"))

import feast_summary  # noqa: E402
from quickstart_data import write_quickstart_parquet  # noqa: E402

QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver"))
FEAST_CLI = Path(sys.executable).parent / "feast"
EXPECTED = json.loads((ROOT / "registry-sync/tests/fixtures/feast_quickstart_expected.json").read_text())


def quiver(*args: str, cwd: Path = ROOT) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FEATURE_STORE_YAML_BASE64"}
    done = subprocess.run([str(QUIVER), *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"quiver {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def quiver_listing(repo: Path) -> dict:
    return json.loads(quiver("list", "--repo", str(repo), "--json"))


def without_odfvs(summary: dict) -> dict:
    return {**summary, "on_demand_feature_views": []}


@pytest.fixture
def quiver_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples/quickstart", repo, ignore=shutil.ignore_patterns("registry.db", "online*.db"))
    write_quickstart_parquet(repo / "data")
    return repo


@pytest.fixture
def feast_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "feast_repo"
    shutil.copytree(ROOT / "compat/feast_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_quickstart_parquet(repo / "data")
    subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, check=True, capture_output=True)
    return repo


def test_feast_reads_the_registry_quiver_applied(quiver_repo: Path) -> None:
    out = quiver("apply", "--repo", str(quiver_repo))
    assert "Created feature view driver_hourly_stats" in out
    feast_view = feast_summary.summarize(str(quiver_repo))
    assert feast_view == quiver_listing(quiver_repo)
    # And it is what Feast reports for the Python twin of the same repo.
    assert feast_view == without_odfvs(EXPECTED)


def test_feast_reads_every_example_quiver_applied(tmp_path: Path) -> None:
    """Each example repo (split files, Redis config, Set/Map/Json dtypes, bytes keys, join key
    maps) reads back through Feast's SDK exactly as quiver lists it."""
    examples = sorted(p for p in (ROOT / "examples").iterdir() if (p / "feature_store.yaml").exists())
    assert len(examples) >= 2
    for example in examples:
        repo = tmp_path / example.name
        shutil.copytree(example, repo, ignore=shutil.ignore_patterns("*.db"))
        # The fraud example's merchant source is in S3: a bucket the operator allows.
        quiver("apply", "--repo", str(repo), "--allow-location", "s3://fraud-data")
        assert feast_summary.summarize(str(repo)) == quiver_listing(repo), example.name


def test_feast_serves_definitions_quiver_applied(quiver_repo: Path) -> None:
    """Beyond listing: Feast resolves quiver's feature service into feature references."""
    from feast import FeatureStore

    quiver("apply", "--repo", str(quiver_repo))
    store = FeatureStore(repo_path=str(quiver_repo))
    service = store.get_feature_service("ride_scoring")
    refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
    assert refs == [
        "driver_hourly_stats:conv_rate",
        "driver_hourly_stats:acc_rate",
        "driver_hourly_stats:avg_daily_trips",
        "driver_hourly_stats:recent_zones",
        "driver_customer_affinity:rides_together",
        "fresh:conv_rate",
    ]
    view = store.get_feature_view("driver_hourly_stats_fresh")
    assert type(view.stream_source).__name__ == "PushSource"
    assert view.batch_source.path == "data/driver_stats.parquet"


def test_quiver_reads_the_registry_feast_applied(feast_repo: Path) -> None:
    assert quiver_listing(feast_repo) == feast_summary.summarize(str(feast_repo))


def test_quiver_apply_over_feast_registry_keeps_it_whole(feast_repo: Path) -> None:
    registry = feast_repo / "data" / "registry.db"
    before = registry.read_bytes()
    # The YAML twin of the Python repo, applied to the registry Feast wrote.
    shutil.copy(ROOT / "examples/quickstart/features.yaml", feast_repo / "features.yaml")
    out = quiver("apply", "--repo", str(feast_repo))
    assert "No changes" in out, out
    assert "Kept on-demand feature view ride_features" in out
    assert registry.read_bytes() == before

    # A real change: Feast sees it, and still loads the on-demand view quiver kept.
    yaml = (feast_repo / "features.yaml").read_text().replace("ttl: 7d", "ttl: 3d")
    (feast_repo / "features.yaml").write_text(yaml)
    out = quiver("apply", "--repo", str(feast_repo))
    assert "Updated feature view driver_customer_affinity" in out
    summary = feast_summary.summarize(str(feast_repo))
    affinity = next(v for v in summary["feature_views"] if v["name"] == "driver_customer_affinity")
    assert affinity["ttl_seconds"] == 3 * 86400
    assert summary["on_demand_feature_views"] == ["ride_features"]
