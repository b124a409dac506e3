#!/usr/bin/env python3
"""Print what the real Feast SDK reports about a feature repo's registry, as JSON.

Usage (with the Python of a venv that has feast==0.67.0, see compat/setup-venv.sh):

    $VENV/bin/python compat/feast_summary.py REPO_DIR

REPO_DIR is any folder with a feature_store.yaml that `FeatureStore(repo_path=...)`
can open (its registry must already exist, e.g. after `feast apply`). The output
is a stable, sorted JSON document that CI compares with what quiver reports for
the same registry. Every value comes from Feast's own objects (list_entities(),
list_data_sources(), list_feature_views(), list_stream_feature_views(),
list_feature_services(), list_on_demand_feature_views(), list_label_views()); dtype strings are
Feast's own str() of the type ("Float32", "Array(Int32)", "UnixTimestamp").

Shape (every top-level list sorted by name):

    {"project", "entities": [{name, join_key, value_type, description, tags}],
     "data_sources": [{name, type, path, timestamp_field, created_timestamp_column,
                       field_mapping, batch_source, schema}],
     "feature_views": [{name, entities, ttl_seconds, online, source, batch_source,
                        stream_source, tags, description, features, entity_columns}],
     "stream_feature_views": [same shape as feature_views],
     "label_views": [feature_views' shape + labeler_field, conflict_policy,
                     reference_feature_view],
     "feature_services": [{name, description, tags,
                           projections: [{feature_view, alias, features, join_key_map}]}],
     "on_demand_feature_views": [names]}

For a feature view, "batch_source" and "stream_source" are the names of the
sources exactly as the registry proto holds them; "source" is the source the
user declared (the stream/push source when there is one, else the batch source).

This module is also imported by compat/generate_fixtures.py (summarize()).
"""

import json
import sys
from typing import Any, Dict, List, Optional

from feast import FeatureStore
from feast.data_source import DataSource, PushSource, RequestSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.file_source import FileSource


def _by_name(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return sorted(items, key=lambda item: item["name"])


def _source_type(source: DataSource) -> str:
    if isinstance(source, FileSource):
        return "file"
    if isinstance(source, RequestSource):
        return "request"
    if isinstance(source, PushSource):
        return "push"
    return type(source).__name__


def _fields(fields) -> List[Dict[str, str]]:
    return [{"name": f.name, "dtype": str(f.dtype)} for f in fields]


def _source_name(source: Optional[DataSource]) -> Optional[str]:
    return source.name if source is not None else None


def _entity(entity) -> Dict[str, Any]:
    return {
        "name": entity.name,
        "join_key": entity.join_key,
        "value_type": entity.value_type.name,
        "description": entity.description,
        "tags": dict(entity.tags),
    }


def _data_source(source: DataSource) -> Dict[str, Any]:
    summary: Dict[str, Any] = {
        "name": source.name,
        "type": _source_type(source),
        "path": source.path if isinstance(source, FileSource) else None,
        "timestamp_field": source.timestamp_field,
        "created_timestamp_column": source.created_timestamp_column,
        "field_mapping": dict(source.field_mapping),
        "batch_source": (
            _source_name(source.batch_source) if isinstance(source, PushSource) else None
        ),
        "schema": _fields(source.schema) if isinstance(source, RequestSource) else None,
    }
    return summary


def _feature_view(fv: FeatureView) -> Dict[str, Any]:
    ttl = fv.ttl.total_seconds() if fv.ttl is not None else 0
    batch_source = _source_name(fv.batch_source)
    stream_source = _source_name(getattr(fv, "stream_source", None))
    return {
        "name": fv.name,
        "entities": list(fv.entities),
        "ttl_seconds": int(ttl) if float(ttl).is_integer() else ttl,
        "online": fv.online,
        "source": stream_source or batch_source,
        "batch_source": batch_source,
        "stream_source": stream_source,
        "tags": dict(fv.tags),
        "description": fv.description,
        "features": _fields(fv.features),
        "entity_columns": _fields(fv.entity_columns),
    }


def _label_view(lv) -> Dict[str, Any]:
    summary = _feature_view(lv)
    summary["labeler_field"] = lv.labeler_field
    summary["conflict_policy"] = lv.conflict_policy.value
    summary["reference_feature_view"] = lv.reference_feature_view or None
    return summary


def _feature_service(service) -> Dict[str, Any]:
    return {
        "name": service.name,
        "description": service.description,
        "tags": dict(service.tags),
        "projections": [
            {
                "feature_view": projection.name,
                "alias": projection.name_alias or None,
                "features": [f.name for f in projection.features],
                "join_key_map": dict(projection.join_key_map),
            }
            for projection in service.feature_view_projections
        ],
    }


def summarize(repo_dir: str) -> Dict[str, Any]:
    """Return the summary dict of the registry of the repo at repo_dir."""
    store = FeatureStore(repo_path=repo_dir)
    return {
        "project": store.project,
        "entities": _by_name([_entity(e) for e in store.list_entities()]),
        "data_sources": _by_name([_data_source(s) for s in store.list_data_sources()]),
        "feature_views": _by_name([_feature_view(v) for v in store.list_feature_views()]),
        "stream_feature_views": _by_name(
            [_feature_view(v) for v in store.list_stream_feature_views()]
        ),
        "label_views": _by_name([_label_view(v) for v in store.list_label_views()]),
        "feature_services": _by_name(
            [_feature_service(s) for s in store.list_feature_services()]
        ),
        "on_demand_feature_views": sorted(
            v.name for v in store.list_on_demand_feature_views()
        ),
    }


def to_json(summary: Dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} REPO_DIR", file=sys.stderr)
        return 2
    sys.stdout.write(to_json(summarize(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
