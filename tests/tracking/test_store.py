"""One value for a place: what a tracking URI and a --storage flag name."""

from __future__ import annotations

import pytest

from study.places import Storage, is_cloud, local_path
from tracking.store import PlaceError, TrackingStore


@pytest.mark.parametrize(
    ("uri", "server", "local"),
    [
        ("http://127.0.0.1:5000", True, None),
        ("https://mlflow.example.org", True, None),
        ("sqlite:////data/mlflow.db", False, "/data/mlflow.db"),
        ("file:///data/mlruns", False, "/data/mlruns"),
        ("/data/mlruns", False, "/data/mlruns"),
        ("databricks", False, "databricks"),
    ],
)
def test_a_tracking_uri_is_one_kind_of_store(uri, server, local):
    store = TrackingStore(uri)
    assert store.is_server is server
    assert (None if store.local_path is None else str(store.local_path)) == local
    assert store.is_local is (local is not None)
    line = store.ui_line()
    assert line == (
        f"open the MLflow UI at: {uri}"
        if server
        else f"open the MLflow UI with: mlflow ui --backend-store-uri {uri}"
    )


def test_a_local_store_says_where_its_artifacts_go_and_whether_its_file_exists(tmp_path):
    database = tmp_path / "mlflow.db"
    store = TrackingStore(f"sqlite:///{database}")
    assert store.artifact_root(tmp_path / "work") == tmp_path / "mlruns"
    assert store.missing_file() == database
    database.touch()
    assert store.missing_file() is None
    assert TrackingStore("file:///x/mlruns").artifact_root(tmp_path) == tmp_path / "mlruns"
    assert TrackingStore("http://host:5000").artifact_root(tmp_path) is None
    assert TrackingStore("http://host:5000").missing_file() is None


def test_a_store_under_a_file_and_a_server_that_does_not_answer_are_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PlaceError, match="--tracking-uri: .* cannot be a folder: .* is a file"):
        TrackingStore(f"sqlite:///{blocker}/sub/mlflow.db").check()
    with pytest.raises(PlaceError, match="no MLflow tracking server answers there"):
        TrackingStore("http://127.0.0.1:9").check(timeout=2)
    TrackingStore(f"sqlite:///{tmp_path}/new/mlflow.db").check()  # a folder it may make


def test_storage_is_a_folder_or_a_cloud_uri_with_the_results_on_the_driver(tmp_path):
    assert Storage.from_flag(None, tmp_path) == Storage(tmp_path / "ray_results")
    assert Storage.from_flag("s3://bucket/ray", tmp_path) == Storage(
        tmp_path / "ray_results", "s3://bucket/ray"
    )
    assert Storage.from_flag(f"file://{tmp_path}/shared", tmp_path).results == tmp_path / "shared"
    assert is_cloud("gs://b/x") and not is_cloud(f"file://{tmp_path}") and not is_cloud("/x")
    assert local_path(f"file://{tmp_path}/a") == tmp_path / "a"
    (tmp_path / "f").write_text("")
    with pytest.raises(PlaceError, match="--storage: .* is a file"):
        Storage(tmp_path / "f" / "results").check()


def test_a_new_sqlite_store_appears_whole(tmp_path):
    """Made beside its name and linked into place: a kill during MLflow's migrations can
    never leave a half-made store under the study's name."""
    from mlflow.tracking import MlflowClient

    path = tmp_path / "stores" / "mlflow.db"
    store = TrackingStore(f"sqlite:///{path}")
    store.create_whole()
    assert sorted(p.name for p in path.parent.iterdir()) == ["mlflow.db"]  # no building file
    experiments = MlflowClient(store.uri).search_experiments()
    assert [e.name for e in experiments] == ["Default"]
    MlflowClient(store.uri).create_experiment("kept")
    store.create_whole()  # an existing store is left as it is
    assert {e.name for e in MlflowClient(store.uri).search_experiments()} == {"Default", "kept"}
