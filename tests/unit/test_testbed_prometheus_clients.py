"""The test bed's Prometheus also scrapes host processes listed in a file (load generators)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lipsync_testbed.prometheus import CLIENT_JOB, POD_JOB, client_targets, scrape_config

pytestmark = pytest.mark.unit


def test_client_targets_come_from_a_file_and_keep_their_labels(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    config = scrape_config(tmp_path / "kubeconfig", clients_file=clients)
    pods, job = config["scrape_configs"]
    assert pods["job_name"] == POD_JOB
    assert job["job_name"] == CLIENT_JOB
    assert job["honor_labels"] is True  # a client's namespace label is the model's
    assert job["file_sd_configs"] == [{"files": [str(clients)], "refresh_interval": "1s"}]
    assert json.loads(client_targets(["127.0.0.1:9464"])) == [{"targets": ["127.0.0.1:9464"]}]
    assert json.loads(client_targets([])) == []
    assert len(scrape_config(tmp_path / "kubeconfig")["scrape_configs"]) == 1
