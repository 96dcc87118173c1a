"""The Ray engine on a cluster of two nodes (ray.cluster_utils.Cluster: two raylets on this machine, one CPU
each), joined by --ray-address as a real cluster is: each video runs on one of the nodes, both nodes work,
and the files are the local engine's. Skipped without Ray."""
from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray", reason='needs Ray: pip install ".[ray]"')
pytest.importorskip("ray.data")
from ray.cluster_utils import Cluster  # noqa: E402

from test_local import corpus, folder_files, manifest, serial, spot  # noqa: E402,F401  (shared fixtures)


@pytest.fixture(scope="module")
def two_nodes():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, object_store_memory=128 << 20,
                                                                 include_dashboard=False))
    cluster.add_node(num_cpus=1, object_store_memory=128 << 20)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_ray_on_two_nodes_writes_what_the_local_engine_writes(corpus, serial, two_nodes, tmp_path):
    assert not ray.is_initialized()  # the engine joins the cluster itself, by its address
    out = tmp_path / "out"
    assert spot(corpus, out, "--engine", "ray", "--ray-address", two_nodes.address, "--workers", 2,
                "--threads", 1) == 0
    assert len(ray.nodes()) == 2
    for i in range(3):
        assert folder_files(out / f"v{i}") == folder_files(serial / f"v{i}"), i
    rows = manifest(out)
    assert sorted((r["video"], r["status"]) for r in rows) == [("v0", "done"), ("v1", "done"), ("v2", "done")]
    # Two actors of one CPU on two nodes of one CPU: one actor per node, so both nodes spot videos.
    assert len({r["node"] for r in rows}) == 2
